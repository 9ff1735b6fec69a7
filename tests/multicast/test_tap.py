"""
Tests for L{netservices.multicast.tap}: the node's metrics, fed through the
protocol with a fake transport.
"""

from twisted.trial.unittest import SynchronousTestCase

from netservices._common.datagram import DatagramInfo
from netservices._common.metrics import ServiceMetrics
from netservices.multicast import wire
from netservices.multicast.tap import watchNode
from tests.multicast.test_protocol import GROUP_INFO, node

OTHER_GROUP = DatagramInfo("239.1.1.2", "10.0.0.2", 1, 1)


class NodeMetricsTests(SynchronousTestCase):
    """
    L{watchNode} exposes datagrams, bytes and losses per group, summed over
    the senders.
    """

    def test_perGroup(self) -> None:
        """
        Two senders to one group and one to another: received, bytes and
        lost by group; sequence numbers skipped, and those after the last
        one received that the final record announces, are lost.
        """
        protocol, state, _ = node()
        metrics = ServiceMetrics("multicast")
        watchNode(metrics, state)

        def send(source, sender, sequence, info, kind=wire.DATA):
            data = wire.encode(kind, sender, 1, sequence, 0, size=100)
            protocol.datagramReceivedWithInfo(data, (source, 4000), info)

        for sequence in [0, 1, 3]:
            send("10.0.0.1", 1, sequence, GROUP_INFO)
        send("10.0.0.3", 2, 0, GROUP_INFO)
        send("10.0.0.3", 2, 0, OTHER_GROUP)
        send("10.0.0.3", 2, 3, OTHER_GROUP, wire.FINAL)
        self.assertEqual(
            metrics.values("multicast_datagrams_received"),
            {("239.1.1.1", "5007"): 4, ("239.1.1.2", "5007"): 2},
        )
        self.assertEqual(
            metrics.values("multicast_bytes_received"),
            {("239.1.1.1", "5007"): 400, ("239.1.1.2", "5007"): 200},
        )
        self.assertEqual(
            metrics.values("multicast_datagrams_lost"),
            {("239.1.1.1", "5007"): 1, ("239.1.1.2", "5007"): 2},
        )
        self.assertEqual(metrics.values("multicast_datagrams"), {("data",): 5, ("final",): 1})
        # A late arrival fills its gap.
        send("10.0.0.1", 1, 2, GROUP_INFO)
        self.assertEqual(metrics.values("multicast_datagrams_lost")[("239.1.1.1", "5007")], 0)
