# -*- test-case-name: tests.threaded.test_pool -*-
"""
The bounded pool: blocking calls run on a dedicated
L{twisted.python.threadpool.ThreadPool} through C{deferToThreadPool}, with
what Twisted's pool does not have.

 - A bound on waiting requests.  Twisted's queue is unbounded; here a
   request is admitted only while fewer than C{threads + queue} are in the
   pool (running, waiting, or stuck), else it is answered C{BUSY
   queue-full} at once.
 - A timeout per request, counted from its arrival.  A request still
   waiting when it expires is answered C{TIMEOUT} and never run.  One that
   is running is answered C{TIMEOUT} too, but a thread cannot be killed:
   it is counted as I{stuck} until the call returns, and it keeps its
   place in the bound, so the pool never grows past C{threads} because of
   it.
 - Statistics, and the reactor's lag: a 10 ms timer records how late it
   fires (L{LagMonitor}), which shows whether anything blocks the reactor
   thread.
 - A graceful stop: new requests are answered C{BUSY stopping}; running
   and waiting ones may finish until the stop deadline; then the threads
   are joined.  Threads still stuck at the deadline are left behind (they
   are daemon threads, so they do not hold the process).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Callable, Sequence

import attrs
from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from netservices.threaded.wire import BUSY, ERROR, OK, TIMEOUT

#: Seconds between the lag monitor's ticks.
LAG_INTERVAL = 0.010

#: Lag samples kept (10 s of them).
LAG_SAMPLES = 1000


class HandlerError(Exception):
    """
    A handler refuses its arguments: answered C{ERROR bad-arguments} with
    the message.
    """


def percentile(values: Sequence[float], fraction: float) -> float:
    """
    @return: the nearest-rank percentile of C{values} (C{fraction} 0.99 for
        p99); 0 for no values.
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


@attrs.define
class Outcome:
    """
    How a request ended.

    @ivar kind: C{OK}, C{ERROR}, C{BUSY} or C{TIMEOUT}.
    @ivar text: the result (C{OK}), or the reason and detail.
    @ivar thread: the name of the thread that ran it ("" if none did).
    @ivar submitted: when it arrived (the clock's seconds).
    @ivar started: when a thread started it (L{None} if none did yet).
    @ivar ended: when the call returned (L{None} if it has not).
    """

    kind: str
    text: str = ""
    thread: str = ""
    submitted: float = 0.0
    started: float | None = None
    ended: float | None = None

    @property
    def queueTime(self) -> float | None:
        """
        Seconds spent waiting for a thread.
        """
        return None if self.started is None else self.started - self.submitted

    @property
    def handlerTime(self) -> float | None:
        """
        Seconds spent in the handler.
        """
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


def _daemonThread(*args, **kwargs) -> threading.Thread:
    return threading.Thread(*args, daemon=True, **kwargs)


class DaemonThreadPool(ThreadPool):
    """
    A L{ThreadPool} of daemon threads: a thread stuck in a handler cannot
    keep the process from exiting.
    """

    threadFactory = staticmethod(_daemonThread)


class LagMonitor:
    """
    Measures the reactor's lag: a timer due every C{interval} seconds
    records how late it runs.
    """

    def __init__(self, clock, interval: float = LAG_INTERVAL, keep: int = LAG_SAMPLES) -> None:
        self.clock = clock
        self.interval = interval
        self.samples: deque[float] = deque(maxlen=keep)
        self._due: float | None = None
        self._call = None

    def start(self) -> None:
        """
        Start measuring.
        """
        self._due = self.clock.seconds() + self.interval
        self._call = self.clock.callLater(self.interval, self._tick)

    def stop(self) -> None:
        """
        Stop measuring.
        """
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _tick(self) -> None:
        now = self.clock.seconds()
        self.samples.append(max(0.0, now - self._due))
        self._due = now + self.interval
        self._call = self.clock.callLater(self.interval, self._tick)

    def reset(self) -> None:
        """
        Forget the samples so far.
        """
        self.samples.clear()

    def summary(self) -> dict[str, float]:
        """
        @return: the lag's p50, p99 and maximum in milliseconds over the
            samples kept, and how many there are.
        """
        samples = list(self.samples)
        return {
            "lag_p50_ms": round(percentile(samples, 0.50) * 1000, 3),
            "lag_p99_ms": round(percentile(samples, 0.99) * 1000, 3),
            "lag_max_ms": round(max(samples, default=0.0) * 1000, 3),
            "lag_samples": len(samples),
        }


class _Call:
    """
    One admitted request's state, shared with its worker thread under the
    pool's lock: C{"queued"}, C{"running"}, C{"expired"} (answered TIMEOUT)
    or C{"done"}.
    """

    __slots__ = ("state", "outcome", "result", "timer", "onStart")

    def __init__(self, outcome: Outcome, onStart) -> None:
        self.state = "queued"
        self.outcome = outcome
        self.result: Deferred = Deferred()
        self.timer = None
        self.onStart = onStart


class BoundedPool(service.Service):
    """
    Runs blocking calls on a thread pool with a bounded queue, timeouts,
    statistics and a graceful stop (see the module's documentation).

    @ivar counts: C{completed} (answered OK), C{failed} (ERROR from the
        handler), C{rejected} (BUSY), C{timed_out} (TIMEOUT), and
        C{finished_late} (calls that returned after their TIMEOUT).
    @ivar outstanding: calls in the pool: running, waiting or stuck.
    @ivar stuck: calls running past their timeout.
    """

    def __init__(
        self,
        reactor,
        threads: int,
        queue: int,
        timeout: float = 0.0,
        stopTimeout: float = 10.0,
        log: Logger | None = None,
        pool=None,
        lagInterval: float = LAG_INTERVAL,
    ) -> None:
        """
        @param reactor: for time (C{callLater}, C{seconds}) and
            C{callFromThread}.
        @param threads: the pool's threads.
        @param queue: requests that may wait for a thread.
        @param timeout: seconds from arrival to TIMEOUT (0: none).
        @param stopTimeout: seconds a stop waits for requests to finish.
        @param pool: the thread pool (by default a L{DaemonThreadPool} of
            C{threads} threads); anything with C{start}, C{stop} and
            C{callInThreadWithCallback}.
        """
        self.reactor = reactor
        self.threads = threads
        self.queue = queue
        self.timeout = timeout
        self.stopTimeout = stopTimeout
        self.log = log or Logger(namespace="netservices.threaded")
        self.pool = (
            pool
            if pool is not None
            else DaemonThreadPool(0, threads, name="threaded")
        )
        self.lag = LagMonitor(reactor, lagInterval)
        self.counts = {
            "completed": 0,
            "failed": 0,
            "rejected": 0,
            "timed_out": 0,
            "finished_late": 0,
        }
        self.outstanding = 0
        self.stuck = 0
        self.stopping = False
        self._lock = threading.Lock()
        self._drainWaiters: list[Deferred] = []
        self._drainDeadline = None
        self._drainExpired = False

    def startService(self) -> None:
        super().startService()
        self.stopping = False
        self._drainExpired = False
        self.pool.start()
        self.lag.start()

    def statistics(self) -> dict[str, float]:
        """
        @return: the pool's state and counters, and the reactor's lag.
        """
        busy = min(self.outstanding, self.threads)
        return {
            "threads": self.threads,
            "busy": busy,
            "queued": self.outstanding - busy,
            "stuck": self.stuck,
            **self.counts,
            **self.lag.summary(),
        }

    def submit(
        self,
        function: Callable[..., str],
        args: Sequence[str] = (),
        onStart: Callable[[Outcome], object] = lambda outcome: None,
    ) -> Deferred:
        """
        Run C{function(*args)} on a thread, if there is room.

        @param function: returns the result's text, or raises
            L{HandlerError} for arguments it refuses.
        @param onStart: called in the reactor thread with the outcome so far
            (C{thread}, C{submitted}, C{started} set) when a thread starts
            the call.
        @return: a L{Deferred} that fires with an L{Outcome}, never fails.
        """
        now = self.reactor.seconds()
        if self.stopping:
            self.counts["rejected"] += 1
            return succeed(Outcome(BUSY, "stopping", submitted=now))
        if self.outstanding >= self.threads + self.queue:
            self.counts["rejected"] += 1
            return succeed(Outcome(BUSY, "queue-full", submitted=now))
        self.outstanding += 1
        call = _Call(Outcome(OK, submitted=now), onStart)
        if self.timeout > 0:
            call.timer = self.reactor.callLater(self.timeout, self._expire, call)
        done = deferToThreadPool(self.reactor, self.pool, self._work, call, function, args)
        done.addCallback(self._finished, call)
        return call.result

    def _work(self, call: _Call, function, args) -> tuple | None:
        """
        In a worker thread: run the call unless it expired while waiting.

        @return: C{(kind, text, thread, started, ended)}, or L{None} if it
            was not run.
        """
        with self._lock:
            if call.state == "expired":
                return None
            call.state = "running"
        thread = threading.current_thread().name
        started = self.reactor.seconds()
        self.reactor.callFromThread(self._started, call, thread, started)
        try:
            result = function(*args)
            kind, text = OK, result if isinstance(result, str) else _asText(result)
        except HandlerError as e:
            kind, text = ERROR, f"bad-arguments {_oneLine(str(e))}"
        except Exception as e:
            kind, text = ERROR, f"failed {type(e).__name__}: {_oneLine(str(e))}"
        return kind, text, thread, started, self.reactor.seconds()

    def _started(self, call: _Call, thread: str, started: float) -> None:
        if call.outcome.started is None:
            call.outcome.thread, call.outcome.started = thread, started
        if call.state != "expired":
            call.onStart(call.outcome)

    def _expire(self, call: _Call) -> None:
        call.timer = None
        with self._lock:
            running = call.state == "running"
            call.state = "expired"
        if running:
            self.stuck += 1
        self.counts["timed_out"] += 1
        call.outcome.kind = TIMEOUT
        call.result.callback(call.outcome)

    def _finished(self, ran: tuple | None, call: _Call) -> None:
        self.outstanding -= 1
        if call.timer is not None and call.timer.active():
            call.timer.cancel()
        call.timer = None
        with self._lock:
            expired = call.state == "expired"
            call.state = "done"
        if ran is not None:
            kind, text, thread, started, ended = ran
            call.outcome.thread, call.outcome.started, call.outcome.ended = (
                thread,
                started,
                ended,
            )
        if expired:
            if ran is not None:
                self.stuck -= 1
                self.counts["finished_late"] += 1
                self.log.info(
                    "a call that timed out returned after {handler_ms:.1f} ms in"
                    " the handler on {thread}",
                    thread=call.outcome.thread,
                    handler_ms=(call.outcome.handlerTime or 0) * 1000,
                )
        else:
            call.outcome.kind, call.outcome.text = kind, text
            self.counts["completed" if kind == OK else "failed"] += 1
            call.result.callback(call.outcome)
        self._checkDrained()

    def _checkDrained(self) -> None:
        if not self._drainWaiters:
            return
        if self.outstanding == self.stuck or self._drainExpired:
            if self._drainDeadline is not None and self._drainDeadline.active():
                self._drainDeadline.cancel()
            self._drainDeadline = None
            waiters, self._drainWaiters = self._drainWaiters, []
            for waiter in waiters:
                waiter.callback(None)

    def drain(self) -> Deferred:
        """
        Refuse new requests (C{BUSY stopping}) and wait for those in the
        pool, stuck ones excepted, for at most C{stopTimeout} seconds from
        the first call (a later L{stopService} shares that deadline).

        @return: a L{Deferred} firing when they have ended or the deadline
            has passed.
        """
        self.stopping = True
        waiter: Deferred = Deferred()
        self._drainWaiters.append(waiter)
        if self._drainDeadline is None and not self._drainExpired:
            self._drainDeadline = self.reactor.callLater(self.stopTimeout, self._deadline)
        self._checkDrained()
        return waiter

    def stopService(self) -> Deferred:
        """
        Refuse new requests, wait up to C{stopTimeout} seconds for those in
        the pool (stuck ones excepted; see L{drain}), then join the threads.
        """
        super().stopService()
        self.lag.stop()

        def stopPool(_):
            left = self.outstanding
            if left:
                self.log.warn(
                    "stopping with {left} requests still running ({stuck} stuck);"
                    " their threads are left behind",
                    left=left,
                    stuck=self.stuck,
                )
            else:
                self.pool.stop()
            self.log.info(
                "requests completed={completed} failed={failed} rejected={rejected}"
                " timed out={timed_out}",
                **self.counts,
            )

        return self.drain().addCallback(stopPool)

    def _deadline(self) -> None:
        self._drainDeadline = None
        self._drainExpired = True
        self._checkDrained()


def _oneLine(text: str) -> str:
    return " ".join(text.split())


def _asText(result: object) -> str:
    if result is None:
        return ""
    if isinstance(result, (bytes, bytearray)):
        return bytes(result).decode("utf-8", "replace")
    return str(result)
