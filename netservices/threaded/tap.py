# -*- test-case-name: tests.threaded.test_integration -*-
"""
twistd glue for threaded.
"""

from __future__ import annotations

from twisted.application import service
from twisted.logger import Logger
from twisted.python import usage

from netservices._common.listen import (
    ConnectionLimitOptions,
    ListenOptions,
    helpText,
    nonNegativeFloat,
    numberOption,
    positiveInt,
)
from netservices._common.logs import RefusalLog
from netservices._common.metrics import metricsOf, watchRefusals
from netservices._common.operations import shutdownTimeout
from netservices._common.service import CallOnStop, addStreamListeners
from netservices.threaded.handlers import builtinHandlers, loadHandler
from netservices.threaded.pool import BoundedPool
from netservices.threaded.protocol import MAX_IN_FLIGHT, ThreadedFactory
from netservices.threaded.wire import MAX_LINE

THREADED_PORT = 7878

#: Not L{nonNegativeInt}, whose help says that 0 means no limit.
queueLength = numberOption(int, lambda n: n >= 0, "an integer of at least 0")

#: At least 64 bytes: room for an id, a name and a few arguments.
lineLength = numberOption(int, lambda n: 64 <= n <= 1 << 24, "an integer from 64 to 16777216")


class ThreadedOptions(ListenOptions, ConnectionLimitOptions):
    """
    Options of C{twistd netservices threaded}.
    """

    synopsis = "[options]"
    longdesc = (
        "Run blocking Python functions for network clients on a bounded thread"
        " pool. Line protocol: 'ID HANDLER [ARG ...]' in, 'ID OK TEXT', 'ID ERROR"
        " REASON [DETAIL]', 'ID BUSY REASON' or 'ID TIMEOUT' out, in the order"
        " requests finish (see the README). Built-in handlers: echo, sleep"
        " SECONDS, sha256 TEXT [REPEAT], resolve NAME, stats [reset];"
        " --handler adds yours."
    )
    defaultListen = f"tcp:{THREADED_PORT}:interface=127.0.0.1"
    portTemplate = "tcp:{port}:interface=127.0.0.1"
    eagerWrites = True

    optParameters = [
        ["threads", None, 10, "Threads in the pool.", positiveInt],
        [
            "queue",
            None,
            100,
            "Requests that may wait for a thread; beyond, BUSY queue-full at once"
            " (0: only when a thread is free).",
            queueLength,
        ],
        [
            "request-timeout",
            None,
            30.0,
            "Seconds from a request's arrival to TIMEOUT (0: none). A thread still"
            " running it is counted as stuck until it returns; the pool does not"
            " grow.",
            nonNegativeFloat,
        ],
        [
            "max-in-flight",
            None,
            MAX_IN_FLIGHT,
            "Requests one connection may have in the pool at once; beyond, BUSY"
            " client-limit.",
            positiveInt,
        ],
        [
            "max-line",
            None,
            MAX_LINE,
            "Longest request line in bytes; longer ones get ERROR line-too-long.",
            lineLength,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["handlers"] = {}

    @helpText
    def opt_handler(self, spec: str) -> None:
        """
        NAME=package.module:function: serve this blocking callable as handler
        NAME (arguments as strings, result as text); repeatable.  The module
        is imported from the Python path (set PYTHONPATH).
        """
        try:
            handler = loadHandler(spec)
        except ValueError as e:
            raise usage.UsageError(f"--handler {e}")
        if handler.name in self["handlers"]:
            raise usage.UsageError(f"--handler {handler.name!r} is given twice")
        self["handlers"][handler.name] = handler


def makeService(options: ThreadedOptions, reactor=None) -> service.MultiService:
    """
    @return: the threaded service.
    """
    reactor = reactor or options.getReactor()
    log = Logger(namespace="netservices.threaded")
    top = service.MultiService()
    # Added first, stopped last: listeners stop accepting before the pool
    # drains.
    pool = BoundedPool(
        reactor,
        options["threads"],
        options["queue"],
        options["request-timeout"],
        shutdownTimeout(options),
        log,
    )
    pool.setServiceParent(top)
    handlers = {**builtinHandlers(pool), **options["handlers"]}
    requestRefusals = RefusalLog(log, reactor, "request")
    factory = ThreadedFactory(
        pool,
        handlers,
        log,
        requestRefusals,
        options["max-in-flight"],
        options["max-line"],
    )
    connectionRefusals = RefusalLog(log, reactor, "connection")
    addStreamListeners(
        top,
        options["listen"],
        options["endpoints"],
        factory,
        options,
        reactor,
        connectionRefusals,
    )
    for handler in options["handlers"].values():
        log.info(
            "handler {name} is {origin}", name=handler.name, origin=handler.origin
        )

    def logTotals() -> None:
        log.info("connections={connections}", **factory.counts)
        connectionRefusals.logTotals()
        requestRefusals.logTotals()

    CallOnStop(logTotals).setServiceParent(top)
    watchPool(metricsOf(options), pool)
    watchRefusals(
        metricsOf(options),
        "requests_refused",
        "Requests answered ERROR or BUSY without running, by reason.",
        requestRefusals,
    )
    top.pool = pool
    top.factory = factory
    return top


def watchPool(metrics, pool: BoundedPool) -> None:
    """
    Add the metrics of the pool: requests by outcome, the threads' state,
    and the reactor's lag.
    """
    metrics.counter(
        "threaded_requests",
        "Requests that ended, by outcome: completed (OK), failed (ERROR from"
        " the handler), rejected (BUSY), timed_out (TIMEOUT), finished_late"
        " (returned after their TIMEOUT).",
        lambda: pool.counts,
        ("outcome",),
    )
    metrics.gauge("threaded_threads", "Threads in the pool.", lambda: pool.threads)
    metrics.gauge(
        "threaded_requests_in_pool",
        "Requests in the pool, by state: running (stuck ones included),"
        " queued, stuck (running past their timeout).",
        lambda: {
            "running": min(pool.outstanding, pool.threads),
            "queued": max(pool.outstanding - pool.threads, 0),
            "stuck": pool.stuck,
        },
        ("state",),
    )
    metrics.gauge(
        "reactor_lag_seconds",
        "How late a 10 ms timer fired over the last 10 s, by quantile (1 is the"
        " maximum).",
        lambda: {
            quantile: pool.lag.summary()[key] / 1000
            for quantile, key in (("0.5", "lag_p50_ms"), ("0.99", "lag_p99_ms"), ("1", "lag_max_ms"))
        },
        ("quantile",),
    )
