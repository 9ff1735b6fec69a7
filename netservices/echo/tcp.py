# -*- test-case-name: tests.echo.test_tcp -*-
"""
tcp-echo: every byte back, in order, with back-pressure.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from netservices._common.eager import PausesReading, setNoDelay



class TCPEchoProtocol(PausesReading, Protocol):
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
