# -*- test-case-name: tests._common.test_operations -*-
"""
What every sub-command gets for running in production, written once and
added by L{netservices.tap} to each service's options and service tree:

 - C{--metrics-listen DESC}: Prometheus metrics at C{/metrics}
   (L{netservices._common.metrics});
 - a graceful stop on C{SIGTERM}: stop accepting, let in-flight work finish
   for up to C{--shutdown-timeout} seconds, log the final counters, exit 0;
 - systemd readiness: C{READY=1} to C{$NOTIFY_SOCKET} once listening,
   C{STOPPING=1} when stopping (L{netservices._common.systemd}).

In-flight work is found in the service tree: a service with a C{drain}
method (returning a L{Deferred} that fires when its work is done) is asked
to drain; a listener stops listening, and its factory drains if it can
(L{netservices._common.limits.LimitingFactory.drain} closes idle
connections and waits for the others).
"""

from __future__ import annotations

import signal
import threading
from typing import Callable, Iterator

from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger
from twisted.python import usage

from netservices._common.listen import (
    BaseListener,
    StreamListener,
    errorText,
    helpText,
    nonNegativeFloat,
    parseStreamDescription,
)
from netservices._common.metrics import ServiceMetrics, metricsOf, metricsSite
from netservices._common.systemd import notify

log = Logger(namespace="netservices.operations")

#: Seconds a graceful stop waits for in-flight work, by default.
SHUTDOWN_TIMEOUT = 10.0


class OperationsOptions(usage.Options):
    """
    C{--metrics-listen} and C{--shutdown-timeout}, mixed into every
    sub-command's options by L{withOperations}.

    @ivar serviceName: the sub-command, for the metrics' C{service} label.
    @ivar metrics: the service's L{ServiceMetrics}.
    """

    serviceName = ""

    optParameters = [
        [
            "shutdown-timeout",
            None,
            SHUTDOWN_TIMEOUT,
            "Seconds a stop on SIGTERM lets in-flight work finish (requests"
            " running, answers being sent) before closing what is left.",
            nonNegativeFloat,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["metrics-listen"] = []
        self.metrics = ServiceMetrics(self.serviceName)

    @helpText
    def opt_metrics_listen(self, description: str) -> None:
        """
        Serve Prometheus metrics at /metrics on this endpoint description
        (repeatable), e.g. tcp:9100:interface=127.0.0.1.
        """
        self["metrics-listen"].append(description)

    def postOptions(self) -> None:
        super().postOptions()
        from twisted.internet import reactor

        reactor = getattr(self, "reactor", None) or reactor
        self["metrics-endpoints"] = []
        for description in self["metrics-listen"]:
            try:
                endpoint = parseStreamDescription(reactor, description)
            except Exception as e:
                raise usage.UsageError(f"--metrics-listen {description!r}: {errorText(e)}")
            self["metrics-endpoints"].append(endpoint)


def withOperations(optionsClass: type, name: str, workers: bool = False) -> type:
    """
    @param workers: whether the service is stateless, so that C{--workers}
        (L{netservices._common.workers}) is offered too.
    @return: a subclass of a sub-command's options class with the options
        of L{OperationsOptions}.
    """
    from netservices._common.workers import WorkerOptions

    mixins = (OperationsOptions, WorkerOptions) if workers else (OperationsOptions,)
    return type(
        optionsClass.__name__,
        (*mixins, optionsClass),
        {
            "serviceName": name,
            "__module__": optionsClass.__module__,
            "__doc__": optionsClass.__doc__,
        },
    )


def shutdownTimeout(options) -> float:
    """
    @return: the C{--shutdown-timeout} of C{options}, or the default for
        options without one (in unit tests).
    """
    return options.get("shutdown-timeout", SHUTDOWN_TIMEOUT)


def allServices(root: service.IService) -> Iterator[service.IService]:
    """
    @return: C{root} and the services under it, depth first.
    """
    yield root
    for child in getattr(root, "services", ()):
        yield from allServices(child)


def drainService(child: service.IService) -> Deferred | None:
    """
    Ask one service to stop taking work and to finish what it has.

    @return: a L{Deferred} firing when it has, or L{None} if it has
        nothing to drain.
    """
    drain = getattr(child, "drain", None)
    if drain is not None:
        return maybeDeferred(drain)
    if not isinstance(child, BaseListener) or not child.running:
        return None
    stopped = maybeDeferred(child.stopService)
    factoryDrain = getattr(getattr(child, "factory", None), "drain", None)
    if factoryDrain is not None:
        stopped.addCallback(lambda _: factoryDrain())
    return stopped


class GracefulStop(service.Service):
    """
    Stops the process gracefully on C{SIGTERM} (see the module's
    documentation), and tells systemd when it is ready and when it stops.

    @ivar stopping: whether a graceful stop has begun.
    """

    stopping = False

    def __init__(
        self,
        root: service.IService,
        reactor,
        timeout: float,
        notify: Callable[[str], object] = notify,
    ) -> None:
        """
        @param root: the service whose work is drained.
        @param timeout: seconds to wait for the drain before stopping.
        @param notify: sends a message to the service manager.
        """
        self.root = root
        self.reactor = reactor
        self.timeout = timeout
        self.notify = notify

    def startService(self) -> None:
        super().startService()
        self.reactor.callWhenRunning(self._running)

    def _running(self) -> None:
        # The reactor installs its own handlers as it starts: replace the
        # one for SIGTERM, which would stop at once (and make twistd exit
        # by re-raising the signal rather than with status 0).
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._signalled)
            signal.signal(signal.SIGHUP, self._hangup)
        self.notify("READY=1")

    def _signalled(self, number, frame) -> None:
        self.reactor.callFromThread(self.shutdown)

    def _hangup(self, number, frame) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """
        Ask every service that has a C{reload} method (settings or files
        it can read again without dropping anybody) to reload.
        """
        reloaders = [
            child.reload for child in allServices(self.root) if hasattr(child, "reload")
        ]
        if not reloaders:
            log.info("SIGHUP: nothing to reload")
        for reload in reloaders:
            try:
                reload()
            except Exception:
                log.failure("reload failed")

    def shutdown(self) -> Deferred:
        """
        Drain, then stop the reactor; a second call stops it at once.

        @return: a L{Deferred} firing once the reactor was told to stop.
        """
        if self.stopping:
            log.info("asked again: stopping now")
            self.reactor.stop()
            return Deferred()
        self.stopping = True
        self.notify("STOPPING=1")
        log.info(
            "stopping gracefully: no new work, up to {timeout:g} s for work in flight",
            timeout=self.timeout,
        )
        started = self.reactor.seconds()
        draining = [d for d in map(drainService, allServices(self.root)) if d is not None]
        done: Deferred = Deferred()
        deadline = self.reactor.callLater(self.timeout, done.callback, False)
        DeferredList(draining, consumeErrors=True).addCallback(
            lambda _: done.called or (deadline.cancel(), done.callback(True))
        )

        def stop(drained: bool) -> None:
            if drained:
                log.info(
                    "work in flight finished after {seconds:.3f} s",
                    seconds=self.reactor.seconds() - started,
                )
            else:
                log.warn(
                    "work still in flight after {timeout:g} s: closing it",
                    timeout=self.timeout,
                )
            self.reactor.stop()

        return done.addCallback(stop)


def operationsService(options, build: Callable[[], service.IService], reactor=None):
    """
    Build a sub-command's service with the operations of L{OperationsOptions}
    around it.

    @param options: the sub-command's parsed options.
    @param build: makes the service itself.
    @return: a service holding the service, its metrics listeners and its
        L{GracefulStop}.
    """
    if reactor is None:
        from twisted.internet import reactor
    top = service.MultiService()
    metrics = metricsOf(options)
    channel = getattr(options, "metricsChannel", None)
    if channel is not None:
        from netservices._common.workers import MetricsReporter

        # Before the service, whose listeners tell the parent it is ready.
        MetricsReporter(metrics, channel, reactor).setServiceParent(top)
    if options.get("workers"):
        from netservices._common.workers import supervisedService, watchWorkers

        inner = supervisedService(options, reactor, shutdownTimeout(options))
        watchWorkers(metrics, inner.supervisor)
    else:
        inner = build()
    inner.setServiceParent(top)
    # A worker's metrics go to the parent, which serves them.
    worker = getattr(options, "workerIndex", None) is not None
    site = metricsSite(metrics)
    for description, endpoint in zip(
        options.get("metrics-listen", []) if not worker else [],
        options.get("metrics-endpoints", []),
    ):
        StreamListener(description, endpoint, site, reactor).setServiceParent(top)
    GracefulStop(inner, reactor, shutdownTimeout(options)).setServiceParent(top)
    top.service = inner
    return top
