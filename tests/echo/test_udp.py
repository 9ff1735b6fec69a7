"""
Tests for L{netservices.echo.udp}.
"""

import os
import socket

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from netservices._common.datagram import DatagramInfo, listenWithInfo
from netservices._common.ratelimit import RateLimits
from netservices._common.udp import DatagramGuard
from netservices.echo.udp import UDPEchoProtocol

UNICAST = DatagramInfo("192.0.2.1", "192.0.2.1", 2, 64)


def makeProtocol(limits=RateLimits()):
    """
    @return: a L{UDPEchoProtocol} on a fake transport, with a clock that
        never advances.
    """
    guard = DatagramGuard(limits, Clock(), Logger(observer=lambda event: None))
    protocol = UDPEchoProtocol(guard)
    protocol.makeConnection(FakeDatagramTransport())
    return protocol


class UDPEchoProtocolTests(SynchronousTestCase):
    """
    L{UDPEchoProtocol} echoes datagrams byte for byte, within the policy.
    """

    def test_echo(self):
        """
        A datagram goes back to its sender unchanged, whatever its size.
        """
        protocol = makeProtocol()
        for size in (0, 1, 8193, 65507):
            data = bytes(i % 251 for i in range(size))
            protocol.datagramReceivedWithInfo(data, ("198.51.100.9", 40000), UNICAST)
        self.assertEqual(
            [(len(d), a) for d, a in protocol.transport.written],
            [(n, ("198.51.100.9", 40000)) for n in (0, 1, 8193, 65507)],
        )
        self.assertEqual(protocol.guard.counts, {"received": 4, "answered": 4})

    def test_noReflection(self):
        """
        Datagrams to a broadcast destination, from a reserved port or from
        an own port get no echo; each refusal is counted.
        """
        protocol = makeProtocol()
        protocol.guard.ownPorts.add(7777)
        broadcast = DatagramInfo("192.0.2.255", "192.0.2.1", 2, 64)
        protocol.datagramReceivedWithInfo(b"x", ("198.51.100.9", 40000), broadcast)
        protocol.datagramReceivedWithInfo(b"x", ("198.51.100.9", 19), UNICAST)
        protocol.datagramReceivedWithInfo(b"x", ("198.51.100.9", 7777), UNICAST)
        self.assertEqual(protocol.transport.written, [])
        self.assertEqual(
            dict(protocol.guard.refusals.counts),
            {
                "broadcast-or-multicast-destination": 1,
                "reserved-source-port": 1,
                "own-port-source": 1,
            },
        )

    def test_loopStops(self):
        """
        Two echo servers tricked into echoing each other (each sees the
        other as an ordinary high port) stop within two bursts.
        """
        burst = 40
        a = makeProtocol(RateLimits(rate=20, burst=burst))
        b = makeProtocol(RateLimits(rate=20, burst=burst))
        aAddress, bAddress = ("127.0.0.1", 9000), ("127.0.0.1", 9001)
        # The forged datagram: to A, "from" B.
        pending = [(a, b"storm", bAddress)]
        delivered = 0
        while pending and delivered < 10 * burst:
            target, data, source = pending.pop()
            before = len(target.transport.written)
            target.datagramReceivedWithInfo(data, source, UNICAST)
            delivered += 1
            for data, _ in target.transport.written[before:]:
                other = b if target is a else a
                pending.append((other, data, aAddress if target is a else bAddress))
        self.assertLessEqual(delivered, 2 * burst + 1)
        self.assertEqual(pending, [])


class UnicastBindTests(SynchronousTestCase):
    """
    On a unicast bind, udp-echo reads without ancillary data and still
    applies the whole source policy and the rate limits.
    """

    def test_policyOnPlainReads(self):
        """
        Bound to 127.0.0.1, an ordinary datagram is echoed; datagrams from
        our own port, from a reserved port (as root) and beyond the burst
        are refused and counted.
        """
        guard = DatagramGuard(
            RateLimits(rate=0, burst=2), Clock(), Logger(observer=lambda event: None)
        )
        port = listenWithInfo(reactor, 0, UDPEchoProtocol(guard), "127.0.0.1")
        self.addCleanup(port.stopListening)
        self.assertTrue(port.unicast)
        echoPort = port.getHost().port
        guard.ownPorts.add(echoPort)

        def sender(address):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(s.close)
            s.bind(address)
            s.setblocking(False)
            return s

        def answers(s):
            got = []
            while True:
                try:
                    got.append(s.recv(100))
                except BlockingIOError:
                    return got

        ordinary = sender(("127.0.0.1", 0))
        ownPort = sender(("127.0.0.2", echoPort))
        ownPort.sendto(b"own", ("127.0.0.1", echoPort))
        refused = {"own-port-source": 1, "rate-limit-prefix": 1}
        if os.geteuid() == 0:
            reserved = sender(("127.0.0.1", 1000))
            reserved.sendto(b"reserved", ("127.0.0.1", echoPort))
            refused["reserved-source-port"] = 1
        for n in range(3):
            ordinary.sendto(b"%d" % n, ("127.0.0.1", echoPort))
        port.doRead()
        self.assertTrue(port._plainReads)
        self.assertEqual(answers(ordinary), [b"0", b"1"])
        self.assertEqual(answers(ownPort), [])
        self.assertEqual(dict(guard.refusals.counts), refused)
        received = 3 + sum(refused.values()) - refused["rate-limit-prefix"]
        self.assertEqual(guard.counts, {"received": received, "answered": 2})
