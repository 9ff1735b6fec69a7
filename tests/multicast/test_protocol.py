"""
Tests for L{netservices.multicast.protocol}: the node, with a fake
transport and clock.
"""

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from netservices._common.datagram import DatagramInfo
from netservices._common.ratelimit import RateLimits
from netservices._common.udp import DatagramGuard
from netservices.multicast import protocol as protocol_module
from netservices.multicast import wire
from netservices.multicast.protocol import MulticastNodeProtocol, NodeState

KEY = b"k" * 32
GROUP_INFO = DatagramInfo("239.1.1.1", "10.0.0.2", 1, 1)


class FakeTransport:
    """
    Records writes.
    """

    def __init__(self) -> None:
        self.written: list = []

    def write(self, data, addr) -> None:
        self.written.append((data, addr))


def node(key=None, burst=40.0):
    clock = Clock()
    guard = DatagramGuard(RateLimits(rate=1.0, burst=burst), clock, Logger())
    state = NodeState(guard, wire.Codec(key), Logger(), quiet=True)
    protocol = MulticastNodeProtocol(state, 5007)
    protocol.transport = FakeTransport()
    return protocol, state, clock


class NodeTests(SynchronousTestCase):
    """
    Counting and probe answers.
    """

    def test_counts(self) -> None:
        """
        Every datagram is counted per (source, group, port) and by kind;
        foreign ones too.
        """
        protocol, state, _ = node()
        protocol.datagramReceivedWithInfo(wire.encode(wire.DATA, 1, 2, 0, 0, size=100), ("10.0.0.1", 4000), GROUP_INFO)
        protocol.datagramReceivedWithInfo(b"hello", ("10.0.0.1", 4000), GROUP_INFO)
        protocol.datagramReceived(b"hello", ("10.0.0.3", 4000))
        self.assertEqual(state.counts[("10.0.0.1", "239.1.1.1", 5007)], [2, 105])
        self.assertEqual(state.counts[("10.0.0.3", "?", 5007)], [1, 5])
        self.assertEqual(dict(state.totals), {"data": 1, "foreign": 2})
        self.assertEqual(protocol.transport.written, [])

    def test_tableBounded(self) -> None:
        """
        Counters are kept for at most C{MAX_TABLE} sources: datagrams of
        further (possibly forged) sources are refused and counted, so memory
        does not grow with them.
        """
        protocol, state, _ = node()
        self.patch(protocol_module, "MAX_TABLE", 3)
        for i in range(5):
            protocol.datagramReceivedWithInfo(b"hello", (f"10.0.0.{i + 1}", 4000), GROUP_INFO)
        self.assertEqual(len(state.counts), 3)
        self.assertEqual(state.totals["table-full"], 2)
        self.assertEqual(state.guard.refusals.counts["table-full"], 2)

    def test_probeAnswered(self) -> None:
        """
        A probe gets one unicast reply to its source, no larger than the
        probe, naming the probe's session and sequence.
        """
        protocol, state, _ = node()
        probe = wire.encode(wire.PROBE, 7, 8, 9, 10, size=wire.HEADER.size)
        protocol.datagramReceivedWithInfo(probe, ("10.0.0.1", 4000), GROUP_INFO)
        [(reply, addr)] = protocol.transport.written
        self.assertEqual(addr, ("10.0.0.1", 4000))
        self.assertLessEqual(len(reply), len(probe))
        message = wire.parse(reply)
        self.assertEqual(
            (message.kind, message.sender, message.session, message.sequence, message.sent),
            (wire.REPLY, state.id, 8, 9, 10),
        )

    def test_replyNeverLarger(self) -> None:
        """
        Keyed or not, the smallest probe there can be gets a reply of at
        most its own size (a reply is a bare header, plus a tag when keyed,
        which the probe had too); a probe without the tag a keyed node
        needs is refused, not answered.
        """
        for key in (None, KEY):
            protocol, state, _ = node(key)
            probe = wire.encode(wire.PROBE, 7, 8, 9, 10, key=key)
            self.assertEqual(len(probe), wire.HEADER.size + (wire.TAG_SIZE if key else 0))
            protocol.datagramReceivedWithInfo(probe, ("10.0.0.1", 4000), GROUP_INFO)
            [(reply, _)] = protocol.transport.written
            self.assertLessEqual(len(reply), len(probe))
        protocol.datagramReceivedWithInfo(
            wire.encode(wire.PROBE, 7, 8, 11, 10), ("10.0.0.1", 4000), GROUP_INFO
        )
        self.assertEqual(len(protocol.transport.written), 1)
        self.assertEqual(state.guard.refusals.counts["unauthenticated"], 1)

    def test_probeRateLimited(self) -> None:
        """
        Replies to one source stop after the burst, and resume with time.
        """
        protocol, state, clock = node(burst=2)
        for n in range(5):
            protocol.datagramReceivedWithInfo(
                wire.encode(wire.PROBE, 7, 8, n, 0, size=100), ("10.0.0.1", 4000), GROUP_INFO
            )
        self.assertEqual(len(protocol.transport.written), 2)
        self.assertEqual(state.guard.refusals.counts["rate-limit-prefix"], 3)
        clock.advance(1)
        protocol.datagramReceivedWithInfo(
            wire.encode(wire.PROBE, 7, 8, 9, 0, size=100), ("10.0.0.1", 4000), GROUP_INFO
        )
        self.assertEqual(len(protocol.transport.written), 3)

    def test_probePolicy(self) -> None:
        """
        Probes from reserved ports, our own ports or impossible sources,
        and truncated ones, are not answered.
        """
        protocol, state, _ = node()
        state.guard.ownPorts.add(5007)
        probe = wire.encode(wire.PROBE, 7, 8, 9, 0, size=100)
        for addr in [("10.0.0.1", 53), ("10.0.0.1", 5007), ("0.0.0.0", 4000), ("239.1.1.1", 4000)]:
            protocol.datagramReceivedWithInfo(probe, addr, GROUP_INFO)
        protocol.datagramReceivedWithInfo(
            probe, ("10.0.0.1", 4000), DatagramInfo("239.1.1.1", None, 1, 1, truncated=True)
        )
        self.assertEqual(protocol.transport.written, [])
        self.assertEqual(sum(state.guard.refusals.counts.values()), 5)

    def test_forgedAndReplayedRefused(self) -> None:
        """
        A keyed node counts forged and replayed datagrams as refusals,
        not as traffic.
        """
        protocol, state, _ = node(KEY)
        good = wire.encode(wire.DATA, 1, 2, 0, 0, key=KEY, size=100)
        forged = wire.encode(wire.DATA, 1, 2, 1, 0, key=b"x" * 32, size=100)
        protocol.datagramReceivedWithInfo(good, ("10.0.0.1", 4000), GROUP_INFO)
        protocol.datagramReceivedWithInfo(good, ("10.0.0.1", 4000), GROUP_INFO)
        protocol.datagramReceivedWithInfo(forged, ("10.0.0.1", 4000), GROUP_INFO)
        self.assertEqual(dict(state.totals), {"data": 1, "replayed": 1, "forged": 1})
        self.assertEqual(state.counts[("10.0.0.1", "239.1.1.1", 5007)], [1, 100])
