"""
Tests for L{netservices._common.udp}.
"""

from __future__ import annotations

import socket

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, FakeDatagramTransport
from twisted.logger import Logger
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netservices._common.datagram import DatagramInfo
from netservices._common.ratelimit import PrefixRateLimiter, RateLimits
from netservices._common.udp import (
    DatagramGuard,
    DatagramPolicyOptions,
    GuardedDatagramProtocol,
)

UNICAST = DatagramInfo("192.0.2.1", "192.0.2.1", 2, 64)


def makeGuard(clock=None, **limits: float) -> DatagramGuard:
    """
    @return: a guard with C{limits}, logging to an L{EventLoggingObserver}
        kept as its C{events}.
    """
    events = EventLoggingObserver()
    guard = DatagramGuard(
        RateLimits(**limits), clock or Clock(), Logger(observer=events)
    )
    guard.events = events  # type: ignore[attr-defined]
    return guard


class Echo(GuardedDatagramProtocol):
    """
    Answer each datagram with itself.
    """

    def handleDatagram(self, data, addr, info):
        self.reply(data, addr)


class FailingTransport(FakeDatagramTransport):
    """
    A datagram transport whose sends fail, as C{sendto} does for an
    unreachable network.
    """

    def write(self, packet, addr=None):
        raise OSError(101, "Network is unreachable")


class CheckTests(SynchronousTestCase):
    """
    L{DatagramGuard.check}.
    """

    def setUp(self):
        self.guard = makeGuard()

    def test_normalSource(self):
        """
        A datagram from an ordinary address and high port passes, with or
        without packet info.
        """
        for host in ["192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1", "127.0.0.1"]:
            self.assertIsNone(self.guard.check(host, 40000, UNICAST), host)
            self.assertIsNone(self.guard.check(host, 1024, DatagramInfo.unknown()), host)

    def test_remembered(self):
        """
        What is decided for a source address is remembered, with the same
        answers, and the memory is emptied when it holds
        L{KEY_CACHE_SIZE} addresses, so that spoofed sources cannot grow it.
        """
        from netservices._common.ratelimit import KEY_CACHE_SIZE

        for _ in range(2):
            self.assertEqual(self.guard.check("224.0.0.1", 40000, UNICAST), "multicast-source")
            self.assertIsNone(self.guard.check("192.0.2.1", 40000, UNICAST))
            # The port is checked for every datagram, whatever the address.
            self.assertEqual(self.guard.check("192.0.2.1", 53, UNICAST), "reserved-source-port")
        for number in range(KEY_CACHE_SIZE + 10):
            host = socket.inet_ntoa(number.to_bytes(4, "big"))
            self.guard.check(host, 40000, UNICAST)
            self.assertLessEqual(len(self.guard._hostVerdicts), KEY_CACHE_SIZE)
        self.assertEqual(self.guard.check("0.0.0.0", 40000, UNICAST), "unspecified-source")

    def test_reservedPorts(self):
        """
        Source ports below 1024 are refused: that is where responders such
        as echo (7), chargen (19), DNS (53) and NTP (123) live.
        """
        for port in [0, 7, 19, 53, 123, 1023]:
            self.assertEqual(
                self.guard.check("192.0.2.1", port, UNICAST), "reserved-source-port"
            )

    def test_nfsPort(self):
        """
        Source port 2049 (NFS) is refused.
        """
        self.assertEqual(self.guard.check("192.0.2.1", 2049, UNICAST), "nfs-source-port")

    def test_ownPort(self):
        """
        A datagram from a port this process listens on is refused: it may
        be another instance of ourselves.
        """
        self.guard.ownPorts.add(3478)
        self.assertEqual(self.guard.check("192.0.2.1", 3478, UNICAST), "own-port-source")
        self.assertIsNone(self.guard.check("192.0.2.1", 3479, UNICAST))

    def test_impossibleSources(self):
        """
        Unspecified, "this network", multicast and broadcast source
        addresses are refused, v4-mapped ones too.
        """
        for host, reason in [
            ("0.0.0.0", "unspecified-source"),
            ("0.1.2.3", "unspecified-source"),
            ("::", "unspecified-source"),
            ("::ffff:0.0.0.0", "unspecified-source"),
            ("224.0.0.1", "multicast-source"),
            ("239.255.255.250", "multicast-source"),
            ("ff02::1", "multicast-source"),
            ("::ffff:224.0.0.251", "multicast-source"),
            ("255.255.255.255", "broadcast-source"),
            ("::ffff:255.255.255.255", "broadcast-source"),
        ]:
            self.assertEqual(self.guard.check(host, 40000, UNICAST), reason, host)

    def test_truncated(self):
        """
        A datagram the kernel truncated is refused.
        """
        info = DatagramInfo("192.0.2.1", "192.0.2.1", 2, 64, truncated=True)
        self.assertEqual(self.guard.check("192.0.2.1", 40000, info), "truncated")

    def test_broadcastDestination(self):
        """
        Datagrams addressed to a directed or limited broadcast or to a
        multicast group are refused.
        """
        for info in [
            DatagramInfo(
                destination="10.0.0.255", localAddress="10.0.0.1", interfaceIndex=2, ttl=64
            ),
            DatagramInfo("255.255.255.255", "10.0.0.1", 2, 64),
            DatagramInfo("224.0.0.1", "10.0.0.1", 2, 1),
            DatagramInfo("ff02::1", "ff02::1", 2, 1),
        ]:
            self.assertEqual(
                self.guard.check("10.0.0.7", 40000, info),
                "broadcast-or-multicast-destination",
                info,
            )


class GuardedProtocolTests(SynchronousTestCase):
    """
    L{GuardedDatagramProtocol}, on a L{FakeDatagramTransport} and a L{Clock}
    that does not advance.
    """

    def setUp(self):
        self.clock = Clock()
        self.guard = makeGuard(self.clock, rate=10.0, burst=5.0)
        self.transport = FakeDatagramTransport()
        self.echo = Echo(self.guard)
        self.echo.makeConnection(self.transport)

    def test_answered(self):
        """
        A datagram that passes the policy is handled and answered.
        """
        self.echo.datagramReceived(b"ping", ("192.0.2.1", 40000))
        self.assertEqual(self.transport.written, [(b"ping", ("192.0.2.1", 40000))])
        self.assertEqual(self.guard.counts, {"received": 1, "answered": 1})

    def test_withInfo(self):
        """
        L{GuardedDatagramProtocol.datagramReceivedWithInfo} applies the
        destination checks.
        """
        self.echo.datagramReceivedWithInfo(
            b"x", ("10.0.0.7", 40000), DatagramInfo("10.0.0.255", "10.0.0.1", 2, 64)
        )
        self.echo.datagramReceivedWithInfo(b"y", ("10.0.0.7", 40000), UNICAST)
        self.assertEqual(self.transport.written, [(b"y", ("10.0.0.7", 40000))])
        self.assertEqual(
            self.guard.refusals.counts, {"broadcast-or-multicast-destination": 1}
        )

    def test_refusedNotAnswered(self):
        """
        Refused datagrams produce no writes; each is counted as received and
        under its reason, and logged (rate-limited) with its size.
        """
        self.guard.ownPorts.add(3478)
        for addr in [
            ("192.0.2.1", 7),
            ("192.0.2.1", 19),
            ("192.0.2.1", 2049),
            ("192.0.2.1", 3478),
            ("0.0.0.0", 40000),
            ("224.0.0.1", 40000),
            ("255.255.255.255", 40000),
            ("ff02::1", 40000),
        ]:
            for _ in range(3):
                self.echo.datagramReceived(b"abc", addr)
        self.assertEqual(self.transport.written, [])
        self.assertEqual(self.guard.counts, {"received": 24, "answered": 0})
        self.assertEqual(
            self.guard.refusals.counts,
            {
                "reserved-source-port": 6,
                "nfs-source-port": 3,
                "own-port-source": 3,
                "unspecified-source": 3,
                "multicast-source": 6,
                "broadcast-source": 3,
            },
        )
        self.assertEqual(len(self.guard.events), 6)
        self.assertEqual(self.guard.events[0]["peer"], "192.0.2.1:7")
        self.assertEqual(self.guard.events[0]["size"], 3)
        self.assertEqual(self.guard.events[-1]["peer"], "255.255.255.255:40000")

    def test_rateLimited(self):
        """
        Answers to one source prefix stop exactly at the burst; the rest are
        received, refused and counted, and another prefix is answered.
        """
        for n in range(100):
            self.echo.datagramReceived(b"%d" % (n,), ("192.0.2.1", 40000 + n))
        self.assertEqual(
            [data for data, _ in self.transport.written], [b"0", b"1", b"2", b"3", b"4"]
        )
        self.assertEqual(self.guard.counts, {"received": 100, "answered": 5})
        self.assertEqual(self.guard.refusals.counts, {"rate-limit-prefix": 95})
        self.echo.datagramReceived(b"other", ("192.0.3.1", 40000))
        self.assertEqual(self.transport.written[-1], (b"other", ("192.0.3.1", 40000)))
        self.assertEqual(self.guard.counts, {"received": 101, "answered": 6})

    def test_otherLimiter(self):
        """
        L{GuardedDatagramProtocol.reply} spends tokens from the limiter it
        is given, not the guard's, from the very first answer.
        """
        other = PrefixRateLimiter(RateLimits(rate=1.0, burst=2.0), self.clock)
        sent = [self.echo.reply(b"x", ("192.0.2.1", 40000), other) for _ in range(4)]
        self.assertEqual(sent, [True, True, False, False])
        self.assertEqual(len(other), 1)
        self.assertEqual(len(self.guard.limiter), 0)
        self.assertEqual(self.guard.refusals.counts, {"rate-limit-prefix": 2})
        self.assertTrue(self.echo.reply(b"y", ("192.0.2.1", 40000)))

    def test_sendFailed(self):
        """
        A failed send is refused as C{"send-failed"}, with the error, and
        not counted as answered.
        """
        self.echo.transport = FailingTransport()
        self.assertFalse(self.echo.reply(b"x", ("192.0.2.1", 40000)))
        self.assertEqual(self.guard.counts["answered"], 0)
        self.assertEqual(self.guard.refusals.counts, {"send-failed": 1})
        self.assertIn("Network is unreachable", self.guard.events[0]["error"])

    def test_handleDatagramAbstract(self):
        """
        L{GuardedDatagramProtocol.handleDatagram} must be implemented.
        """
        protocol = GuardedDatagramProtocol(self.guard)
        self.assertRaises(
            NotImplementedError,
            protocol.datagramReceived,
            b"x",
            ("192.0.2.1", 40000),
        )


class WiredTransport(FakeDatagramTransport):
    """
    A datagram transport that queues what is written for delivery to
    another protocol, as if from C{address}.
    """

    def __init__(self, address, network) -> None:
        super().__init__()
        self.address = address
        self.network = network

    def write(self, packet, addr=None):
        super().write(packet, addr)
        self.network.append((addr, packet, self.address))


class EchoLoopTests(SynchronousTestCase):
    """
    The echo loop of CVE-1999-0103: two echo services made to answer each
    other by one forged datagram.
    """

    def test_loopStops(self):
        """
        Two echo protocols that see each other as ordinary high ports stop
        answering each other after at most 2 x burst datagrams, without any
        time passing.
        """
        burst = 5
        clock = Clock()
        network: list = []
        hosts = {}
        transports = []
        for address in [("192.0.2.1", 40000), ("198.51.100.1", 50000)]:
            echo = Echo(makeGuard(clock, rate=1.0, burst=float(burst)))
            transport = WiredTransport(address, network)
            echo.makeConnection(transport)
            hosts[address] = echo
            transports.append(transport)
        # The forgery: to the first, "from" the second.
        network.append((("192.0.2.1", 40000), b"loop", ("198.51.100.1", 50000)))
        delivered = 0
        while network and delivered < 100 * burst:
            destination, data, source = network.pop(0)
            hosts[destination].datagramReceived(data, source)
            delivered += 1
        self.assertEqual(network, [])
        written = sum(len(t.written) for t in transports)
        self.assertLessEqual(written, 2 * burst)
        self.assertEqual([len(t.written) for t in transports], [burst, burst])
        self.assertEqual(
            [e.guard.counts for e in hosts.values()],
            [
                {"received": burst + 1, "answered": burst},
                {"received": burst, "answered": burst},
            ],
        )


class DatagramPolicyOptionsTests(SynchronousTestCase):
    """
    L{DatagramPolicyOptions}.
    """

    def test_defaults(self):
        """
        Without options, the limits are L{RateLimits}' defaults.
        """
        options = DatagramPolicyOptions()
        options.parseOptions([])
        self.assertEqual(options.rateLimits(), RateLimits())

    def test_values(self):
        """
        Each option sets its limit.
        """
        options = DatagramPolicyOptions()
        options.parseOptions(
            [
                "--rate", "1.5", "--burst", "3", "--global-rate", "0",
                "--global-burst", "7", "--table-size", "9",
                "--ipv4-prefix", "32", "--ipv6-prefix", "64",
            ]
        )
        self.assertEqual(
            options.rateLimits(),
            RateLimits(
                rate=1.5, burst=3.0, globalRate=0.0, globalBurst=7.0,
                tableSize=9, ipv4Prefix=32, ipv6Prefix=64,
            ),
        )

    def test_badPrefix(self):
        """
        Prefix lengths out of range are refused while parsing.
        """
        for args in [["--ipv4-prefix", "33"], ["--ipv6-prefix", "-1"]]:
            options = DatagramPolicyOptions()
            self.assertRaises(usage.UsageError, options.parseOptions, args)

    def test_badNumbers(self):
        """
        Negative rates and a table size below 1 are refused while parsing.
        """
        for args in [["--rate", "-1"], ["--burst", "nan"], ["--table-size", "0"]]:
            self.assertRaises(
                usage.UsageError, DatagramPolicyOptions().parseOptions, args
            )
