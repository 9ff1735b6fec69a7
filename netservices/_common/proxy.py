# -*- test-case-name: tests._common.test_proxy -*-
"""
PROXY protocol (v1 and v2) in front of any stream service, with the real
client address known before the service sees the connection.

Twisted's C{haproxy:} wrapper connects the service at once, so in
C{connectionMade} C{getPeer()} is still the load balancer
(twisted/twisted#12501), and a service that answers on connect (tcp-info)
would answer with the wrong address.  L{ProxyHeaderWrapper} connects the
wrapped protocol only once the header has been parsed.

Twisted's C{haproxy:ssl:} expects the header I{inside} TLS, but HAProxy's
C{send-proxy} sends it in clear before the TLS handshake
(twisted/twisted#9041).  L{proxyThenTLSEndpoint} layers them the way
HAProxy does; C{--listen haproxy-ssl:...} selects it.
"""

from __future__ import annotations

from twisted.internet.address import IPv6Address
from twisted.internet.endpoints import TCP4ServerEndpoint, wrapServerTLS
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader, convertError
from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper
from twisted.protocols.policies import WrappingFactory
from zope.interface import directlyProvides, implementer, providedBy

from netservices._common.addresses import parseIP
from netservices._common.limits import peerDescription

log = Logger()

_V1_SIGNATURE = V1Parser.PROXYSTR + b" "
#: A v2 header's fixed part: signature, version and command, family, length.
_V2_MINIMUM = 16


class _V1Parser(V1Parser):
    """
    Twisted's v1 parser, but accepting the bare C{PROXY UNKNOWN} line that
    the specification allows (Twisted wants addresses after it), and
    refusing ports that are not numbers (Twisted raises L{ValueError}) and
    addresses that are not IP addresses of the stated family or ports out of
    range (Twisted passes them on).
    """

    @classmethod
    def parse(cls, line: bytes) -> ProxyInfo:
        if line == cls.PROXYSTR + b" " + cls.UNKNOWN_PROTO:
            return ProxyInfo(line, None, None)
        with convertError(ValueError, InvalidProxyHeader):
            info = super().parse(line)
        for address in (info.source, info.destination):
            if address is None:
                continue
            parsed = parseIP(address.host)
            version = 6 if isinstance(address, IPv6Address) else 4
            if parsed is None or parsed.version != version or not 0 <= address.port <= 65535:
                raise InvalidProxyHeader()
        return info


class ProxyHeaderWrapper(HAProxyProtocolWrapper):
    """
    Reads a PROXY header, then connects the wrapped protocol, whose
    C{getPeer()} and C{getHost()} are from then on the addresses the header
    gave.  A connection whose header is invalid or does not arrive within
    C{factory.headerTimeout} seconds is aborted and logged.
    """

    factory: ProxyHeaderFactory
    _timeoutCall: IDelayedCall | None = None
    _prefix = b""

    def makeConnection(self, transport):
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._timeoutCall = self.factory.clock.callLater(
            self.factory.headerTimeout, self._fail, "PROXY header timeout"
        )

    def dataReceived(self, data: bytes) -> None:
        if self._proxyInfo is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._parser is None:
            # The signature may arrive in pieces; Twisted's own wrapper drops
            # such connections.
            data, self._prefix = self._prefix + data, b""
            if data.startswith(_V1_SIGNATURE):
                self._parser = _V1Parser()
            elif data.startswith(V2Parser.PREFIX) and len(data) >= _V2_MINIMUM:
                if data[12] & 0xF0 != 0x20:
                    self._fail("invalid PROXY header")
                    return
                self._parser = V2Parser()
            elif _V1_SIGNATURE.startswith(data) or V2Parser.PREFIX.startswith(
                data[:12]
            ):
                self._prefix = data
                return
            else:
                self._fail("no PROXY header")
                return
        try:
            info, remaining = self._parser.feed(data)
        except InvalidProxyHeader:
            self._fail("invalid PROXY header")
            return
        if info is None:
            return
        self._proxyInfo = info
        self._cancelTimeout()
        self.wrappedProtocol.makeConnection(self)
        if remaining and self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(remaining)

    def connectionLost(self, reason):
        self._cancelTimeout()
        self.factory.unregisterProtocol(self)
        if self._proxyInfo is not None:
            self.wrappedProtocol.connectionLost(reason)
        self.wrappedProtocol = None

    def _cancelTimeout(self) -> None:
        if self._timeoutCall is not None and self._timeoutCall.active():
            self._timeoutCall.cancel()
        self._timeoutCall = None

    def _fail(self, reason: str) -> None:
        self._cancelTimeout()
        self.factory.refuse(reason, peerDescription(self.transport.getPeer()))
        self.transport.abortConnection()


class ProxyHeaderFactory(WrappingFactory):
    """
    Wraps a factory so that its protocols are connected after a PROXY
    header.
    """

    protocol = ProxyHeaderWrapper
    noisy = False

    def __init__(
        self, wrappedFactory: Factory, clock: IReactorTime, headerTimeout: float = 10.0
    ) -> None:
        super().__init__(wrappedFactory)
        self.clock = clock
        self.headerTimeout = headerTimeout

    def refuse(self, reason: str, peer: str) -> None:
        """
        Report a connection dropped for want of a valid header, through the
        wrapped factory's refusal log when it has one.
        """
        refusals = getattr(self.wrappedFactory, "refusals", None)
        if refusals is not None:
            refusals.refuse(reason, peer)
        else:
            log.warn("refused connection from {peer}: {reason}", peer=peer, reason=reason)


@implementer(IStreamServerEndpoint)
class ProxyHeaderEndpoint:
    """
    An endpoint whose connections start with a PROXY header.
    """

    def __init__(self, wrapped: IStreamServerEndpoint, clock: IReactorTime) -> None:
        self.wrapped = wrapped
        self.clock = clock

    def listen(self, factory: Factory):
        return self.wrapped.listen(ProxyHeaderFactory(factory, self.clock))


def proxyThenTLSEndpoint(reactor, sslEndpoint) -> IStreamServerEndpoint:
    """
    Listen where C{sslEndpoint} (parsed from an C{ssl:} description) would,
    reading a cleartext PROXY header before the TLS handshake.
    """
    # SSL4ServerEndpoint keeps its settings private; they are stable, and the
    # tests exercise this path, so a Twisted change shows up there.
    tcp = TCP4ServerEndpoint(
        reactor, sslEndpoint._port, sslEndpoint._backlog, sslEndpoint._interface
    )
    return wrapServerTLS(sslEndpoint._sslContextFactory, ProxyHeaderEndpoint(tcp, reactor))


def isProxied(transport: object) -> bool:
    """
    @return: whether C{transport} (or one it wraps) came through a PROXY
        header.
    """
    return any(isinstance(t, HAProxyProtocolWrapper) for t in transportChain(transport))


def transportChain(transport: object):
    """
    Yield C{transport} and each transport it wraps, outermost first.
    """
    seen = 0
    while transport is not None and seen < 16:
        yield transport
        seen += 1
        # vars(), not getattr: ProtocolWrapper forwards unknown attributes.
        transport = vars(transport).get("transport") if hasattr(transport, "__dict__") else None
