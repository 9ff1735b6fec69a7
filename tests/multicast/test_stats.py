"""
Tests for L{netservices.multicast.stats}.
"""

from twisted.trial.unittest import SynchronousTestCase

from netservices.multicast.stats import StreamStats


class StreamStatsTests(SynchronousTestCase):
    """
    Loss, gaps, duplicates, reordering, jitter, delay, rate.
    """

    def test_inOrder(self) -> None:
        """
        Consecutive datagrams: nothing lost; rate from first to last.
        """
        s = StreamStats(joinedAt=9.5)
        for n in range(11):
            self.assertIsNone(s.add(n, 100, 10 + n / 10, 10 + n / 10))
        self.assertEqual((s.received, s.bytes, s.lost, s.gaps), (11, 1100, 0, []))
        self.assertAlmostEqual(s.rate[0], 10.0)
        self.assertAlmostEqual(s.firstDelay, 0.5)
        self.assertEqual(s.jitter, 0.0)

    def test_gapsAndFinal(self) -> None:
        """
        Missing numbers are gap ranges; the final count adds the tail.
        """
        s = StreamStats()
        for n in [0, 1, 4, 5, 9]:
            s.add(n, 10, 0, 0)
        self.assertEqual(s.gaps, [[2, 3], [6, 8]])
        s.finish(12)
        self.assertEqual(s.gaps, [[2, 3], [6, 8], [10, 11]])
        self.assertEqual((s.lost, s.expected, s.received), (7, 12, 5))
        self.assertAlmostEqual(s.lossRatio, 7 / 12)
        s.finish(12)
        self.assertEqual(s.lost, 7)

    def test_reorderAndDuplicates(self) -> None:
        """
        A late datagram fills its gap (reordered); a repeat is a duplicate
        and not counted as received.
        """
        s = StreamStats()
        self.assertIsNone(s.add(0, 1, 0, 0))
        self.assertEqual(s.add(5, 1, 0, 0), "new-gap")
        self.assertEqual(s.add(3, 1, 0, 0), "reordered")
        self.assertEqual(s.gaps, [[1, 2], [4, 4]])
        self.assertEqual(s.add(3, 1, 0, 0), "duplicate")
        self.assertEqual(s.add(5, 1, 0, 0), "duplicate")
        self.assertEqual(s.add(1, 1, 0, 0), "reordered")
        self.assertEqual(s.add(2, 1, 0, 0), "reordered")
        self.assertEqual(s.add(4, 1, 0, 0), "reordered")
        self.assertEqual((s.gaps, s.lost, s.received, s.duplicates, s.reordered), ([], 0, 6, 2, 4))

    def test_jitter(self) -> None:
        """
        RFC 3550: J += (|D| - J) / 16 for each transit-time difference D.
        """
        s = StreamStats()
        s.add(0, 1, 0.0, 1.0)
        s.add(1, 1, 1.0, 2.016)
        self.assertAlmostEqual(s.jitter, 0.001)
        s.add(2, 1, 2.0, 3.0)
        self.assertAlmostEqual(s.jitter, 0.001 + (0.016 - 0.001) / 16)

    def test_summary(self) -> None:
        """
        The summary is JSON-ready.
        """
        s = StreamStats(joinedAt=0.0)
        s.add(0, 100, 1.0, 1.0)
        s.add(2, 100, 1.1, 1.1)
        summary = s.summary()
        self.assertEqual(summary["gaps"], [[1, 1]])
        self.assertEqual(summary["lost"], 1)
        self.assertEqual(summary["first_delay_ms"], 1000.0)
