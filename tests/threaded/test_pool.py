"""
Tests for L{netservices.threaded.pool}: with a synchronous fake pool and a
fake clock, nothing runs in a thread and nothing sleeps.
"""

from __future__ import annotations

import threading

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from netservices.testing import SynchronousThreadPool, ThreadedClock
from netservices.threaded.pool import (
    BoundedPool,
    DaemonThreadPool,
    HandlerError,
    LagMonitor,
    percentile,
)
from netservices.threaded.wire import BUSY, ERROR, OK, TIMEOUT


def outcomeOf(deferred):
    """
    @return: what C{deferred} fired with (it must have fired).
    """
    results = []

    def keep(result):
        results.append(result)
        return result

    deferred.addCallback(keep)
    assert results, "not fired"
    return results[0]


class PoolTestMixin:
    """
    Makes a L{BoundedPool} on fakes.
    """

    def makePool(self, threads=2, queue=3, timeout=0.0, stopTimeout=10.0, immediate=False):
        self.clock = ThreadedClock()
        self.fake = SynchronousThreadPool(immediate=immediate)
        self.events: list[dict] = []
        pool = BoundedPool(
            self.clock,
            threads,
            queue,
            timeout,
            stopTimeout,
            Logger(observer=self.events.append),
            self.fake,
        )
        pool.startService()
        return pool


class BoundedPoolTests(PoolTestMixin, SynchronousTestCase):
    """
    L{BoundedPool}: admission, outcomes, timeouts, statistics, stop.
    """

    def test_ok(self) -> None:
        """
        A call's result is an C{OK} outcome, with the thread that ran it and
        the clock's times of arrival, start and end.
        """
        pool = self.makePool()
        self.assertTrue(self.fake.started)
        started = []
        self.clock.advance(5)
        result = pool.submit(lambda a, b: a + b, ("x", "y"), started.append)
        self.clock.advance(2)
        self.fake.runNext()
        outcome = outcomeOf(result)
        self.assertEqual((outcome.kind, outcome.text), (OK, "xy"))
        self.assertEqual(outcome.thread, threading.current_thread().name)
        self.assertEqual((outcome.submitted, outcome.started, outcome.ended), (5, 7, 7))
        self.assertEqual((outcome.queueTime, outcome.handlerTime), (2, 0))
        self.assertEqual(started, [outcome])
        self.assertEqual(pool.counts["completed"], 1)
        self.assertEqual(pool.outstanding, 0)

    def test_resultsAsText(self) -> None:
        """
        Results that are not text become text: L{None} empty, bytes decoded,
        others through C{str}.
        """
        pool = self.makePool(immediate=True)
        texts = [
            outcomeOf(pool.submit(lambda v=value: v)).text
            for value in [None, b"caf\xc3\xa9", 42, "s"]
        ]
        self.assertEqual(texts, ["", "caf\u00e9", "42", "s"])

    def test_errors(self) -> None:
        """
        L{HandlerError} is C{ERROR bad-arguments}; any other exception is
        C{ERROR failed} with its type and message on one line.
        """
        pool = self.makePool(immediate=True)

        def refuse():
            raise HandlerError("takes SECONDS")

        def crash():
            raise ValueError("bad\nvalue")

        self.assertEqual(
            (outcomeOf(pool.submit(refuse)).kind, outcomeOf(pool.submit(refuse)).text),
            (ERROR, "bad-arguments takes SECONDS"),
        )
        self.assertEqual(outcomeOf(pool.submit(crash)).text, "failed ValueError: bad value")
        self.assertEqual(pool.counts["failed"], 3)

    def test_busyAtExactQueueBound(self) -> None:
        """
        With 2 threads and a queue of 3, five calls are admitted (two
        running, three waiting) and the sixth is C{BUSY queue-full} at once;
        when one ends, one more is admitted.
        """
        pool = self.makePool(threads=2, queue=3)
        admitted = [pool.submit(lambda i=i: str(i)) for i in range(5)]
        self.assertEqual([d.called for d in admitted], [False] * 5)
        self.assertEqual(
            {k: pool.statistics()[k] for k in ("busy", "queued")}, {"busy": 2, "queued": 3}
        )
        sixth = outcomeOf(pool.submit(lambda: "6"))
        self.assertEqual((sixth.kind, sixth.text), (BUSY, "queue-full"))
        self.assertEqual(pool.counts["rejected"], 1)
        self.fake.runNext()
        self.assertEqual(outcomeOf(admitted[0]).text, "0")
        seventh = pool.submit(lambda: "7")
        self.assertFalse(seventh.called)
        self.assertEqual(outcomeOf(pool.submit(lambda: "8")).kind, BUSY)
        self.fake.runAll()
        self.assertEqual(outcomeOf(seventh).text, "7")

    def test_queueZero(self) -> None:
        """
        With C{queue} 0 a call is admitted only when a thread is free.
        """
        pool = self.makePool(threads=1, queue=0)
        first = pool.submit(lambda: "1")
        self.assertEqual(outcomeOf(pool.submit(lambda: "2")).kind, BUSY)
        self.fake.runAll()
        self.assertEqual(outcomeOf(first).kind, OK)

    def test_timeoutWhileRunning(self) -> None:
        """
        A call still running at its timeout is answered C{TIMEOUT}; its
        thread is counted as stuck and keeps its place in the bound (no
        more calls are admitted than C{threads + queue}) until the call
        returns, which is then counted as finished late.
        """
        pool = self.makePool(threads=1, queue=0, timeout=1.0)
        seen = {}

        def hang():
            # The clock moves on while the "thread" is in the handler.
            self.clock.advance(5)
            seen["stuck"] = pool.stuck
            seen["result"] = outcomeOf(result)
            seen["other"] = outcomeOf(pool.submit(lambda: "other"))
            return "too late"

        result = pool.submit(hang)
        self.fake.runNext()
        self.assertEqual(seen["stuck"], 1)
        self.assertEqual(seen["result"].kind, TIMEOUT)
        self.assertEqual((seen["other"].kind, seen["other"].text), (BUSY, "queue-full"))
        self.assertEqual(pool.stuck, 0)
        self.assertEqual(pool.outstanding, 0)
        self.assertEqual(
            {k: pool.counts[k] for k in ("timed_out", "finished_late", "completed")},
            {"timed_out": 1, "finished_late": 1, "completed": 0},
        )
        self.assertEqual(outcomeOf(result).text, "")

    def test_timeoutWhileQueued(self) -> None:
        """
        A call still waiting for a thread at its timeout is answered
        C{TIMEOUT} and never run; it is not stuck.
        """
        pool = self.makePool(threads=1, queue=1, timeout=1.0)
        calls = []
        results = [pool.submit(lambda i=i: calls.append(i)) for i in range(2)]
        self.clock.advance(1)
        self.assertEqual([outcomeOf(r).kind for r in results], [TIMEOUT, TIMEOUT])
        self.assertEqual([outcomeOf(r).started for r in results], [None, None])
        self.assertEqual(pool.stuck, 0)
        self.fake.runAll()
        self.assertEqual(calls, [])
        self.assertEqual(pool.outstanding, 0)

    def test_noTimeoutWhenInTime(self) -> None:
        """
        A call that ends in time cancels its timer.
        """
        pool = self.makePool(timeout=1.0, immediate=True)
        self.assertEqual(outcomeOf(pool.submit(lambda: "x")).kind, OK)
        self.clock.advance(2)
        self.assertEqual(pool.counts["timed_out"], 0)

    def test_statistics(self) -> None:
        """
        The statistics count every outcome and show the pool's state.
        """
        pool = self.makePool(threads=1, queue=1, timeout=1.0)
        pool.submit(lambda: "a")
        pool.submit(lambda: "b")
        pool.submit(lambda: "c")
        stats = pool.statistics()
        self.assertEqual(
            {k: stats[k] for k in ("threads", "busy", "queued", "stuck", "rejected")},
            {"threads": 1, "busy": 1, "queued": 1, "stuck": 0, "rejected": 1},
        )
        self.fake.runNext()
        self.clock.advance(1)
        self.fake.runAll()
        stats = pool.statistics()
        self.assertEqual(
            {k: stats[k] for k in ("busy", "queued", "completed", "timed_out", "rejected")},
            {"busy": 0, "queued": 0, "completed": 1, "timed_out": 1, "rejected": 1},
        )
        self.assertIn("lag_p99_ms", stats)

    def test_stopWaitsForRequests(self) -> None:
        """
        Stopping refuses new calls with C{BUSY stopping}, waits for those in
        the pool, then stops the pool and logs the totals.
        """
        pool = self.makePool()
        running = pool.submit(lambda: "x")
        stopped = pool.stopService()
        self.assertFalse(stopped.called)
        self.assertEqual(outcomeOf(pool.submit(lambda: "y")).text, "stopping")
        self.fake.runNext()
        self.assertEqual(outcomeOf(running).kind, OK)
        self.assertTrue(stopped.called)
        self.assertTrue(self.fake.stopped)
        self.assertIn("requests completed=1", self.events[-1]["log_format"].format(**self.events[-1]))

    def test_stopDeadline(self) -> None:
        """
        Calls still running at the stop deadline are left behind (with a
        warning) and the pool is not joined, so a stuck thread cannot hang
        the stop.
        """
        pool = self.makePool(stopTimeout=3.0)
        pool.submit(lambda: "x")
        stopped = pool.stopService()
        self.clock.advance(2.9)
        self.assertFalse(stopped.called)
        self.clock.advance(0.1)
        self.assertTrue(stopped.called)
        self.assertFalse(self.fake.stopped)
        self.assertEqual([e["left"] for e in self.events if "left" in e], [1])

    def test_drainSharesTheDeadline(self) -> None:
        """
        L{BoundedPool.drain} refuses new requests and waits for those in
        the pool without stopping it; a stop after it waits only for what
        is left of the same deadline.
        """
        pool = self.makePool(stopTimeout=3.0)
        pool.submit(lambda: "x")
        drained = pool.drain()
        self.assertEqual(outcomeOf(pool.submit(lambda: "y")).text, "stopping")
        self.clock.advance(2.0)
        self.assertNoResult(drained)
        stopped = pool.stopService()
        self.clock.advance(1.0)
        self.successResultOf(drained)
        self.assertTrue(stopped.called)
        self.assertFalse(self.fake.stopped)

    def test_drainWaitsForRequests(self) -> None:
        """
        The drain fires when the last request in the pool has ended.
        """
        pool = self.makePool()
        running = pool.submit(lambda: "x")
        drained = pool.drain()
        self.assertNoResult(drained)
        self.fake.runNext()
        self.assertEqual(outcomeOf(running).kind, OK)
        self.successResultOf(drained)
        self.assertFalse(self.fake.stopped)

    def test_stopWithoutRequests(self) -> None:
        """
        With nothing in the pool, a stop is immediate.
        """
        pool = self.makePool()
        self.assertTrue(pool.stopService().called)
        self.assertTrue(self.fake.stopped)

    def test_daemonThreads(self) -> None:
        """
        The real pool's threads are daemon threads, named after the pool.
        """
        pool = DaemonThreadPool(0, 1, name="threaded")
        pool.start()
        self.addCleanup(pool.stop)
        names = []
        done = threading.Event()
        pool.callInThreadWithCallback(
            lambda ok, result: (names.append(result), done.set()),
            lambda: (threading.current_thread().daemon, threading.current_thread().name),
        )
        self.assertTrue(done.wait(10))
        self.assertEqual(names[0][0], True)
        self.assertIn("threaded", names[0][1])


class LagMonitorTests(SynchronousTestCase):
    """
    L{LagMonitor} measures how late its timer fires.
    """

    def test_lag(self) -> None:
        """
        Each tick records how late it ran; the summary gives p50, p99, max
        in milliseconds; C{reset} forgets the samples; C{stop} stops.
        """
        clock = Clock()
        monitor = LagMonitor(clock, 0.010)
        monitor.start()
        clock.advance(0.010)
        clock.advance(0.035)
        clock.advance(0.010)
        self.assertEqual([round(s, 6) for s in monitor.samples], [0.0, 0.025, 0.0])
        summary = monitor.summary()
        self.assertEqual(
            summary,
            {"lag_p50_ms": 0.0, "lag_p99_ms": 25.0, "lag_max_ms": 25.0, "lag_samples": 3},
        )
        monitor.reset()
        self.assertEqual(monitor.summary()["lag_samples"], 0)
        monitor.stop()
        self.assertEqual(clock.getDelayedCalls(), [])


class PercentileTests(SynchronousTestCase):
    """
    L{percentile} is the nearest-rank percentile.
    """

    def test_percentile(self) -> None:
        """
        p50 of 1..100 is 50, p99 is 99, p100 is 100; nothing gives 0.
        """
        values = list(range(100, 0, -1))
        self.assertEqual(
            [percentile(values, p) for p in (0.5, 0.9, 0.99, 1.0)], [50, 90, 99, 100]
        )
        self.assertEqual(percentile([7], 0.99), 7)
        self.assertEqual(percentile([], 0.5), 0.0)
