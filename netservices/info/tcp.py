# -*- test-case-name: tests.info.test_tcp -*-
"""
tcp-info: on each connection, log who connected and tell them, then close.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol

from netservices._common.proxy import isProxied, transportChain
from netservices.info.wire import Sighting, formatJSON, formatText


def isTLS(transport: object) -> bool:
    """
    @return: whether C{transport} (or one it wraps) is TLS.
    """
    return any(isinstance(t, TLSMemoryBIOProtocol) for t in transportChain(transport))


def sightingOf(transport, kind: str = "tcp") -> Sighting:
    """
    @return: what C{transport} shows of its connection.
    """
    peer, host = transport.getPeer(), transport.getHost()
    return Sighting(
        transport=kind,
        ip=peer.host,
        port=peer.port,
        localIP=host.host,
        localPort=host.port,
        tls=isTLS(transport),
        proxy=isProxied(transport),
    )


def logSighting(log: Logger, sighting: Sighting) -> None:
    """
    Log one sighting as a structured event.
    """
    log.info(
        "{transport} client {ip} port {port} reached {local_ip} port"
        " {local_port} (tls={tls}, proxy={proxy})",
        **sighting.asDict(),
    )


class TCPInfoProtocol(Protocol):
    """
    Answers with what it saw as soon as the connection is made (the
    listening layer makes sure the PROXY header, if any, has been read by
    then), and closes.
    """

    factory: TCPInfoFactory

    def connectionMade(self) -> None:
        sighting = sightingOf(self.transport)
        logSighting(self.factory.log, sighting)
        self.transport.write(self.factory.format(sighting))
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        # The client has nothing to say; whatever it sends is ignored.
        pass


class TCPInfoFactory(Factory):
    """
    Makes L{TCPInfoProtocol}s.

    @ivar format: turns a L{Sighting} into the answer's bytes.
    """

    protocol = TCPInfoProtocol
    noisy = False

    def __init__(self, wantJSON: bool = False, log: Logger | None = None) -> None:
        self.format = formatJSON if wantJSON else formatText
        self.log = log or Logger(namespace="netservices.tcp-info")
