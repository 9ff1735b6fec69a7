"""
twistd plugin for netservices.

Kept to a few lines on purpose: twistd silently drops a plugin module that fails to
import, so everything real is imported lazily by L{ServiceMaker} from
L{netservices.tap}.
"""

from twisted.application.service import ServiceMaker

netservices = ServiceMaker(
    "netservices",
    "netservices.tap",
    "Network services: info, echo and more (see 'twistd netservices --help').",
    "netservices",
)
