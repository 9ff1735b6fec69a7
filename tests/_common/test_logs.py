"""
Tests for L{netservices._common.logs}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from netservices._common.logs import RefusalLog


class RefusalLogTests(SynchronousTestCase):
    """
    L{RefusalLog}, with a L{Clock} and a logger whose events are kept.
    """

    def setUp(self):
        self.clock = Clock()
        self.events = EventLoggingObserver()
        self.refusals = RefusalLog(
            Logger(namespace="test", observer=self.events),
            self.clock,
            "datagram",
            interval=1.0,
        )

    def test_countsExact(self):
        """
        Every refusal is counted, per reason, whether logged or not.
        """
        for _ in range(1000):
            self.refusals.refuse("a", "192.0.2.1:5")
        for _ in range(7):
            self.refusals.refuse("b", "192.0.2.1:5")
        self.assertEqual(dict(self.refusals.counts), {"a": 1000, "b": 7})

    def test_firstLogged(self):
        """
        The first refusal is logged as a warning with what, who, why, the
        running total and any extra fields.
        """
        self.refusals.refuse("truncated", "[2001:db8::1]:4000", size=99)
        [event] = self.events
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(
            formatEvent(event), "refused datagram from [2001:db8::1]:4000: truncated"
        )
        self.assertEqual(event["reason"], "truncated")
        self.assertEqual(event["suppressed"], 0)
        self.assertEqual(event["total"], 1)
        self.assertEqual(event["size"], 99)

    def test_oncePerInterval(self):
        """
        Within one interval, a reason is logged once, however often it
        happens; other reasons are logged independently.
        """
        for _ in range(100):
            self.refusals.refuse("a", "x")
        self.clock.advance(0.5)
        for _ in range(100):
            self.refusals.refuse("a", "x")
            self.refusals.refuse("b", "y")
        self.clock.advance(0.499)
        self.refusals.refuse("a", "x")
        self.assertEqual([e["reason"] for e in self.events], ["a", "b"])

    def test_suppressedReported(self):
        """
        The first line after the interval carries C{suppressed}: the number
        of refusals of that reason not logged since the last line; the
        count then starts again.
        """
        for _ in range(10):
            self.refusals.refuse("a", "x")
        self.clock.advance(0.5)
        self.refusals.refuse("a", "x")
        self.clock.advance(0.5)
        self.refusals.refuse("a", "x")
        self.assertEqual(len(self.events), 2)
        self.assertEqual(self.events[1]["suppressed"], 10)
        self.assertEqual(self.events[1]["total"], 12)
        self.assertEqual(
            formatEvent(self.events[1]),
            "refused datagram from x: a (10 more since the last line)",
        )
        self.clock.advance(1.0)
        self.refusals.refuse("a", "x")
        self.assertEqual(len(self.events), 3)
        self.assertEqual(self.events[2]["suppressed"], 0)
        self.assertEqual(formatEvent(self.events[2]), "refused datagram from x: a")

    def test_intervalFromLastLine(self):
        """
        The interval is measured from the last line logged, not from the
        last refusal: a steady stream is still logged once per interval.
        """
        for _ in range(40):
            self.refusals.refuse("a", "x")
            self.clock.advance(0.25)
        self.assertEqual(len(self.events), 10)
        self.assertEqual(
            [e["suppressed"] for e in self.events], [0] + [3] * 9
        )

    def test_logTotals(self):
        """
        L{RefusalLog.logTotals} logs the exact counts, sorted by reason,
        also of refusals that were never logged one by one.
        """
        for _ in range(1234):
            self.refusals.refuse("reserved-source-port", "x")
        for _ in range(3):
            self.refusals.refuse("nfs-source-port", "x")
        self.refusals.logTotals()
        event = self.events[-1]
        self.assertEqual(event["log_level"], LogLevel.info)
        self.assertEqual(
            formatEvent(event),
            "datagram refusals: nfs-source-port=3, reserved-source-port=1234",
        )
        self.assertEqual(
            event["refusals"], {"nfs-source-port": 3, "reserved-source-port": 1234}
        )

    def test_logTotalsNone(self):
        """
        Without refusals, the totals say so.
        """
        self.refusals.logTotals()
        [event] = self.events
        self.assertEqual(formatEvent(event), "datagram refusals: none")
        self.assertEqual(event["refusals"], {})
