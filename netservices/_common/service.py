# -*- test-case-name: tests._common.test_listen -*-
"""
Small L{twisted.application} services shared by every sub-command.
"""

from typing import Callable

from twisted.application import service


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
