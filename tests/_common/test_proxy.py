"""
Tests for L{netservices._common.proxy}.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import Logger, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netservices._common.limits import ConnectionLimits, LimitingFactory
from netservices._common.listen import parseStreamDescription
from netservices._common.logs import RefusalLog
from netservices._common.proxy import (
    ProxyHeaderEndpoint,
    ProxyHeaderFactory,
    isProxied,
    transportChain,
)
from netservices.testing import RecordingFactory, RecordingProtocol

#: The load balancer, as the listening socket sees it.
BALANCER = IPv4Address("TCP", "10.0.0.1", 33333)
#: Our socket, as the listening socket sees it.
LOCAL = IPv4Address("TCP", "10.0.0.2", 7007)

V1_HEADER = b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 7007\r\n"
V1_SOURCE = IPv4Address("TCP", "203.0.113.7", 40000)
V1_DESTINATION = IPv4Address("TCP", "192.0.2.1", 7007)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2Header(
    familyProtocol: int,
    source: str,
    destination: str,
    sourcePort: int,
    destinationPort: int,
    versionCommand: int = 0x21,
    extra: bytes = b"",
) -> bytes:
    """
    Build a PROXY v2 header by hand.

    @param familyProtocol: C{0x11} for TCP over IPv4, C{0x21} for TCP over
        IPv6.
    @param versionCommand: C{0x21}: version 2, PROXY; C{0x20}: version 2,
        LOCAL.
    @param extra: bytes after the addresses (TLVs), counted in the length.
    """
    family = socket.AF_INET if familyProtocol >> 4 == 1 else socket.AF_INET6
    body = (
        socket.inet_pton(family, source)
        + socket.inet_pton(family, destination)
        + struct.pack("!HH", sourcePort, destinationPort)
        + extra
    )
    return (
        V2_SIGNATURE
        + bytes([versionCommand, familyProtocol])
        + struct.pack("!H", len(body))
        + body
    )


class Recorder(RecordingProtocol):
    """
    Also records whether the connection came through a PROXY header.
    """

    proxied = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.proxied = isProxied(self.transport)


class RecorderFactory(RecordingFactory):
    """
    Builds L{Recorder}s and keeps them.
    """

    protocol = Recorder


class ProxyHeaderTests(SynchronousTestCase):
    """
    L{ProxyHeaderFactory} and L{ProxyHeaderWrapper} over
    L{StringTransport}s, with a L{Clock}.
    """

    def setUp(self):
        self.clock = Clock()
        self.wrapped = RecorderFactory()
        self.factory = ProxyHeaderFactory(self.wrapped, self.clock, headerTimeout=10.0)

    def connect(self, factory=None, peer=BALANCER):
        """
        Connect a new wrapper, as from the load balancer.

        @return: the wrapper and its transport.
        """
        factory = factory or self.factory
        transport = StringTransport(hostAddress=LOCAL, peerAddress=peer)
        protocol = factory.buildProtocol(peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def assertRefused(self, *chunks: bytes, reason: str) -> StringTransport:
        """
        Assert that a connection sending C{chunks} is aborted and logged with
        C{reason}, without the wrapped protocol ever being connected.
        """
        with capturedLogs() as events:
            protocol, transport = self.connect()
            for chunk in chunks:
                protocol.dataReceived(chunk)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.wrapped.built[-1].made, 0)
        self.assertEqual(transport.value(), b"")
        [event] = [e for e in events if e.get("reason") == reason]
        self.assertEqual(event["peer"], "10.0.0.1:33333")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.wrapped.built[-1].lost, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        return transport

    def test_v1(self):
        """
        After a v1 header, the wrapped protocol is connected, and already in
        C{connectionMade} sees the client as its peer and the header's
        destination as its host.
        """
        protocol, transport = self.connect()
        self.assertEqual(self.wrapped.built[0].made, 0)
        protocol.dataReceived(V1_HEADER)
        recorder = self.wrapped.built[0]
        self.assertEqual(recorder.made, 1)
        self.assertEqual(recorder.peer, V1_SOURCE)
        self.assertEqual(recorder.host, V1_DESTINATION)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_v1OneByteAtATime(self):
        """
        A v1 header may arrive one byte at a time, and so may what follows.
        """
        protocol, transport = self.connect()
        recorder = self.wrapped.built[0]
        for i, byte in enumerate(V1_HEADER + b"hi"):
            self.assertEqual(recorder.made, int(i >= len(V1_HEADER)))
            protocol.dataReceived(bytes([byte]))
        self.assertEqual(recorder.peer, V1_SOURCE)
        self.assertEqual(recorder.host, V1_DESTINATION)
        self.assertEqual(recorder.received, b"hi")
        self.assertFalse(transport.disconnecting)

    def test_dataAfterHeader(self):
        """
        Bytes after the header, in the same chunk, reach the wrapped
        protocol after its C{connectionMade}; later chunks follow.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(V1_HEADER + b"hello ")
        protocol.dataReceived(b"world")
        recorder = self.wrapped.built[0]
        self.assertEqual(recorder.made, 1)
        self.assertEqual(recorder.received, b"hello world")

    def test_v1IPv6(self):
        """
        A v1 C{TCP6} header gives IPv6 addresses.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 7007\r\n")
        recorder = self.wrapped.built[0]
        self.assertEqual(recorder.peer, IPv6Address("TCP", "2001:db8::7", 40000))
        self.assertEqual(recorder.host, IPv6Address("TCP", "2001:db8::1", 7007))

    def test_v1Unknown(self):
        """
        The bare C{PROXY UNKNOWN} line (15 bytes, what HAProxy sends when it
        does not know the addresses) is accepted: the wrapped protocol is
        connected and sees the real socket's addresses.
        """
        header = b"PROXY UNKNOWN\r\n"
        self.assertEqual(len(header), 15)
        protocol, transport = self.connect()
        protocol.dataReceived(header + b"x")
        recorder = self.wrapped.built[0]
        self.assertEqual(recorder.made, 1)
        self.assertEqual(recorder.peer, BALANCER)
        self.assertEqual(recorder.host, LOCAL)
        self.assertEqual(recorder.received, b"x")
        self.assertFalse(transport.disconnecting)

    def test_v1UnknownWithAddresses(self):
        """
        C{PROXY UNKNOWN} followed by anything is accepted too.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")
        recorder = self.wrapped.built[0]
        self.assertEqual((recorder.made, recorder.peer), (1, BALANCER))

    def test_v2IPv4(self):
        """
        A v2 header for TCP over IPv4 gives the client and destination.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(v2Header(0x11, "203.0.113.7", "192.0.2.1", 40000, 7007))
        recorder = self.wrapped.built[0]
        self.assertEqual(recorder.made, 1)
        self.assertEqual(recorder.peer, V1_SOURCE)
        self.assertEqual(recorder.host, V1_DESTINATION)

    def test_v2OneByteAtATime(self):
        """
        A v2 header, with TLVs after the addresses, may arrive one byte at a
        time; what follows it is data.
        """
        header = v2Header(
            0x11, "203.0.113.7", "192.0.2.1", 40000, 7007, extra=b"\x04\x00\x01z"
        )
        protocol, transport = self.connect()
        recorder = self.wrapped.built[0]
        for i, byte in enumerate(header + b"hi"):
            self.assertEqual(recorder.made, int(i >= len(header)))
            protocol.dataReceived(bytes([byte]))
        self.assertEqual(recorder.peer, V1_SOURCE)
        self.assertEqual(recorder.received, b"hi")
        self.assertFalse(transport.disconnecting)

    def test_v2IPv6(self):
        """
        A v2 header for TCP over IPv6 (family and protocol C{0x21}) gives
        IPv6 addresses.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(
            v2Header(0x21, "2001:db8::7", "2001:db8::1", 40000, 7007) + b"data"
        )
        recorder = self.wrapped.built[0]
        self.assertIsInstance(recorder.peer, IPv6Address)
        self.assertEqual(
            ipaddress.ip_address(recorder.peer.host), ipaddress.ip_address("2001:db8::7")
        )
        self.assertEqual(recorder.peer.port, 40000)
        self.assertIsInstance(recorder.host, IPv6Address)
        self.assertEqual(
            ipaddress.ip_address(recorder.host.host), ipaddress.ip_address("2001:db8::1")
        )
        self.assertEqual(recorder.host.port, 7007)
        self.assertEqual(recorder.received, b"data")

    def test_v2Local(self):
        """
        A v2 LOCAL header (a health check) connects the wrapped protocol
        with the real socket's addresses.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(V2_SIGNATURE + b"\x20\x00\x00\x00")
        recorder = self.wrapped.built[0]
        self.assertEqual((recorder.made, recorder.peer), (1, BALANCER))

    def test_garbage(self):
        """
        A connection that starts with anything but a PROXY header is aborted
        at once, and the wrapped protocol is never connected.
        """
        self.assertRefused(b"GET / HTTP/1.0\r\n", reason="no PROXY header")

    def test_garbageByteByByte(self):
        """
        Garbage is recognised as soon as it cannot be the start of a header.
        """
        self.assertRefused(b"P", b"R", b"O", b"X", b"Z", reason="no PROXY header")

    def test_v1Malformed(self):
        """
        v1 headers with missing addresses, an unknown protocol, ports that
        are not numbers, or no end within 107 bytes are aborted as invalid.
        """
        for header in [
            b"PROXY TCP4 203.0.113.7\r\n",
            b"PROXY UDP4 203.0.113.7 192.0.2.1 40000 7007\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 http 7007\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 \r\n",
            b"PROXY " + b"1" * 102,
        ]:
            self.assertRefused(header, reason="invalid PROXY header")

    def test_v1BadAddresses(self):
        """
        v1 headers whose addresses are not IP addresses of the stated family,
        or whose ports are out of range, are aborted as invalid: the service
        would otherwise report them as the client's address.
        """
        for header in [
            b"PROXY TCP4 example.com 192.0.2.1 40000 7007\r\n",
            b"PROXY TCP4 2001:db8::7 192.0.2.1 40000 7007\r\n",
            b"PROXY TCP6 203.0.113.7 2001:db8::1 40000 7007\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 70000 7007\r\n",
            b"PROXY TCP4 203.0.113.7 192.0.2.1 40000 99999\r\n",
        ]:
            self.assertRefused(header, reason="invalid PROXY header")

    def test_v2BadVersion(self):
        """
        A v2 signature with another version is aborted as invalid.
        """
        self.assertRefused(
            V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),
            reason="invalid PROXY header",
        )

    def test_v2ShortAddresses(self):
        """
        A v2 header whose length leaves no room for the addresses is
        aborted as invalid.
        """
        self.assertRefused(
            V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),
            reason="invalid PROXY header",
        )

    def test_timeout(self):
        """
        A connection that sends no header within C{headerTimeout} seconds is
        aborted.
        """
        with capturedLogs() as events:
            protocol, transport = self.connect()
            self.clock.advance(9.5)
            self.assertFalse(transport.disconnecting)
            self.clock.advance(0.5)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.wrapped.built[0].made, 0)
        self.assertEqual(
            [e["reason"] for e in events if "reason" in e], ["PROXY header timeout"]
        )

    def test_refusedOnce(self):
        """
        A connection refused for a bad header is refused once: its header
        timeout does not fire later and count it again, even before the
        transport reports the connection lost.
        """
        events = EventLoggingObserver()
        refusals = RefusalLog(Logger(observer=events), self.clock, "connection")
        limiting = LimitingFactory(
            RecorderFactory(), ConnectionLimits(), self.clock, refusals
        )
        protocol, transport = self.connect(ProxyHeaderFactory(limiting, self.clock))
        protocol.dataReceived(b"GET / HTTP/1.0\r\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(3600)
        self.assertEqual(refusals.counts, {"no PROXY header": 1})
        self.assertEqual(len(events), 1)

    def test_timeoutPartialHeader(self):
        """
        A header that starts but never ends is aborted after
        C{headerTimeout} seconds too.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(V1_HEADER[:-1])
        self.clock.advance(10.0)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.wrapped.built[0].made, 0)

    def test_lostBeforeHeader(self):
        """
        A connection lost before its header cancels the timeout and never
        reaches the wrapped protocol.
        """
        protocol, _ = self.connect()
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        recorder = self.wrapped.built[0]
        self.assertEqual((recorder.made, recorder.lost), (0, []))
        self.assertEqual(self.factory.protocols, {})

    def test_lostAfterHeader(self):
        """
        A connection lost after its header is reported to the wrapped
        protocol.
        """
        protocol, _ = self.connect()
        protocol.dataReceived(V1_HEADER)
        reason = Failure(ConnectionDone())
        protocol.connectionLost(reason)
        self.assertEqual(self.wrapped.built[0].lost, [reason])
        self.assertEqual(self.factory.protocols, {})

    def test_refusalsOfWrappedFactory(self):
        """
        A bad header is counted in the wrapped factory's refusal log, when
        it has one.
        """
        events = EventLoggingObserver()
        refusals = RefusalLog(Logger(observer=events), self.clock, "connection")
        limiting = LimitingFactory(
            RecorderFactory(), ConnectionLimits(), self.clock, refusals
        )
        protocol, transport = self.connect(ProxyHeaderFactory(limiting, self.clock))
        protocol.dataReceived(b"\x16\x03\x01")
        self.assertTrue(transport.disconnected)
        self.assertEqual(refusals.counts, {"no PROXY header": 1})
        self.assertEqual(events[0]["peer"], "10.0.0.1:33333")

    def test_limitsApplyToClient(self):
        """
        Behind the header, connection limits count the client from the
        header, not the load balancer.
        """
        limiting = LimitingFactory(
            RecorderFactory(), ConnectionLimits(maxPerPeer=1), self.clock
        )
        factory = ProxyHeaderFactory(limiting, self.clock)
        transports = []
        for client in ["203.0.113.7", "203.0.113.8", "203.0.113.7"]:
            protocol, transport = self.connect(factory)
            protocol.dataReceived(
                f"PROXY TCP4 {client} 192.0.2.1 40000 7007\r\n".encode("ascii")
            )
            transports.append(transport)
        self.assertEqual([t.disconnecting for t in transports], [False, False, True])
        self.assertEqual(limiting.perPeer, {"203.0.113.7/32": 1, "203.0.113.8/32": 1})
        self.assertTrue(limiting.wrappedFactory.built[0].proxied)

    def test_isProxied(self):
        """
        L{isProxied} is true for a transport that came through a PROXY
        header, false for a plain one.
        """
        protocol, transport = self.connect()
        protocol.dataReceived(V1_HEADER)
        self.assertTrue(self.wrapped.built[0].proxied)
        self.assertTrue(isProxied(protocol))
        self.assertFalse(isProxied(transport))
        self.assertFalse(isProxied(StringTransport()))
        self.assertEqual(list(transportChain(protocol)), [protocol, transport])


class Peer(Protocol):
    """
    A server protocol that records its peer when connected, then closes.
    """

    def connectionMade(self) -> None:
        self.factory.peers.callback(self.transport.getPeer())
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self.factory.lost.callback(None)


class Client(Protocol):
    """
    Send a PROXY header, then wait for the server to close.
    """

    def __init__(self, header: bytes) -> None:
        self.header = header
        self.lost: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.header)

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(None)


class LoopbackTests(TestCase):
    """
    C{haproxy:} listeners over real loopback sockets.
    """

    def test_haproxyListener(self):
        """
        A C{haproxy:tcp:} listener's protocol sees the client address from
        the v1 header in C{connectionMade}.
        """
        endpoint = parseStreamDescription(reactor, "haproxy:tcp:0:interface=127.0.0.1")
        self.assertIsInstance(endpoint, ProxyHeaderEndpoint)
        factory = Factory.forProtocol(Peer)
        factory.peers = Deferred()
        factory.lost = Deferred()
        client = Client(V1_HEADER)

        def listening(port):
            self.addCleanup(port.stopListening)
            host = port.getHost()
            return connectProtocol(
                TCP4ClientEndpoint(reactor, host.host, host.port), client
            )

        def connected(_):
            return gatherResults([factory.peers, factory.lost, client.lost])

        def check(results):
            self.assertEqual(results[0], V1_SOURCE)

        d = endpoint.listen(factory)
        d.addCallback(listening)
        d.addCallback(connected)
        return d.addCallback(check)
