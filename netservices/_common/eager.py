# -*- test-case-name: tests._common.test_eager -*-
"""
TCP listening with eager writes.

Twisted's C{transport.write} never sends at once: it queues the data,
registers for writability, and sends on the next reactor round, which costs
two C{epoll_ctl} calls and a round trip per message.  For request/response
services such as echo that is most of the time spent per message (see
C{benchmarks/}).  L{EagerServer} sends at once when nothing is queued, and
falls back to Twisted's path for whatever the kernel does not take.  It is
our own transport class, used only by services that ask for it; Twisted
itself is left alone.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import defer, fdesc, tcp
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
)
from twisted.internet.interfaces import IPushProducer, IStreamServerEndpoint
from zope.interface import implementer


def setNoDelay(transport) -> None:
    """
    Turn on TCP_NODELAY if C{transport} is TCP: without it, the tail of a
    message waits for the peer's (delayed, ~40 ms) acknowledgement of the
    rest under Nagle's algorithm.
    """
    setTcpNoDelay = getattr(transport, "setTcpNoDelay", None)
    if setTcpNoDelay is not None:
        try:
            setTcpNoDelay(True)
        except OSError:
            pass


@implementer(IPushProducer)
class PausesReading:
    """
    A mixin for protocols that register themselves as their transport's
    streaming producer (C{transport.registerProducer(self, True)}): when
    the peer does not read and the write buffer fills, the transport pauses
    the protocol, which stops reading from the peer until the buffer has
    drained.  Memory per connection stays bounded, and TCP flow control
    holds the sender.
    """

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class EagerServer(tcp.Server):
    """
    A server-side TCP transport whose C{write} sends immediately when its
    buffer is empty.
    """

    def write(self, data: bytes) -> None:
        if (
            data
            and type(data) is bytes
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and not self._tempDataLen
            and self.offset == len(self.dataBuffer)
        ):
            try:
                sent = self.socket.send(data)
            except OSError:
                # Would block, or an error that Twisted's own write path
                # will meet and report the usual way.
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        super().write(data)


class EagerPort(tcp.Port):
    """
    A TCP listening port whose connections use L{EagerServer}.
    """

    transport = EagerServer


@implementer(IStreamServerEndpoint)
class EagerTCPServerEndpoint:
    """
    Listens like C{tcp:}/C{tcp6:} endpoints, with L{EagerPort}.
    """

    def __init__(self, reactor, port: int, backlog: int = 50, interface: str = "") -> None:
        self._reactor = reactor
        self._port = port
        self._backlog = backlog
        self._interface = interface

    def listen(self, factory):
        """
        Listen with C{factory}; fails like C{listenTCP} when the bind fails.
        """

        def start() -> EagerPort:
            port = EagerPort(
                self._port, factory, self._backlog, self._interface, self._reactor
            )
            port.startListening()
            return port

        return defer.execute(start)


@implementer(IStreamServerEndpoint)
class EagerAdoptedEndpoint:
    """
    Listens like an C{AdoptedStreamServerEndpoint} (C{systemd:}, or a
    socket inherited from a supervisor) on a TCP socket, with
    L{EagerPort}; the descriptor is closed once the port has its own copy.
    """

    def __init__(self, reactor, fileno: int, addressFamily: int) -> None:
        self._reactor = reactor
        self._fileno = fileno
        self._addressFamily = addressFamily

    def listen(self, factory):
        """
        Listen with C{factory} on the adopted socket.
        """

        def start() -> EagerPort:
            fdesc.setNonBlocking(self._fileno)
            port = EagerPort._fromListeningDescriptor(
                self._reactor, self._fileno, self._addressFamily, factory
            )
            port.startListening()
            os.close(self._fileno)
            return port

        return defer.execute(start)


def eagerEquivalent(reactor, endpoint):
    """
    @return: an eager-writing endpoint listening where C{endpoint} would, if
        C{endpoint} is a plain C{tcp:}/C{tcp6:} one or an adopted TCP socket
        (C{systemd:}); else C{endpoint}.
    """
    if type(endpoint) is AdoptedStreamServerEndpoint and endpoint.addressFamily in (
        socket.AF_INET,
        socket.AF_INET6,
    ):
        return EagerAdoptedEndpoint(reactor, endpoint.fileno, endpoint.addressFamily)
    if type(endpoint) in (TCP4ServerEndpoint, TCP6ServerEndpoint):
        # Their settings are private but stable; tests cover this path.
        return EagerTCPServerEndpoint(
            reactor, endpoint._port, endpoint._backlog, endpoint._interface
        )
    return endpoint
