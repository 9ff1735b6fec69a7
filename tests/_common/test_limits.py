"""
Tests for L{netservices._common.limits}.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from netservices._common.limits import (
    ConnectionLimits,
    LimitingFactory,
    LimitingProtocol,
    peerDescription,
    peerKey,
)
from netservices._common.logs import RefusalLog
from netservices.testing import RecordingFactory

SERVER = IPv4Address("TCP", "127.0.0.1", 7007)


def refusalMessage(reason: str) -> bytes:
    """
    @return: what a refused client is told, as tcp-info tells it.
    """
    return f"error: refused: {reason}\n".encode("ascii")


def closed() -> Failure:
    """
    @return: the reason of a connection closed cleanly.
    """
    return Failure(ConnectionDone())


class LimitingTests(SynchronousTestCase):
    """
    L{LimitingFactory} and L{LimitingProtocol} over L{StringTransport}s.
    """

    def makeFactory(self, **limits: float) -> LimitingFactory:
        """
        Make C{self.factory}, limiting a L{RecordingFactory} with
        C{limits}, logging to C{self.events} on C{self.clock}.
        """
        self.clock = Clock()
        self.events = EventLoggingObserver()
        self.refusals = RefusalLog(
            Logger(observer=self.events), self.clock, "connection"
        )
        self.wrapped = RecordingFactory()
        self.factory = LimitingFactory(
            self.wrapped,
            ConnectionLimits(**limits),
            self.clock,
            self.refusals,
            refusalMessage,
        )
        return self.factory

    def connect(
        self, host: str, port: int = 40000
    ) -> tuple[LimitingProtocol, StringTransport]:
        """
        Connect a new protocol from C{host}.
        """
        if ":" in host:
            peer = IPv6Address("TCP", host, port)
        else:
            peer = IPv4Address("TCP", host, port)
        return self.connectFrom(peer)

    def connectFrom(self, peer) -> tuple[LimitingProtocol, StringTransport]:
        """
        Connect a new protocol from the address C{peer}.
        """
        transport = StringTransport(hostAddress=SERVER, peerAddress=peer)
        protocol = self.factory.buildProtocol(peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def admitted(self, transport: StringTransport) -> bool:
        """
        Whether the connection on C{transport} was admitted (and is still
        open), as seen from outside.
        """
        return not transport.disconnecting and transport.value() == b""

    def test_perPeer(self):
        """
        Of 100 connections from one address, exactly C{maxPerPeer} are
        admitted; the others get the refusal message and are closed.
        Another address is not affected.
        """
        self.makeFactory(maxPerPeer=10)
        connections = [self.connect("127.0.0.1", 40000 + n) for n in range(100)]
        for _, transport in connections[:10]:
            self.assertTrue(self.admitted(transport))
        for _, transport in connections[10:]:
            self.assertTrue(transport.disconnecting)
            self.assertFalse(transport.disconnected)
            self.assertEqual(transport.value(), b"error: refused: max-per-peer\n")
        self.assertEqual(self.factory.open, 10)
        self.assertEqual(self.factory.perPeer, {"127.0.0.1/32": 10})
        self.assertEqual(self.refusals.counts, {"max-per-peer": 90})

        others = [self.connect("127.0.0.2") for _ in range(5)]
        self.assertTrue(all(self.admitted(t) for _, t in others))
        self.assertEqual(self.factory.open, 15)
        self.assertEqual([p.made for p in self.wrapped.built].count(1), 15)

    def test_refusedNeverReachWrapped(self):
        """
        A refused connection never connects the wrapped protocol: no
        C{connectionMade}, no data, no C{connectionLost}.
        """
        self.makeFactory(maxPerPeer=1)
        self.connect("192.0.2.1")
        protocol, transport = self.connect("192.0.2.1")
        recorder = self.wrapped.built[-1]
        protocol.dataReceived(b"hello")
        protocol.connectionLost(closed())
        self.assertEqual((recorder.made, recorder.chunks, recorder.lost), (0, [], []))
        self.assertIsNone(recorder.transport)
        self.assertEqual(self.factory.open, 1)
        self.assertEqual(self.factory.perPeer, {"192.0.2.1/32": 1})

    def test_admittedReachWrapped(self):
        """
        An admitted connection connects the wrapped protocol, with the real
        transport as its transport (the wrapper only watches what comes in),
        and passes data and the loss through.
        """
        self.makeFactory()
        protocol, transport = self.connect("192.0.2.1", 5555)
        recorder = self.wrapped.built[-1]
        self.assertEqual(recorder.made, 1)
        self.assertIs(recorder.transport, transport)
        self.assertEqual(recorder.transport.getPeer(), IPv4Address("TCP", "192.0.2.1", 5555))
        protocol.dataReceived(b"hello")
        reason = closed()
        protocol.connectionLost(reason)
        self.assertEqual(recorder.chunks, [b"hello"])
        self.assertEqual(recorder.lost, [reason])

    def test_ipv6SameSlash64(self):
        """
        IPv6 addresses in one /64 count as one peer; another /64 is another
        peer.
        """
        self.makeFactory(maxPerPeer=3)
        results = [
            self.admitted(self.connect(host)[1])
            for host in [
                "2001:db8:0:1::1",
                "2001:db8:0:1::2",
                "2001:db8:0:1:ffff:ffff:ffff:ffff",
                "2001:db8:0:1:1234::9",
            ]
        ]
        self.assertEqual(results, [True, True, True, False])
        self.assertTrue(self.admitted(self.connect("2001:db8:0:2::1")[1]))
        self.assertEqual(
            self.factory.perPeer, {"2001:db8:0:1::/64": 3, "2001:db8:0:2::/64": 1}
        )

    def test_v4MappedSameAsIPv4(self):
        """
        A v4-mapped peer (from a dual-stack listener) counts as the same
        peer as the plain IPv4 address.
        """
        self.makeFactory(maxPerPeer=1)
        self.assertTrue(self.admitted(self.connect("192.0.2.1")[1]))
        self.assertFalse(self.admitted(self.connect("::ffff:192.0.2.1")[1]))

    def test_maxConnections(self):
        """
        The global cap refuses connections beyond C{maxConnections}, from
        any peer, with its own reason.
        """
        self.makeFactory(maxConnections=3, maxPerPeer=10)
        results = [self.connect(f"192.0.2.{n}")[1] for n in range(1, 6)]
        self.assertEqual(
            [self.admitted(t) for t in results], [True, True, True, False, False]
        )
        self.assertEqual(results[3].value(), b"error: refused: max-connections\n")
        self.assertEqual(self.refusals.counts, {"max-connections": 2})
        self.assertEqual(self.factory.open, 3)

    def test_closingFreesSlot(self):
        """
        Closing an admitted connection frees its slot, globally and for its
        peer.
        """
        self.makeFactory(maxConnections=2, maxPerPeer=1)
        first, _ = self.connect("192.0.2.1")
        self.connect("192.0.2.2")
        self.assertFalse(self.admitted(self.connect("192.0.2.1")[1]))
        first.connectionLost(closed())
        self.assertTrue(self.admitted(self.connect("192.0.2.1")[1]))
        self.assertFalse(self.admitted(self.connect("192.0.2.3")[1]))

    def test_noGrowth(self):
        """
        After 1,000 connections from 1,000 peers have come and gone, admitted
        or not, nothing is left in the factory's tables.
        """
        self.makeFactory(maxConnections=500, maxPerPeer=1)
        protocols = [self.connect(f"10.0.{n // 256}.{n % 256}")[0] for n in range(1000)]
        self.assertEqual(self.factory.open, 500)
        self.assertEqual(len(self.factory.perPeer), 500)
        for protocol in protocols:
            protocol.connectionLost(closed())
        self.assertEqual(self.factory.open, 0)
        self.assertEqual(self.factory.perPeer, {})
        self.assertEqual(self.factory.protocols, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_zeroUnlimited(self):
        """
        0 for C{maxConnections} and C{maxPerPeer} means no limit, and 0 for
        C{idleTimeout} means no timer.
        """
        self.makeFactory(maxConnections=0, maxPerPeer=0, idleTimeout=0)
        transports = [self.connect("192.0.2.1")[1] for _ in range(2000)]
        self.assertTrue(all(self.admitted(t) for t in transports))
        self.assertEqual(self.factory.open, 2000)
        self.assertEqual(self.factory.perPeer, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10**9)
        self.assertFalse(any(t.disconnecting for t in transports))

    def test_unixPeer(self):
        """
        A peer without a host (a UNIX socket) is only subject to the global
        limit.
        """
        self.makeFactory(maxConnections=3, maxPerPeer=1)
        transports = [self.connectFrom(UNIXAddress(b"/run/x.sock"))[1] for _ in range(4)]
        self.assertEqual(
            [self.admitted(t) for t in transports], [True, True, True, False]
        )
        self.assertEqual(self.factory.perPeer, {})
        self.assertEqual(self.events[-1]["peer"], "unix:/run/x.sock")

    def test_idleTimeoutOneTimer(self):
        """
        However many connections are open, one timer watches them all, and
        each connection is aborted at its own deadline.
        """
        self.makeFactory(idleTimeout=8.0)
        first = self.connect("192.0.2.1", 1)
        self.clock.advance(3)
        second = self.connect("192.0.2.2", 2)
        self.clock.advance(3)
        third = self.connect("192.0.2.3", 3)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        first[0].dataReceived(b"x")  # t=6: deadline 14
        self.clock.advance(5)  # t=11: second's deadline passed
        self.assertEqual(
            [t.disconnecting for _, t in (first, second, third)], [False, True, False]
        )
        self.clock.advance(3)  # t=14: third (deadline 14) and first (14)
        self.assertEqual(
            [t.disconnecting for _, t in (first, second, third)], [True, True, True]
        )
        self.assertEqual(self.refusals.counts, {"idle-timeout": 3})

    def test_idleTimeout(self):
        """
        A connection without inbound data for C{idleTimeout} seconds is
        aborted, and the abort is logged as C{"idle-timeout"}.
        """
        self.makeFactory(idleTimeout=8.0)
        protocol, transport = self.connect("192.0.2.1", 5555)
        self.clock.advance(7.75)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.25)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.refusals.counts, {"idle-timeout": 1})
        [event] = self.events
        self.assertEqual(event["reason"], "idle-timeout")
        self.assertEqual(event["peer"], "192.0.2.1:5555")
        protocol.connectionLost(closed())
        self.assertEqual(self.factory.open, 0)
        self.assertEqual(len(self.wrapped.built[0].lost), 1)

    def test_inboundDataResetsTimer(self):
        """
        Each chunk of inbound data restarts the idle timer.
        """
        self.makeFactory(idleTimeout=8.0)
        protocol, transport = self.connect("192.0.2.1")
        for _ in range(10):
            self.clock.advance(7.5)
            protocol.dataReceived(b"x")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(7.5)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.5)
        self.assertTrue(transport.disconnected)

    def test_outboundDataDoesNotResetTimer(self):
        """
        Writing to a peer that never sends does not keep the connection
        open: the timer counts inbound data only.
        """
        self.makeFactory(idleTimeout=8.0)
        protocol, transport = self.connect("192.0.2.1")
        recorder = self.wrapped.built[0]
        for _ in range(15):
            self.clock.advance(0.5)
            recorder.transport.write(b"tick\n")
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.5)
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"tick\n" * 15)

    def test_closeCancelsTimer(self):
        """
        A connection that closes leaves no idle timer behind.
        """
        self.makeFactory(idleTimeout=8.0)
        protocol, transport = self.connect("192.0.2.1")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        protocol.connectionLost(closed())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_refusedNoTimer(self):
        """
        A refused connection starts no idle timer.
        """
        self.makeFactory(maxPerPeer=1, idleTimeout=8.0)
        self.connect("192.0.2.1")
        self.connect("192.0.2.1")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_defaultRefusalLog(self):
        """
        Without a L{RefusalLog}, the factory makes its own, and a refused
        client gets no message by default.
        """
        factory = LimitingFactory(
            RecordingFactory(), ConnectionLimits(maxPerPeer=1), Clock()
        )
        peer = IPv4Address("TCP", "192.0.2.1", 1)
        transports = []
        for _ in range(2):
            transport = StringTransport(peerAddress=peer)
            factory.buildProtocol(peer).makeConnection(transport)
            transports.append(transport)
        self.assertEqual(factory.refusals.counts, {"max-per-peer": 1})
        self.assertEqual(transports[1].value(), b"")
        self.assertTrue(transports[1].disconnecting)


    def test_drainClosesAndWaits(self) -> None:
        """
        Draining closes the admitted connections (after what was written
        to them is sent), refuses new ones as C{stopping}, and fires once
        the last one has gone; C{accepted} counts the admitted ones.
        """
        self.makeFactory()
        (first, firstTransport), (second, secondTransport) = (
            self.connect("127.0.0.1"),
            self.connect("127.0.0.2"),
        )
        self.assertEqual(self.factory.accepted, 2)
        drained = self.factory.drain()
        self.assertTrue(firstTransport.disconnecting)
        self.assertTrue(secondTransport.disconnecting)
        _, late = self.connect("127.0.0.3")
        self.assertEqual(late.value(), b"error: refused: stopping\n")
        first.connectionLost(closed())
        self.assertNoResult(drained)
        second.connectionLost(closed())
        self.successResultOf(drained)
        self.assertEqual(self.factory.accepted, 2)

    def test_drainAsksProtocols(self) -> None:
        """
        A wrapped protocol with a C{drain} method is asked to drain instead
        of being closed.
        """
        self.makeFactory()
        protocol, transport = self.connect("127.0.0.1")
        asked = []
        protocol.wrappedProtocol.drain = lambda: asked.append(True)
        drained = self.factory.drain()
        self.assertEqual(asked, [True])
        self.assertFalse(transport.disconnecting)
        self.assertNoResult(drained)
        protocol.connectionLost(closed())
        self.successResultOf(drained)

    def test_drainWithoutConnections(self) -> None:
        """
        With no connection open, the drain is done at once.
        """
        self.makeFactory()
        self.successResultOf(self.factory.drain())


class PeerTests(SynchronousTestCase):
    """
    L{peerDescription} and L{peerKey}.
    """

    def test_description(self):
        """
        IP peers are described as C{host:port}, IPv6 in brackets, v4-mapped
        as IPv4; UNIX peers by path.
        """
        self.assertEqual(
            peerDescription(IPv4Address("TCP", "192.0.2.1", 80)), "192.0.2.1:80"
        )
        self.assertEqual(peerDescription(IPv6Address("TCP", "::1", 80)), "[::1]:80")
        self.assertEqual(
            peerDescription(IPv6Address("TCP", "::ffff:192.0.2.1", 80)), "192.0.2.1:80"
        )
        self.assertEqual(peerDescription(UNIXAddress(b"/run/x")), "unix:/run/x")

    def test_key(self):
        """
        The per-peer key is the IPv4 address or the IPv6 /64; UNIX peers
        have none.
        """
        self.assertEqual(peerKey(IPv4Address("TCP", "192.0.2.1", 80)), "192.0.2.1/32")
        self.assertEqual(
            peerKey(IPv6Address("TCP", "2001:db8::1:2:3:4", 80)), "2001:db8::/64"
        )
        self.assertIsNone(peerKey(UNIXAddress(b"/run/x")))
