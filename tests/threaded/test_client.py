"""
Tests for L{netservices.threaded.client} and the C{netservices threaded}
command's options.  The network tests run against the service's protocol
in this process, on a loopback port chosen by the system, with a
synchronous fake pool (the handlers run at once, in the reactor thread).
"""

from __future__ import annotations

import socket

from twisted.internet import reactor
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netservices import cli
from netservices._common.client import ClientError
from netservices.testing import SynchronousThreadPool
from netservices.threaded.client import (
    LoadResult,
    RequestStream,
    describeLoad,
    loadRun,
    requestOnce,
)
from netservices.threaded.handlers import builtinHandlers
from netservices.threaded.pool import BoundedPool
from netservices.threaded.protocol import ThreadedFactory
from netservices.threaded.wire import BUSY, ERROR, OK, Reply, WireError


class RequestStreamTests(SynchronousTestCase):
    """
    L{RequestStream} matches replies to requests by id.
    """

    def setUp(self) -> None:
        self.stream = RequestStream()
        self.transport = StringTransport()
        self.stream.makeConnection(self.transport)
        self.results: dict[str, object] = {}

    def send(self, name: str, *args: str):
        d = self.stream.request("echo", args)
        d.addBoth(lambda r: self.results.__setitem__(name, r))

    def test_outOfOrder(self) -> None:
        """
        Requests get ids 1, 2, ...; replies fire their own request's
        L{Deferred} in whatever order they come.
        """
        self.send("a", "x y")
        self.send("b")
        self.assertEqual(self.transport.value(), b"1 echo x%20y\n2 echo\n")
        self.stream.dataReceived(b"2 OK\n1 OK x")
        self.assertEqual(self.results, {"b": Reply("2", OK, "")})
        self.stream.dataReceived(b" y\r\n")
        self.assertEqual(self.results["a"], Reply("1", OK, "x y"))

    def test_starReply(self) -> None:
        """
        A reply with id C{*} answers the only request in flight.
        """
        self.send("a")
        self.stream.dataReceived(b"* ERROR bad-request x\n")
        self.assertEqual(self.results["a"].kind, ERROR)

    def test_garbage(self) -> None:
        """
        A line that is not a reply fails every request in flight and drops
        the connection.
        """
        self.send("a")
        self.send("b")
        self.stream.dataReceived(b"hello there\n")
        self.assertIsInstance(self.results["a"].value, WireError)
        self.assertIsInstance(self.results["b"].value, WireError)
        self.assertTrue(self.transport.disconnecting)

    def test_lost(self) -> None:
        """
        Requests in flight, and later ones, fail when the connection is lost.
        """
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        self.send("a")
        self.stream.connectionLost(Failure(ConnectionDone()))
        self.send("b")
        self.assertTrue(self.results["a"].check(ConnectionDone))
        self.assertTrue(self.results["b"].check(ConnectionDone))


class LoadResultTests(SynchronousTestCase):
    """
    L{LoadResult} sums up a load run.
    """

    def test_summary(self) -> None:
        """
        Throughput, percentiles and counts by kind and reason.
        """
        result = LoadResult(4, latencies=[i / 1000 for i in range(1, 101)], duration=2.0)
        result.kinds.update({OK: 98, BUSY: 2})
        result.reasons["queue-full"] = 2
        summary = result.asDict()
        self.assertEqual(summary["per_second"], 50.0)
        self.assertEqual(summary["latency_ms"], {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0})
        self.assertFalse(result.ok)
        self.assertEqual(
            describeLoad(summary).splitlines(),
            [
                "100 requests in 2.000 s over 4 connections: 50.0 requests/s",
                "replies: OK=98 ERROR=0 BUSY=2 TIMEOUT=0 (queue-full=2)",
                "latency ms: p50=50.00 p90=90.00 p99=99.00 max=100.00",
            ],
        )


class OptionsTests(SynchronousTestCase):
    """
    C{netservices threaded} parses its command line.
    """

    def parse(self, *argv: str) -> cli.ThreadedClientOptions:
        options = cli.Options()
        options.parseOptions(["threaded", *argv])
        return options.subOptions

    def test_parse(self) -> None:
        """
        HOST (default port 7878), HANDLER and ARGs, options anywhere.
        """
        options = self.parse("localhost", "sleep", "--timeout", "2", "0.5")
        self.assertEqual(
            (options["host"], options["port"], options["handler"], options["args"], options["timeout"]),
            ("localhost", 7878, "sleep", ("0.5",), 2.0),
        )
        options = self.parse("[::1]:9", "echo", "--concurrency", "3", "--", "-x")
        self.assertEqual((options["port"], options["args"], options["concurrency"]), (9, ("-x",), 3))

    def test_bad(self) -> None:
        """
        A missing HANDLER, a bad handler name or bad numbers are refused.
        """
        for argv in [
            ["localhost"],
            ["localhost", "bad name"],
            ["localhost", "echo", "--concurrency", "0"],
            ["localhost", "echo", "--count", "x"],
            ["localhost", "echo", "\udcff"],
        ]:
            self.assertRaises(usage.UsageError, self.parse, *argv)


class NetworkTests(TestCase):
    """
    The client against the service's protocol on a loopback port.
    """

    def setUp(self) -> None:
        self.pool = BoundedPool(
            reactor, 2, 10, 0.0, 1.0, Logger(observer=lambda e: None),
            SynchronousThreadPool(immediate=True),
        )
        self.pool.startService()
        self.addCleanup(self.pool.stopService)
        factory = ThreadedFactory(
            self.pool, builtinHandlers(self.pool), Logger(observer=lambda e: None)
        )
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.where = self.port.getHost().port

    async def test_requestOnce(self) -> None:
        """
        One request: its reply and round trip; an ERROR is a reply too.
        """
        reply, rtt = await requestOnce(reactor, "127.0.0.1", self.where, "echo", ["a b", "c"])
        self.assertEqual(reply, Reply("1", OK, "a b c"))
        self.assertGreaterEqual(rtt, 0)
        reply, _ = await requestOnce(reactor, "127.0.0.1", self.where, "nosuch")
        self.assertEqual((reply.kind, reply.reason), (ERROR, "unknown-handler"))

    async def test_loadRun(self) -> None:
        """
        A load run sends exactly C{count} requests over C{concurrency}
        connections and counts the replies.
        """
        result = await loadRun(
            reactor, "127.0.0.1", self.where, "sha256", ["x"], concurrency=5, count=23
        )
        self.assertEqual(result.kinds, {OK: 23, ERROR: 0, BUSY: 0, "TIMEOUT": 0})
        self.assertEqual(len(result.latencies), 23)
        self.assertTrue(result.ok)

    async def test_refused(self) -> None:
        """
        A port nobody listens on is a one-line L{ClientError}.
        """
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
        probe.close()
        with self.assertRaises(ClientError) as caught:
            await requestOnce(reactor, "127.0.0.1", closed, "echo", timeout=5)
        self.assertEqual(str(caught.exception), f"connection refused by 127.0.0.1:{closed}")
        with self.assertRaises(ClientError):
            await loadRun(reactor, "127.0.0.1", closed, "echo", concurrency=2, count=2, timeout=5)
