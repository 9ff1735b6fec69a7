# -*- test-case-name: tests._common.test_metrics -*-
"""
Prometheus metrics for every service, written once: C{--metrics-listen}
serves the text format at C{/metrics}.

The counters are the ones the services keep anyway (the limiting factory's
connection counts, L{RefusalLog.counts}, the UDP guard's counts, a
factory's C{counts}...): they are read when Prometheus scrapes, by
callbacks, so nothing is counted twice and the hot paths do not change.
Each service has a registry of its own (not C{prometheus_client}'s global
one), so that tests and several services in one process stay apart.

The API a service uses, from its C{makeService}::

    metrics = metricsOf(options)
    metrics.counter("chat_messages", "Messages relayed.", lambda: server.messages)
    metrics.gauge("chat_users", "Users connected.", lambda: len(server.users))
    metrics.counter(
        "chat_refused", "Commands refused, by reason.",
        lambda: refusals.counts, labels=("reason",),
    )

Every name gets the C{netservices_} prefix, counters the C{_total} suffix,
and every sample a C{service} label (the sub-command).  A callback returns
a number, or, for a metric with C{labels}, a mapping from label values (a
string, or a tuple of strings for several labels) to numbers; label values
must come from a small fixed set (reasons, outcomes, configured groups),
never from peers.  Callbacks registered under one name are summed, so two
listeners' factories make one metric.  Scrapes are served in the reactor
thread (not in a thread pool as C{prometheus_client.twisted} does), so the
callbacks may read the service's state without locks.

A C{--workers} parent has no counters of its own to read: its
L{ServiceMetrics.refreshers} ask the workers for their L{snapshots
<ServiceMetrics.snapshot>} before each scrape is answered (see
L{netservices._common.workers}).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Iterator

import attrs
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

log = Logger(namespace="netservices.metrics")

#: The prefix of every metric name.
PREFIX = "netservices_"

#: A callback's value: a number, or numbers by label values.
Reading = float | Mapping[object, float]


@attrs.define
class _Family:
    kind: type
    documentation: str
    labels: tuple[str, ...]
    readers: list[Callable[[], Reading]] = attrs.Factory(list)


class ServiceMetrics:
    """
    The metrics of one service.

    @ivar service: the value of every sample's C{service} label.
    @ivar registry: the service's own L{CollectorRegistry}, with these
        metrics and the process's (C{process_cpu_seconds_total}, memory,
        open descriptors).
    @ivar refreshers: called before each scrape is answered, each returning
        a L{Deferred} that fires once the values it refreshes are fresh.
    """

    def __init__(self, service: str) -> None:
        self.service = service
        self.refreshers: list[Callable[[], Deferred]] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self._families: dict[str, _Family] = {}
        self._seen: set[int] = set()
        self._keep: list[object] = []
        self.registry.register(self)
        ProcessCollector(registry=self.registry)

    def counter(
        self,
        name: str,
        documentation: str,
        read: Callable[[], Reading],
        labels: tuple[str, ...] = (),
    ) -> None:
        """
        Add a counter, C{netservices_NAME_total}: a total that only grows.

        @param read: called at each scrape; see the module's documentation.
        @raise ValueError: if C{name} was added as another kind or with
            other labels.
        """
        self._add(CounterMetricFamily, name, documentation, read, labels)

    def gauge(
        self,
        name: str,
        documentation: str,
        read: Callable[[], Reading],
        labels: tuple[str, ...] = (),
    ) -> None:
        """
        Add a gauge, C{netservices_NAME}: a value that goes up and down.
        """
        self._add(GaugeMetricFamily, name, documentation, read, labels)

    def first(self, source: object) -> bool:
        """
        @return: whether C{source} is seen here for the first time: helpers
            that may be given the same object twice (one refusal log shared
            by two factories) add its metrics once.
        """
        if id(source) in self._seen:
            return False
        self._seen.add(id(source))
        self._keep.append(source)
        return True

    def _add(self, kind, name, documentation, read, labels) -> None:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = _Family(kind, documentation, tuple(labels))
        elif family.kind is not kind or family.labels != tuple(labels):
            raise ValueError(f"metric {name!r} was added with another kind or labels")
        family.readers.append(read)

    def values(self, name: str) -> dict[tuple[str, ...], float]:
        """
        @return: the current values of metric C{name} (without prefix) by
            label values (without C{service}).
        """
        family = self._families[name]
        totals: dict[tuple[str, ...], float] = {}
        for read in family.readers:
            value = read()
            items = value.items() if isinstance(value, Mapping) else [((), value)]
            for key, number in items:
                key = key if isinstance(key, tuple) else (key,)
                totals[key] = totals.get(key, 0) + number
        return totals

    def snapshot(self) -> dict[str, list]:
        """
        @return: every metric's definition and current values, for JSON:
            C{{name: [kind ("counter" or "gauge"), documentation, labels,
            [[label values, value], ...]]}}.
        """
        return {
            name: [
                "counter" if family.kind is CounterMetricFamily else "gauge",
                family.documentation,
                list(family.labels),
                [[list(map(str, key)), number] for key, number in self.values(name).items()],
            ]
            for name, family in self._families.items()
        }

    def refresh(self) -> Deferred:
        """
        Call the L{refreshers}.

        @return: a L{Deferred} firing when they all have finished (a failed
            one is logged).
        """
        refreshing = [maybeDeferred(refresher) for refresher in self.refreshers]
        for d in refreshing:
            d.addErrback(lambda f: log.failure("refreshing metrics failed", f))
        return DeferredList(refreshing)

    def collect(self) -> Iterator[Metric]:
        """
        Read every callback (called by the registry at each scrape).
        """
        for name, family in self._families.items():
            metric = family.kind(
                PREFIX + name, family.documentation, labels=["service", *family.labels]
            )
            for key, number in sorted(self.values(name).items()):
                metric.add_metric([self.service, *map(str, key)], number)
            yield metric

    def exposition(self) -> bytes:
        """
        @return: the registry in Prometheus text format.
        """
        return generate_latest(self.registry)


def metricsOf(options) -> ServiceMetrics:
    """
    @return: the L{ServiceMetrics} of a sub-command's parsed options (made
        by L{netservices._common.operations.OperationsOptions}); options
        without one (in unit tests) get a new one, named by their
        C{serviceName} if they have one.
    """
    metrics = getattr(options, "metrics", None)
    if metrics is None:
        metrics = options.metrics = ServiceMetrics(getattr(options, "serviceName", "") or "")
    return metrics


def watchRefusals(
    metrics: ServiceMetrics, name: str, documentation: str, refusals
) -> None:
    """
    Add the counts of a L{netservices._common.logs.RefusalLog} as counter
    C{name} with a C{reason} label (once per log).
    """
    if metrics.first(refusals):
        metrics.counter(name, documentation, lambda: refusals.counts, ("reason",))


def watchConnections(metrics: ServiceMetrics, factory) -> None:
    """
    Add the connection metrics of a
    L{netservices._common.limits.LimitingFactory}: open, accepted, and
    refused or closed by the shared limits, by reason.
    """
    if not metrics.first(factory):
        return
    metrics.gauge("connections_open", "Connections open now.", lambda: factory.open)
    metrics.counter(
        "connections_accepted", "Connections accepted.", lambda: factory.accepted
    )
    watchRefusals(
        metrics,
        "connections_refused",
        "Connections refused (max-connections, max-per-peer, stopping, PROXY header"
        " errors) or closed (idle-timeout), by reason.",
        factory.refusals,
    )


def rateLimitDrops(counts: Mapping[str, int]) -> dict[str, int]:
    """
    @return: the refusals of C{counts} that are rate-limit drops, by limit:
        C{prefix} (one source prefix's), C{global}, or C{source} for a
        limiter that does not say.
    """
    drops: dict[str, int] = {}
    for reason, n in counts.items():
        if reason.startswith("rate-limit"):
            limit = reason[len("rate-limit-"):] or "source"
            drops[limit] = drops.get(limit, 0) + n
    return drops


def watchDatagramRefusals(metrics: ServiceMetrics, refusals) -> None:
    """
    Add the refusals of a datagram service's
    L{netservices._common.logs.RefusalLog}: datagrams refused by reason, and
    the rate-limit drops among them by limit (once per log).
    """
    if not metrics.first(refusals):
        return
    metrics.counter(
        "datagrams_refused",
        "Datagrams refused or not answered, by reason (rate limits included).",
        lambda: refusals.counts,
        ("reason",),
    )
    metrics.counter(
        "rate_limit_drops",
        "Answers or datagrams dropped by a rate limit, by limit.",
        lambda: rateLimitDrops(refusals.counts),
        ("limit",),
    )


def watchGuard(metrics: ServiceMetrics, guard) -> None:
    """
    Add the datagram metrics of a L{netservices._common.udp.DatagramGuard}:
    received, answered, refused by reason, and rate-limit drops.
    """
    if not metrics.first(guard):
        return
    metrics.counter(
        "datagrams_received", "Datagrams received.", lambda: guard.counts["received"]
    )
    metrics.counter(
        "datagrams_sent", "Datagrams sent in answer.", lambda: guard.counts["answered"]
    )
    watchDatagramRefusals(metrics, guard.refusals)


class MetricsResource(Resource):
    """
    Serves a L{ServiceMetrics} in Prometheus text format, collected in the
    reactor thread.
    """

    isLeaf = True

    def __init__(self, metrics: ServiceMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request) -> bytes | int:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        if not self.metrics.refreshers:
            return self.metrics.exposition()
        gone: list[object] = []
        request.notifyFinish().addErrback(gone.append)

        def answer(_) -> None:
            if not gone:
                request.write(self.metrics.exposition())
                request.finish()

        self.metrics.refresh().addCallback(answer)
        return NOT_DONE_YET


class _QuietSite(Site):
    """
    A site without an access log: a scrape every few seconds is not news.
    """

    noisy = False

    def log(self, request) -> None:
        pass


def metricsSite(metrics: ServiceMetrics) -> Site:
    """
    @return: a site serving C{metrics} at C{/metrics} (and nothing else).
    """
    root = Resource()
    root.putChild(b"metrics", MetricsResource(metrics))
    return _QuietSite(root)
