"""
Tests for L{netservices._common.metrics}: the callback metrics, the
helpers for the shared layer's counters, and C{/metrics} scraped from real
services under twistd, checked against the traffic the tests sent.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from netservices._common.limits import ConnectionLimits, LimitingFactory
from netservices._common.logs import RefusalLog
from netservices._common.metrics import (
    MetricsResource,
    ServiceMetrics,
    metricsOf,
    rateLimitDrops,
    watchConnections,
    watchGuard,
)
from netservices._common.ratelimit import RateLimits
from netservices._common.udp import DatagramGuard
from netservices.testing import (
    TwistdTestCase,
    fetchStream,
    oneLineFailure,
    openDatagramClient,
    runTwistd,
    scrapeMetrics,
)
from netservices.threaded.client import connect


def parse(metrics: ServiceMetrics) -> dict:
    """
    @return: the exposition of C{metrics} parsed back: sample values by
        C{(name, sorted labels)}.
    """
    samples = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


class ServiceMetricsTests(SynchronousTestCase):
    """
    L{ServiceMetrics} reads its callbacks at each scrape.
    """

    def setUp(self) -> None:
        self.metrics = ServiceMetrics("demo")

    def test_counterAndGauge(self) -> None:
        """
        A counter is exposed as C{netservices_NAME_total}, a gauge as
        C{netservices_NAME}, both with the C{service} label and the value
        the callback returns at scrape time.
        """
        value = [3]
        self.metrics.counter("things", "Things.", lambda: value[0])
        self.metrics.gauge("level", "Level.", lambda: 7)
        value[0] = 5
        samples = parse(self.metrics)
        self.assertEqual(samples[("netservices_things_total", (("service", "demo"),))], 5)
        self.assertEqual(samples[("netservices_level", (("service", "demo"),))], 7)

    def test_labels(self) -> None:
        """
        A callback of a labelled metric returns values by label value (a
        string, or a tuple for several labels).
        """
        self.metrics.counter("refused", "R.", lambda: {"a": 1, "b": 2}, ("reason",))
        self.metrics.gauge("cells", "C.", lambda: {("x", "1"): 4}, ("row", "column"))
        samples = parse(self.metrics)
        self.assertEqual(
            samples[("netservices_refused_total", (("reason", "b"), ("service", "demo")))], 2
        )
        self.assertEqual(
            samples[("netservices_cells", (("column", "1"), ("row", "x"), ("service", "demo")))],
            4,
        )

    def test_sum(self) -> None:
        """
        Callbacks added under one name are summed, label by label.
        """
        self.metrics.counter("refused", "R.", lambda: {"a": 1}, ("reason",))
        self.metrics.counter("refused", "R.", lambda: {"a": 2, "b": 5}, ("reason",))
        self.assertEqual(self.metrics.values("refused"), {("a",): 3, ("b",): 5})

    def test_conflict(self) -> None:
        """
        A name cannot be added again as another kind or with other labels.
        """
        self.metrics.counter("x", "X.", lambda: 1)
        self.assertRaises(ValueError, self.metrics.gauge, "x", "X.", lambda: 1)
        self.assertRaises(ValueError, self.metrics.counter, "x", "X.", lambda: {}, ("a",))

    def test_processMetrics(self) -> None:
        """
        The registry also has the process's own metrics.
        """
        self.assertIn(
            ("process_open_fds", ()),
            {key for key in parse(self.metrics)},
        )

    def test_separateRegistries(self) -> None:
        """
        Two services' metrics do not mix.
        """
        other = ServiceMetrics("other")
        other.counter("x", "X.", lambda: 1)
        self.assertNotIn(b"netservices_x_total", self.metrics.exposition())

    def test_metricsOf(self) -> None:
        """
        L{metricsOf} gives options one L{ServiceMetrics}, made on first use.
        """
        options = type("Options", (dict,), {"serviceName": "svc"})()
        metrics = metricsOf(options)
        self.assertIs(metricsOf(options), metrics)
        self.assertEqual(metrics.service, "svc")

    def test_resource(self) -> None:
        """
        L{MetricsResource} answers GET with the text format.
        """
        self.metrics.counter("things", "Things.", lambda: 1)
        request = DummyRequest([b""])
        body = MetricsResource(self.metrics).render_GET(request)
        self.assertIn(b'netservices_things_total{service="demo"} 1.0', body)
        self.assertTrue(
            request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
        )


    def test_snapshot(self) -> None:
        """
        A snapshot has every metric's kind, help, labels and values, with
        label values as strings.
        """
        self.metrics.counter("refused", "R.", lambda: {"a": 1}, ("reason",))
        self.metrics.gauge("cells", "C.", lambda: {("x", 1): 4}, ("row", "column"))
        self.assertEqual(
            self.metrics.snapshot(),
            {
                "refused": ["counter", "R.", ["reason"], [[["a"], 1]]],
                "cells": ["gauge", "C.", ["row", "column"], [[["x", "1"], 4]]],
            },
        )

    def test_refreshedFirst(self) -> None:
        """
        With refreshers, the answer waits until they all have finished (a
        failing one is logged) and shows what they refreshed.
        """
        value = [1]
        refreshing: Deferred = Deferred()
        self.metrics.counter("things", "Things.", lambda: value[0])
        self.metrics.refreshers.append(lambda: refreshing)
        self.metrics.refreshers.append(lambda: 1 / 0)
        request = DummyRequest([b""])
        MetricsResource(self.metrics).render_GET(request)
        self.assertEqual(request.written, [])
        value[0] = 2
        refreshing.callback(None)
        self.assertEqual(request.finished, 1)
        self.assertIn(b'netservices_things_total{service="demo"} 2.0', b"".join(request.written))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class SharedLayerTests(SynchronousTestCase):
    """
    The counters of the shared layer, as metrics.
    """

    def test_connections(self) -> None:
        """
        L{watchConnections} exposes the open and accepted connections of a
        L{LimitingFactory} and its refusals by reason, once however often
        it is given the same factory.
        """
        clock = Clock()
        refusals = RefusalLog(Logger(observer=lambda e: None), clock, "connection")
        factory = LimitingFactory(None, ConnectionLimits(1, 1, 0), clock, refusals)
        metrics = ServiceMetrics("s")
        watchConnections(metrics, factory)
        watchConnections(metrics, factory)
        self.assertIsNone(factory.admit("a"))
        self.assertEqual(factory.admit("b"), "max-connections")
        refusals.refuse("max-connections", "b")
        self.assertEqual(metrics.values("connections_accepted"), {(): 1})
        self.assertEqual(metrics.values("connections_open"), {(): 1})
        self.assertEqual(metrics.values("connections_refused"), {("max-connections",): 1})
        factory.release("a")
        self.assertEqual(metrics.values("connections_open"), {(): 0})

    def test_guard(self) -> None:
        """
        L{watchGuard} exposes datagrams received, sent and refused, and
        the rate-limit drops among the refusals.
        """
        clock = Clock()
        guard = DatagramGuard(RateLimits(), clock, Logger(observer=lambda e: None))
        metrics = ServiceMetrics("s")
        watchGuard(metrics, guard)
        guard.counts.update(received=5, answered=2)
        for reason in ["rate-limit-prefix", "rate-limit-prefix", "rate-limit-global"]:
            guard.refusals.refuse(reason, "x")
        self.assertEqual(metrics.values("datagrams_received"), {(): 5})
        self.assertEqual(metrics.values("datagrams_sent"), {(): 2})
        self.assertEqual(
            metrics.values("datagrams_refused"),
            {("rate-limit-prefix",): 2, ("rate-limit-global",): 1},
        )
        self.assertEqual(
            metrics.values("rate_limit_drops"), {("prefix",): 2, ("global",): 1}
        )

    def test_rateLimitDrops(self) -> None:
        """
        Only C{rate-limit*} reasons are drops; a bare C{rate-limit} is a
        per-source limit.
        """
        self.assertEqual(
            rateLimitDrops({"rate-limit": 2, "rate-limit-global": 1, "truncated": 9}),
            {"source": 2, "global": 1},
        )


class EchoOnce(Protocol):
    """
    Sends some bytes and fires C{echoed} when as many have come back; the
    connection stays open until the server closes it (C{closed} fires with
    the reason's exception).
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = b""
        self.echoed: Deferred = Deferred()
        self.closed: Deferred = Deferred()

    def connectionLost(self, reason) -> None:
        self.closed.callback(reason.value)

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) == len(self.data):
            self.echoed.callback(self.received)


def metricsPort(server) -> tuple[str, int]:
    """
    @return: where C{server} serves its metrics: its last listener (the
        metrics listeners start after the service's own).
    """
    return server.addresses[-1]


METRICS = "tcp:0:interface=127.0.0.1"


class ScrapeTests(TwistdTestCase):
    """
    C{--metrics-listen} under twistd: counters match the traffic sent.
    """

    async def test_tcpEcho(self) -> None:
        """
        tcp-echo counts the connection it accepted, the one refused by
        the per-peer limit, the open one, and the bytes echoed.
        """
        server = await self.startServer(
            ["tcp-echo", "--port", "0", "--max-per-peer", "1", "--metrics-listen", METRICS], 2
        )
        host, port = server.addresses[0]
        echo = EchoOnce(b"hello")
        await connectProtocol(TCP4ClientEndpoint(reactor, host, port), echo)
        self.addCleanup(echo.transport.abortConnection)
        await echo.echoed
        refused = await fetchStream(reactor, host, port)
        self.assertEqual(refused.data, b"")
        scrape = await scrapeMetrics(reactor, *metricsPort(server))
        service = {"service": "tcp-echo"}
        self.assertEqual(scrape.value("netservices_connections_accepted_total", **service), 1)
        self.assertEqual(scrape.value("netservices_connections_open", **service), 1)
        self.assertEqual(
            scrape.value("netservices_connections_refused_total", reason="max-per-peer"), 1
        )
        self.assertEqual(scrape.value("netservices_bytes_received_total"), 5)
        self.assertEqual(scrape.value("netservices_bytes_sent_total"), 5)

    async def test_udpEcho(self) -> None:
        """
        udp-echo counts datagrams received, answered and dropped by the
        per-prefix rate limit.
        """
        server = await self.startServer(
            ["udp-echo", "--port", "0", "--rate", "0", "--burst", "2", "--metrics-listen", METRICS],
            2,
        )
        host, port = server.addresses[0]
        client = openDatagramClient(reactor, "127.0.0.1")
        self.addCleanup(client.close)
        other = openDatagramClient(reactor, "127.0.1.1")
        self.addCleanup(other.close)
        for data in [b"a", b"bb"]:
            client.send(data, (host, port))
            self.assertEqual((await client.nextDatagram())[0], data)
        client.send(b"ccc", (host, port))
        client.send(b"dddd", (host, port))
        # Another /24: answered, and read after the two dropped ones.
        other.send(b"e", (host, port))
        self.assertEqual((await other.nextDatagram())[0], b"e")
        scrape = await scrapeMetrics(reactor, *metricsPort(server))
        self.assertEqual(scrape.value("netservices_datagrams_received_total"), 5)
        self.assertEqual(scrape.value("netservices_datagrams_sent_total"), 3)
        self.assertEqual(
            scrape.value("netservices_datagrams_refused_total", reason="rate-limit-prefix"), 2
        )
        self.assertEqual(scrape.value("netservices_rate_limit_drops_total", limit="prefix"), 2)

    async def test_tcpInfoListenersSummed(self) -> None:
        """
        tcp-info's TCP and HTTP listeners are counted together.
        """
        server = await self.startServer(
            [
                "tcp-info", "--port", "0", "--http-listen", "tcp:0:interface=127.0.0.1",
                "--metrics-listen", METRICS,
            ],
            3,
        )
        (host, port), (_, httpPort) = server.addresses[:2]
        await fetchStream(reactor, host, port)
        await fetchStream(reactor, host, httpPort, b"GET / HTTP/1.0\r\n\r\n")
        scrape = await scrapeMetrics(reactor, *metricsPort(server))
        self.assertEqual(scrape.value("netservices_connections_accepted_total"), 2)

    async def test_threaded(self) -> None:
        """
        threaded counts requests by outcome and refusal reason, and shows
        its pool.
        """
        server = await self.startServer(
            ["threaded", "--port", "0", "--threads", "1", "--queue", "0", "--metrics-listen", METRICS],
            2,
        )
        host, port = server.addresses[0]
        stream = await connect(reactor, host, port, 10)
        self.addCleanup(lambda: stream.transport and stream.transport.abortConnection())
        slow = stream.request("sleep", ["0.2"])
        await server.waitForEvent(lambda e: e.get("handler") == "sleep" and "started" in e)
        during = await scrapeMetrics(reactor, *metricsPort(server))
        busy = await stream.request("echo", ["x"])
        self.assertEqual(busy.kind, "BUSY")
        await slow
        scrape = await scrapeMetrics(reactor, *metricsPort(server))
        self.assertEqual(during.value("netservices_threaded_requests_in_pool", state="running"), 1)
        self.assertEqual(scrape.value("netservices_threaded_requests_in_pool", state="running"), 0)
        self.assertEqual(scrape.value("netservices_threaded_threads"), 1)
        self.assertEqual(scrape.value("netservices_threaded_requests_total", outcome="completed"), 1)
        self.assertEqual(scrape.value("netservices_threaded_requests_total", outcome="rejected"), 1)
        self.assertEqual(
            scrape.value("netservices_requests_refused_total", reason="queue-full"), 1
        )
        self.assertIsNotNone(scrape.value("netservices_reactor_lag_seconds", quantile="0.99"))

    async def test_badDescription(self) -> None:
        """
        A bad C{--metrics-listen} is one line and status 1.
        """
        result = await runTwistd(reactor, ["udp-echo", "--metrics-listen", "nosuch:1"])
        oneLineFailure(self, result, "--metrics-listen 'nosuch:1'", code=1)
