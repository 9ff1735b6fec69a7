"""
Tests for L{netservices._common.datagram}.
"""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError, InvalidAddressError, MessageLengthError
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netservices._common.datagram import (
    UNICAST_DESTINATION,
    DatagramInfo,
    InfoDatagramPort,
    boundToUnicast,
    listenWithInfo,
)


class Recorder(DatagramProtocol):
    """
    Fire the next waiting Deferred with C{(data, addr, info)}.
    """

    def __init__(self) -> None:
        self.waiting: list[Deferred] = []

    def next(self) -> Deferred:
        d: Deferred = Deferred()
        self.waiting.append(d)
        return d

    def datagramReceivedWithInfo(self, data, addr, info):
        self.waiting.pop(0).callback((data, addr, info))


class PlainRecorder(DatagramProtocol):
    """
    A protocol without C{datagramReceivedWithInfo}.
    """

    def __init__(self) -> None:
        self.received: Deferred = Deferred()

    def datagramReceived(self, data, addr):
        self.received.callback((data, addr))


class DestinationOnly(Recorder):
    """
    A L{Recorder} that needs only the destination check.
    """

    wantsDatagramInfo = False


class Exploding(Recorder):
    """
    Raise on datagrams starting with C{b"boom"}, record the others.
    """

    def datagramReceivedWithInfo(self, data, addr, info):
        if data.startswith(b"boom"):
            raise ZeroDivisionError("boom")
        super().datagramReceivedWithInfo(data, addr, info)


class LoopbackTests(TestCase):
    """
    L{listenWithInfo} over real loopback sockets.
    """

    def listen(self, protocol, interface="127.0.0.1", **kw) -> int:
        port = listenWithInfo(reactor, 0, protocol, interface=interface, **kw)
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, InfoDatagramPort)
        return port.getHost().port

    def sender(self, family=socket.AF_INET) -> socket.socket:
        s = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(s.close)
        return s

    def test_ipv4Default(self):
        """
        A datagram to 127.0.0.1 reports its destination, local address,
        loopback interface, default TTL 64, and is not truncated.
        """
        proto = Recorder()
        portNumber = self.listen(proto)
        d = proto.next()
        sender = self.sender()
        sender.sendto(b"hello", ("127.0.0.1", portNumber))

        def check(result):
            data, addr, info = result
            self.assertEqual(data, b"hello")
            self.assertEqual(addr, ("127.0.0.1", sender.getsockname()[1]))
            self.assertEqual(info.destination, "127.0.0.1")
            self.assertEqual(info.localAddress, info.destination)
            self.assertEqual(info.interfaceIndex, socket.if_nametoindex("lo"))
            self.assertEqual(info.ttl, 64)
            self.assertFalse(info.truncated)
            self.assertFalse(info.addressedToGroupOrBroadcast)

        return d.addCallback(check)

    def test_ipv4SenderTTL(self):
        """
        The TTL set on the sending socket is reported.
        """
        proto = Recorder()
        portNumber = self.listen(proto)
        d = proto.next()
        sender = self.sender()
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 17)
        sender.sendto(b"x", ("127.0.0.1", portNumber))
        return d.addCallback(lambda r: self.assertEqual(r[2].ttl, 17))

    def test_largestDatagram(self):
        """
        A 65,507-byte datagram, the largest IPv4 allows, arrives whole.
        """
        proto = Recorder()
        portNumber = self.listen(proto)
        d = proto.next()
        payload = bytes(range(256)) * 255 + bytes(227)
        self.assertEqual(len(payload), 65507)
        self.sender().sendto(payload, ("127.0.0.1", portNumber))

        def check(result):
            self.assertEqual(result[0], payload)
            self.assertFalse(result[2].truncated)

        return d.addCallback(check)

    def test_truncated(self):
        """
        A datagram longer than C{maxPacketSize} arrives cut to that size and
        with C{truncated} set.
        """
        proto = Recorder()
        portNumber = self.listen(proto, maxPacketSize=100)
        d = proto.next()
        self.sender().sendto(b"a" * 200, ("127.0.0.1", portNumber))

        def check(result):
            self.assertEqual(result[0], b"a" * 100)
            self.assertTrue(result[2].truncated)

        return d.addCallback(check)

    def test_ipv6HopLimit(self):
        """
        A datagram to ::1 reports destination ::1 and the sender's hop limit.
        """
        proto = Recorder()
        portNumber = self.listen(proto, interface="::1")
        d = proto.next()
        sender = self.sender(socket.AF_INET6)
        sender.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 9)
        sender.sendto(b"six", ("::1", portNumber))

        def check(result):
            data, addr, info = result
            self.assertEqual(data, b"six")
            self.assertEqual(addr, ("::1", sender.getsockname()[1]))
            self.assertEqual(info.destination, "::1")
            self.assertEqual(info.localAddress, "::1")
            self.assertEqual(info.interfaceIndex, socket.if_nametoindex("lo"))
            self.assertEqual(info.ttl, 9)
            self.assertFalse(info.addressedToGroupOrBroadcast)

        return d.addCallback(check)

    def test_dualStack(self):
        """
        An IPv4 datagram received on a dual-stack socket bound to C{::}
        reports its destination as plain IPv4, and its TTL.
        """
        proto = Recorder()
        port = listenWithInfo(reactor, 0, proto, interface="::")
        self.addCleanup(port.stopListening)
        if port.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY):
            raise self.skipTest("net.ipv6.bindv6only is set")
        d = proto.next()
        sender = self.sender()
        sender.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 23)
        sender.sendto(b"four", ("127.0.0.1", port.getHost().port))

        def check(result):
            data, addr, info = result
            self.assertEqual(addr[0], "::ffff:127.0.0.1")
            self.assertEqual(info.destination, "127.0.0.1")
            self.assertEqual(info.localAddress, "127.0.0.1")
            self.assertEqual(info.ttl, 23)
            self.assertFalse(info.addressedToGroupOrBroadcast)

        return d.addCallback(check)

    def test_plainProtocol(self):
        """
        A protocol without C{datagramReceivedWithInfo} gets
        C{datagramReceived}.
        """
        proto = PlainRecorder()
        portNumber = self.listen(proto)
        sender = self.sender()
        sender.sendto(b"plain", ("127.0.0.1", portNumber))
        return proto.received.addCallback(
            self.assertEqual, (b"plain", ("127.0.0.1", sender.getsockname()[1]))
        )

    def test_protocolErrorLogged(self):
        """
        An exception raised by the protocol is logged, and the next datagram
        is still delivered.
        """
        proto = Exploding()
        portNumber = self.listen(proto)
        d = proto.next()
        sender = self.sender()
        sender.sendto(b"boom", ("127.0.0.1", portNumber))
        sender.sendto(b"after", ("127.0.0.1", portNumber))

        def check(result):
            self.assertEqual(result[0], b"after")
            self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

        return d.addCallback(check)

    def test_cannotListen(self):
        """
        Binding an address that is in use raises L{CannotListenError}.
        """
        holder = self.sender()
        holder.bind(("127.0.0.1", 0))
        self.assertRaises(
            CannotListenError,
            listenWithInfo,
            reactor,
            holder.getsockname()[1],
            Recorder(),
            "127.0.0.1",
        )


class UnicastBindTests(TestCase):
    """
    On a unicast bind, protocols that need only the destination check get
    plain reads and L{UNICAST_DESTINATION}; the others, and every protocol
    on other binds, get full L{DatagramInfo}s.
    """

    def listen(self, protocol, interface="127.0.0.1", **kw) -> InfoDatagramPort:
        port = listenWithInfo(reactor, 0, protocol, interface=interface, **kw)
        self.addCleanup(port.stopListening)
        return port

    def roundTrip(self, protocol, interface="127.0.0.1", target="127.0.0.1", **kw):
        port = self.listen(protocol, interface, **kw)
        d = protocol.next()
        family = socket.AF_INET6 if ":" in target else socket.AF_INET
        sender = socket.socket(family, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        sender.sendto(b"hello", (target, port.getHost().port))
        return port, d

    def test_boundToUnicast(self):
        """
        L{boundToUnicast} is true for specific unicast addresses only: not
        for the wildcard, nor for an address the routing table calls
        broadcast (127.255.255.255 on lo), nor multicast or limited
        broadcast.
        """
        expected = [
            (socket.AF_INET, "127.0.0.1", True),
            (socket.AF_INET, "127.0.0.2", True),
            (socket.AF_INET, "0.0.0.0", False),
            (socket.AF_INET, "127.255.255.255", False),
            (socket.AF_INET, "255.255.255.255", False),
            (socket.AF_INET, "224.0.0.251", False),
            (socket.AF_INET6, "::1", True),
            (socket.AF_INET6, "::", False),
            (socket.AF_INET6, "::ffff:127.0.0.1", True),
        ]
        found = []
        for family, host, _ in expected:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                try:
                    s.bind((host, 0))
                except OSError:
                    raise self.skipTest(f"cannot bind {host}")
                found.append((family, host, boundToUnicast(s)))
        self.assertEqual(found, expected)

    def test_plainReads(self):
        """
        On 127.0.0.1 a protocol with C{wantsDatagramInfo = False} gets
        L{UNICAST_DESTINATION}.
        """
        proto = DestinationOnly()
        port, d = self.roundTrip(proto)
        self.assertTrue(port.unicast)

        def check(result):
            data, addr, info = result
            self.assertEqual((data, addr[0]), (b"hello", "127.0.0.1"))
            self.assertIs(info, UNICAST_DESTINATION)
            self.assertFalse(info.addressedToGroupOrBroadcast)
            self.assertFalse(info.truncated)

        return d.addCallback(check)

    def test_plainReadsIPv6(self):
        """
        On ::1 too, with the address reduced to C{(host, port)}.
        """
        proto = DestinationOnly()
        try:
            port, d = self.roundTrip(proto, "::1", "::1")
        except CannotListenError:
            raise self.skipTest("no IPv6")
        d.addCallback(lambda r: self.assertEqual((len(r[1]), r[2]), (2, UNICAST_DESTINATION)))
        return d

    def assertFullInfo(self, proto, **kw):
        port, d = self.roundTrip(proto, **kw)
        return d.addCallback(lambda r: self.assertEqual(r[2].destination, "127.0.0.1"))

    def test_wildcardFullInfo(self):
        """
        On 0.0.0.0, which receives broadcasts, every datagram's destination
        is read, whatever the protocol wants.
        """
        return self.assertFullInfo(DestinationOnly(), interface="0.0.0.0")

    def test_protocolWantsInfo(self):
        """
        A protocol that does not say otherwise gets full information on a
        unicast bind too.
        """
        return self.assertFullInfo(Recorder())

    def test_smallReadsFullInfo(self):
        """
        Below 65,535-byte reads truncation is possible, so the kernel's
        flags are read.
        """
        return self.assertFullInfo(DestinationOnly(), maxPacketSize=1000)

    def test_write(self):
        """
        C{write} sends to numeric addresses, and leaves hostnames, the
        wrong family and errors to Twisted's checks.
        """
        port = self.listen(Recorder())
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        port.write(b"sent", receiver.getsockname())
        self.assertEqual(receiver.recv(100), b"sent")
        self.assertRaises(InvalidAddressError, port.write, b"x", ("localhost", 9))
        self.assertRaises(InvalidAddressError, port.write, b"x", ("::1", 9))
        self.assertRaises(MessageLengthError, port.write, bytes(70000), receiver.getsockname())


class DatagramInfoTests(SynchronousTestCase):
    """
    L{DatagramInfo.addressedToGroupOrBroadcast} and normalization.
    """

    def test_unknown(self):
        """
        L{DatagramInfo.unknown} knows nothing and flags nothing.
        """
        info = DatagramInfo.unknown()
        self.assertEqual(info, DatagramInfo(None, None, None, None, False))
        self.assertFalse(info.addressedToGroupOrBroadcast)

    def test_multicast(self):
        """
        IPv4, IPv6 and v4-mapped multicast destinations are group addressed.
        """
        for destination in ["224.0.0.1", "239.1.2.3", "ff02::1", "ff05::fb",
                            "::ffff:224.0.0.251"]:
            info = DatagramInfo(destination, destination, 2, 1)
            self.assertTrue(info.addressedToGroupOrBroadcast, destination)

    def test_limitedBroadcast(self):
        """
        255.255.255.255 is broadcast, whatever C{localAddress} says.
        """
        info = DatagramInfo("255.255.255.255", "255.255.255.255", 2, 64)
        self.assertTrue(info.addressedToGroupOrBroadcast)

    def test_directedBroadcast(self):
        """
        For IPv4, a destination other than the C{ipi_spec_dst} local address
        means a directed broadcast.
        """
        info = DatagramInfo("10.0.0.255", "10.0.0.1", 2, 64)
        self.assertTrue(info.addressedToGroupOrBroadcast)

    def test_unicast(self):
        """
        Unicast datagrams, v4 or v6, are not group addressed.
        """
        for destination in ["127.0.0.1", "10.0.0.1", "::1", "2001:db8::1"]:
            info = DatagramInfo(destination, destination, 1, 64)
            self.assertFalse(info.addressedToGroupOrBroadcast, destination)
        self.assertFalse(
            DatagramInfo("10.0.0.1", None, None, None).addressedToGroupOrBroadcast
        )

    def test_v4MappedNormalized(self):
        """
        IPv4-mapped IPv6 addresses are stored as plain IPv4.
        """
        info = DatagramInfo("::ffff:10.0.0.255", "::ffff:10.0.0.1", 2, 64)
        self.assertEqual(info.destination, "10.0.0.255")
        self.assertEqual(info.localAddress, "10.0.0.1")
        self.assertTrue(info.addressedToGroupOrBroadcast)
        self.assertEqual(
            DatagramInfo("::ffff:127.0.0.1", "::ffff:127.0.0.1", 1, 64),
            DatagramInfo("127.0.0.1", "127.0.0.1", 1, 64),
        )
        self.assertEqual(DatagramInfo("::1", "::1", 1, 64).destination, "::1")
