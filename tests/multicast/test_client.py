"""
Unit tests for L{netservices.multicast.client}: the sender's token bucket
and bounds on a L{Clock}, the receiver's bookkeeping, rates and options.
"""

import socket

from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netservices._common.datagram import DatagramInfo
from netservices.multicast import client as client_module
from netservices.multicast import wire
from netservices.multicast.client import (
    McastOptions,
    MulticastReceiver,
    MulticastSender,
    parseRate,
)
from netservices.multicast.groups import Group


class FakePort:
    """
    Records what is sent, with the clock's time.
    """

    def __init__(self, clock) -> None:
        self.clock = clock
        self.sent: list = []
        self.stopped = False

    def write(self, data, addr) -> None:
        self.sent.append((self.clock.seconds(), wire.parse(data), addr))

    def stopListening(self) -> None:
        self.stopped = True


class SenderTests(SynchronousTestCase):
    """
    L{MulticastSender} on a fake clock.
    """

    def send(self, **kwargs):
        clock = Clock()
        port = FakePort(clock)
        groups = kwargs.pop("groups", [Group("239.1.1.1", 5007)])
        sender = MulticastSender(clock, groups, ports={socket.AF_INET: port}, **kwargs)
        results = []
        sender.start().addCallback(results.append)
        for _ in range(5000):
            if results:
                break
            clock.advance(0.001)
        return sender, port, results

    def test_rateBounded(self) -> None:
        """
        At any moment at most burst + rate x elapsed datagrams were sent,
        and the duration bounds the run.
        """
        sender, port, results = self.send(rate=100, count=10**6, duration=2.0)
        data = [(t, m) for t, m, _ in port.sent if m.kind == wire.DATA]
        for i, (t, _) in enumerate(data):
            self.assertLessEqual(i + 1, sender.burst + 100 * t + 1e-6)
        self.assertGreaterEqual(len(data), 195)
        self.assertLess(data[-1][0], 2.0)
        [summary] = results
        self.assertEqual(summary["count"], len(data))

    def test_countAndFinal(self) -> None:
        """
        C{count} datagrams per group numbered from 0, then three final
        records carrying the count; the port is closed.
        """
        groups = [Group("239.1.1.1", 5007), Group("239.1.1.2", 5008)]
        sender, port, results = self.send(rate=1000, count=5, duration=10, groups=groups, size=64)
        data = [(m.sequence, addr) for _, m, addr in port.sent if m.kind == wire.DATA]
        self.assertEqual(
            data, [(n, (g.address, g.port)) for n in range(5) for g in groups]
        )
        finals = [(m.sequence, addr) for _, m, addr in port.sent if m.kind == wire.FINAL]
        self.assertEqual(len(finals), 6)
        self.assertEqual({f[0] for f in finals}, {5})
        self.assertTrue(port.stopped)
        self.assertEqual(results[0]["bytes"], 10 * 64)

    def test_parseRate(self) -> None:
        """
        Packets or bits per second.
        """
        self.assertEqual(parseRate("100", 1000), 100)
        self.assertEqual(parseRate("2kpps", 1000), 2000)
        self.assertEqual(parseRate("800kbps", 1000), 100)
        self.assertEqual(parseRate("1.6Mbit", 1000), 200)
        for bad in ["", "x", "0", "-1", "2Gpps"]:
            self.assertRaises(ValueError, parseRate, bad, 100)


class ReceiverTests(SynchronousTestCase):
    """
    L{MulticastReceiver}'s bookkeeping, fed directly.
    """

    def test_streamsAndEvents(self) -> None:
        """
        Datagrams make per (sender, group) streams; first and gap events
        are emitted; foreign and replayed datagrams are refused; the final
        record ends the run.
        """
        clock = Clock()
        events = []
        key = b"k" * 16
        receiver = MulticastReceiver(clock, [], events.append, codec=wire.Codec(key))
        done = []
        from twisted.internet.defer import Deferred

        receiver._done = Deferred()
        receiver._done.addCallback(done.append)
        info = DatagramInfo("239.1.1.1", "10.0.0.2", 1, 1)
        send = wire.Codec(key)
        for n in [0, 1, 3, 3]:
            receiver._received(send.encode(wire.DATA, 1, 2, n, 0), ("10.0.0.1", 9), info, 5007)
        receiver._received(b"junk", ("10.0.0.1", 9), info, 5007)
        receiver._received(wire.encode(wire.DATA, 1, 2, 4, 0, key=b"j" * 16), ("10.0.0.1", 9), info, 5007)
        receiver._received(wire.encode(wire.DATA, 1, 2, 5, 0), ("10.0.0.1", 9), info, 5007)
        self.assertEqual(
            [e["event"] for e in events], ["first", "gap"]
        )
        self.assertEqual((events[1]["first"], events[1]["last"]), (2, 2))
        self.assertEqual(
            dict(receiver.refused),
            {"replayed": 1, "foreign": 1, "forged": 1, "unauthenticated": 1},
        )
        self.assertEqual(done, [])
        receiver._received(send.encode(wire.FINAL, 1, 2, 6, 0), ("10.0.0.1", 9), info, 5007)
        self.assertEqual(done, [receiver])
        [stream] = receiver.streams.values()
        self.assertEqual((stream.stats.received, stream.stats.gaps), (3, [[2, 2], [4, 5]]))
        self.assertEqual(receiver.check(expectCount=3, maxLoss=50), [])
        self.assertEqual(len(receiver.check(expectCount=4, maxLoss=10, expectSources=2)), 3)


    def test_streamsBounded(self) -> None:
        """
        At most C{MAX_STREAMS} streams are tracked: datagrams of further
        (possibly forged) senders are refused as C{table-full}, so memory
        does not grow with them.
        """
        self.patch(client_module, "MAX_STREAMS", 2)
        receiver = MulticastReceiver(Clock(), [], lambda event: None)
        info = DatagramInfo("239.1.1.1", "10.0.0.2", 1, 1)
        for sender in range(1, 5):
            receiver._received(wire.encode(wire.DATA, sender, 2, 0, 0), ("10.0.0.1", 9), info, 5007)
        self.assertEqual(len(receiver.streams), 2)
        self.assertEqual(receiver.refused["table-full"], 2)


class IntervalTests(SynchronousTestCase):
    """
    Interval reports.
    """

    def test_interval(self) -> None:
        """
        Every C{interval} seconds each stream is reported as an C{interval}
        event with its statistics so far.
        """
        clock = Clock()
        events = []
        receiver = MulticastReceiver(clock, [], events.append, interval=1.0)
        info = DatagramInfo("239.1.1.1", "10.0.0.2", 1, 1)
        receiver._received(wire.encode(wire.DATA, 1, 2, 0, 0), ("10.0.0.1", 9), info, 5007)
        receiver._report()
        receiver._received(wire.encode(wire.DATA, 1, 2, 1, 0), ("10.0.0.1", 9), info, 5007)
        clock.advance(1.0)
        intervals = [e for e in events if e["event"] == "interval"]
        self.assertEqual([e["received"] for e in intervals], [1, 2])
        self.assertEqual(intervals[0]["group"], "239.1.1.1:5007")
        receiver._finish()
        self.assertEqual(clock.getDelayedCalls(), [])


class OptionsTests(SynchronousTestCase):
    """
    C{netservices mcast} options.
    """

    def parse(self, *argv):
        options = McastOptions()
        options.parseOptions(list(argv))
        return options.subOptions

    def test_send(self) -> None:
        """
        Defaults are bounded: 100 datagrams, 10 s, TTL 1.
        """
        options = self.parse("send", "--group", "239.1.1.1", "--group", "[ff15::1]:9")
        self.assertEqual((options["count"], options["duration"], options["ttl"]), (100, 10.0, 1))
        self.assertEqual(options["groups"], [Group("239.1.1.1", 5007), Group("ff15::1", 9)])
        self.assertEqual(options["pps"], 10)

    def test_errors(self) -> None:
        """
        Bad values are usage errors naming the option.
        """
        for argv, text in [
            (["send"], "--group"),
            (["send", "--group", "232.1.1.1"], "source-specific"),
            (["send", "--group", "239.1.1.1", "--ttl", "256"], "TTL"),
            (["send", "--group", "239.1.1.1", "--size", "10"], "--size"),
            (["recv", "--group", "239.1.1.1", "--interface", "nosuch0"], "no interface"),
            (["recv", "--group", "239.1.1.1", "--max-loss", "101"], "percentage"),
            (["ping", "--group", "239.1.1.1", "--key-file", "/nonexistent"], "--key-file"),
            (["recv", "--group", "239.1.1.1+21"], "igmp_max_memberships"),
        ]:
            with self.assertRaises(usage.UsageError, msg=argv) as caught:
                self.parse(*argv)
            self.assertIn(text, str(caught.exception), argv)
