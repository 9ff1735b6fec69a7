# -*- test-case-name: tests.echo.test_tcp -*-
"""
tcp-echo: every byte back, in order, with back-pressure.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from netservices._common.eager import setNoDelay



@implementer(IPushProducer)
class TCPEchoProtocol(Protocol):
    """
    Echoes what it receives.  It is the producer of its own transport: when
    the peer does not read and the write buffer fills, the transport pauses
    it, and it stops reading from the peer, so the server never buffers more
    than about two reads per connection; TCP flow control then holds the
    sender.
    """

    factory: TCPEchoFactory

    def connectionMade(self) -> None:
        setNoDelay(self.transport)
        self.transport.registerProducer(self, True)
        self.factory.counts["connections"] += 1

    def dataReceived(self, data: bytes) -> None:
        self.factory.counts["bytes"] += len(data)
        self.transport.write(data)

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass


class TCPEchoFactory(Factory):
    """
    Makes L{TCPEchoProtocol}s and counts what they echo.

    @ivar counts: C{connections} served and C{bytes} echoed.
    """

    protocol = TCPEchoProtocol
    noisy = False

    def __init__(self, log: Logger | None = None) -> None:
        self.log = log or Logger(namespace="netservices.tcp-echo")
        self.counts = {"connections": 0, "bytes": 0}
