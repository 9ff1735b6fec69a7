# -*- test-case-name: tests.info.test_tcp -*-
"""
tcp-info: on each connection, log who connected and tell them, then close.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
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


def _hostAndPort(address) -> tuple[str, int]:
    """
    @return: the host and port of an IP address; for a UNIX socket its path
        (spaces escaped, since the text answer splits on them) and 0.
    """
    if isinstance(address, (IPv4Address, IPv6Address)):
        return address.host, address.port
    name = getattr(address, "name", None) or b""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return name.replace("%", "%25").replace(" ", "%20"), 0


def sightingOf(transport, kind: str = "tcp") -> Sighting:
    """
    @return: what C{transport} shows of its connection.
    """
    return sightingFrom(
        kind, transport.getPeer(), transport.getHost(), isTLS(transport), isProxied(transport)
    )


def sightingFrom(kind: str, peer, host, tls: bool, proxy: bool) -> Sighting:
    """
    @return: a sighting of a client at C{peer} reaching C{host}; over a UNIX
        socket (C{kind} C{unix} for a plain connection), the socket's path is
        the local address.
    """
    if isinstance(peer, UNIXAddress) and kind == "tcp":
        kind = "unix"
    ip, port = _hostAndPort(peer)
    localIP, localPort = _hostAndPort(host)
    return Sighting(
        transport=kind,
        ip=ip,
        port=port,
        localIP=localIP,
        localPort=localPort,
        tls=tls,
        proxy=proxy,
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
