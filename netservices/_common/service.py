# -*- test-case-name: tests._common.test_service -*-
"""
The service trees the sub-commands are made of, built the same way for
every service: one listener per C{--listen}, connection limits or the UDP
policy shared by all of them, final counters logged on stop.
"""

from __future__ import annotations

from typing import Callable

from twisted.application import service
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.logger import Logger

from netservices._common.limits import LimitingFactory
from netservices._common.listen import DatagramListener, StreamListener
from netservices._common.logs import RefusalLog
from netservices._common.metrics import metricsOf, watchConnections, watchGuard
from netservices._common.udp import DatagramGuard


class CallOnStop(service.Service):
    """
    Calls a function when the service stops: services log their final
    counters this way.
    """

    def __init__(self, function: Callable[[], object]) -> None:
        self.function = function

    def stopService(self):
        super().stopService()
        self.function()


def addStreamListeners(
    parent: service.MultiService,
    descriptions: list[str],
    endpoints: list,
    factory: Factory,
    options,
    reactor,
    refusals: RefusalLog,
    refusalMessage: Callable[[str], bytes] = lambda reason: b"",
) -> LimitingFactory:
    """
    Listen with C{factory} on each endpoint, under the connection limits of
    C{options} (a L{netservices._common.listen.ConnectionLimitOptions}),
    with the connection metrics (L{netservices._common.metrics}).

    @return: the limiting factory shared by these listeners.
    """
    limited = LimitingFactory(
        factory, options.connectionLimits(), reactor, refusals, refusalMessage
    )
    for description, endpoint in zip(descriptions, endpoints):
        StreamListener(description, endpoint, limited, reactor).setServiceParent(parent)
    watchConnections(metricsOf(options), limited)
    return limited


def datagramService(
    options,
    reactor,
    log: Logger,
    makeProtocol: Callable[..., DatagramProtocol],
) -> service.MultiService:
    """
    Build a UDP service: one listener per C{--listen} of C{options} (a
    L{netservices._common.listen.DatagramListenOptions} with the
    L{netservices._common.udp.DatagramPolicyOptions}), all under one
    L{netservices._common.udp.DatagramGuard}; counters logged on stop and
    served as metrics.

    @param makeProtocol: called with the guard, makes one listener's
        protocol.
    """
    guard = DatagramGuard(options["rate-limits"], reactor, log)
    watchGuard(metricsOf(options), guard)
    top = service.MultiService()
    for description, address in zip(options["listen"], options["endpoints"]):
        DatagramListener(
            description, address, lambda: makeProtocol(guard), reactor, guard.ownPorts.add
        ).setServiceParent(top)

    def logTotals() -> None:
        log.info("datagrams received={received} answered={answered}", **guard.counts)
        guard.refusals.logTotals()

    CallOnStop(logTotals).setServiceParent(top)
    top.guard = guard
    return top
