"""
A namespace LAN for the multicast tests, and helpers that run our senders
and receivers on its hosts from this process (one reactor, sockets made
inside each host's namespace).
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import string

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from netservices.multicast.client import MulticastReceiver, MulticastSender
from netservices.testing import NetworkLab

_labs = itertools.count()

#: Why the lab tests cannot run here, or None.
NO_LAB = (
    "network namespaces need root and iproute2"
    if os.geteuid() != 0 or shutil.which("ip") is None
    else None
)


def newLab(hosts: int = 3) -> NetworkLab:
    """
    @return: a lab with a name unique to this process and run.
    """
    n = next(_labs)
    letters = string.ascii_lowercase
    name = f"mc{os.getpid()}{letters[n // 26 % 26]}{letters[n % 26]}"
    return NetworkLab(hosts, subnet="10.231.0", name=name, subnet6="fd31:231::", multicastRoutes=True)


class LabTestCase(TestCase):
    """
    Each test gets a fresh 3-host lab, removed afterwards.
    """

    skip = NO_LAB
    hosts = 3

    def setUp(self) -> None:
        self.lab = newLab(self.hosts)
        self.addCleanup(self.lab.remove)
        self.lab.create()

    def index(self, host: int, name: str = "eth0") -> int:
        """
        @return: the index of interface C{name} on host C{host}.
        """
        with self.lab.inside(host):
            return socket.if_nametoindex(name)

    def receive(self, host: int, groups, **kwargs):
        """
        Start a L{MulticastReceiver} on host C{host} (done within 10 s).

        @return: the receiver and the L{Deferred} of its end.
        """
        events: list[dict] = []
        kwargs.setdefault("duration", 10.0)
        receiver = MulticastReceiver(reactor, groups, events.append, **kwargs)
        receiver.events = events
        with self.lab.inside(host):
            done = receiver.start()
        self.addCleanup(lambda: done.called or done.cancel())
        return receiver, done

    def send(self, host: int, groups, count: int = 20, rate: float = 2000, **kwargs):
        """
        Start a L{MulticastSender} on host C{host} (bounded to 10 s).

        @return: the L{Deferred} of its summary.
        """
        sender = MulticastSender(reactor, groups, rate, count, kwargs.pop("duration", 10.0), **kwargs)
        with self.lab.inside(host):
            return sender.start()
