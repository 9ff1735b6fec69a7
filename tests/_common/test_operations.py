"""
Tests for L{netservices._common.operations}: the options every sub-command
gets, the graceful stop (with a fake clock, then C{SIGTERM} to real
services under twistd with work in flight).
"""

from __future__ import annotations

from twisted.application import service
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netservices._common.operations import (
    SHUTDOWN_TIMEOUT,
    GracefulStop,
    OperationsOptions,
    allServices,
    withOperations,
)
from netservices.echo.tap import TCPEchoOptions
from netservices.testing import CLEAN_STOP, TwistdTestCase, eventText, fetchStream
from netservices.threaded.client import connect
from tests._common.test_metrics import EchoOnce


class FakeReactor(Clock):
    """
    A clock that records C{stop} and runs C{callWhenRunning} at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1

    def callWhenRunning(self, f, *args) -> None:
        f(*args)

    def callFromThread(self, f, *args) -> None:
        f(*args)


class Draining(service.Service):
    """
    A service whose drain ends when the test says so.
    """

    def __init__(self) -> None:
        self.draining: list[Deferred] = []

    def drain(self) -> Deferred:
        done: Deferred = Deferred()
        self.draining.append(done)
        return done


class OptionsTests(SynchronousTestCase):
    """
    L{withOperations} adds the operations' options to a sub-command's.
    """

    def test_options(self) -> None:
        """
        C{--metrics-listen} (repeatable) and C{--shutdown-timeout} are
        added to the service's own options; the class keeps its name and
        the service's name is kept for the metrics.
        """
        cls = withOperations(TCPEchoOptions, "tcp-echo")
        self.assertTrue(issubclass(cls, TCPEchoOptions))
        self.assertTrue(issubclass(cls, OperationsOptions))
        self.assertEqual(cls.__name__, "TCPEchoOptions")
        options = cls()
        options.parseOptions(
            [
                "--port", "0",
                "--metrics-listen", "tcp:0:interface=127.0.0.1",
                "--metrics-listen", "unix:/tmp/x.sock",
                "--shutdown-timeout", "2.5",
            ]
        )
        self.assertEqual(len(options["metrics-endpoints"]), 2)
        self.assertEqual(options["shutdown-timeout"], 2.5)
        self.assertEqual(options.metrics.service, "tcp-echo")

    def test_defaults(self) -> None:
        """
        Without them: no metrics listener, the default timeout.
        """
        options = withOperations(TCPEchoOptions, "tcp-echo")()
        options.parseOptions([])
        self.assertEqual(options["metrics-endpoints"], [])
        self.assertEqual(options["shutdown-timeout"], SHUTDOWN_TIMEOUT)

    def test_badOptions(self) -> None:
        """
        A bad description or timeout is a usage error naming it.
        """
        for args, mention in [
            (["--metrics-listen", "nosuch:1"], "--metrics-listen 'nosuch:1'"),
            (["--shutdown-timeout", "-1"], "-1"),
        ]:
            options = withOperations(TCPEchoOptions, "tcp-echo")()
            error = self.assertRaises(usage.UsageError, options.parseOptions, args)
            self.assertIn(mention, str(error))


class GracefulStopTests(SynchronousTestCase):
    """
    L{GracefulStop} drains the service tree, then stops the reactor.
    """

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.root = service.MultiService()
        self.first, self.second = Draining(), Draining()
        self.first.setServiceParent(self.root)
        inner = service.MultiService()
        inner.setServiceParent(self.root)
        self.second.setServiceParent(inner)
        self.notified: list[str] = []
        self.stop = GracefulStop(self.root, self.reactor, 5.0, self.notified.append)

    def test_allServices(self) -> None:
        """
        L{allServices} walks the whole tree.
        """
        self.assertEqual(len(list(allServices(self.root))), 4)

    def test_ready(self) -> None:
        """
        Once the reactor runs, systemd is told C{READY=1}.
        """
        self.stop.startService()
        self.assertEqual(self.notified, ["READY=1"])

    def test_waitsForDrains(self) -> None:
        """
        The reactor is stopped when every drain has finished, not before.
        """
        self.stop.shutdown()
        self.assertEqual(self.notified, ["STOPPING=1"])
        self.assertEqual((len(self.first.draining), len(self.second.draining)), (1, 1))
        self.first.draining[0].callback(None)
        self.assertEqual(self.reactor.stopped, 0)
        self.second.draining[0].callback(None)
        self.assertEqual(self.reactor.stopped, 1)
        self.reactor.advance(10)
        self.assertEqual(self.reactor.stopped, 1)

    def test_timeout(self) -> None:
        """
        After the timeout, the reactor is stopped anyway.
        """
        self.stop.shutdown()
        self.reactor.advance(4.9)
        self.assertEqual(self.reactor.stopped, 0)
        self.reactor.advance(0.1)
        self.assertEqual(self.reactor.stopped, 1)
        self.first.draining[0].callback(None)
        self.second.draining[0].callback(None)
        self.assertEqual(self.reactor.stopped, 1)

    def test_twice(self) -> None:
        """
        A second request (a second SIGTERM) stops at once.
        """
        self.stop.shutdown()
        self.stop.shutdown()
        self.assertEqual(self.reactor.stopped, 1)

    def test_reload(self) -> None:
        """
        A reload (SIGHUP) calls every service's C{reload}; one that fails
        is logged and does not keep the others from reloading.
        """
        calls = []

        def broken():
            calls.append("broken")
            raise RuntimeError("cannot")

        self.first.reload = broken
        self.second.reload = lambda: calls.append("second")
        self.stop.reload()
        self.assertEqual(calls, ["broken", "second"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.reactor.stopped, 0)


class SigtermTests(TwistdTestCase):
    """
    C{SIGTERM} to real services: work in flight finishes, nothing new is
    taken, the counters are logged, the exit status is 0.
    """

    async def test_threadedLosesNothing(self) -> None:
        """
        Requests running and queued when SIGTERM arrives are all answered
        OK; a request sent after it is answered C{BUSY stopping}; new
        connections are refused; the final counters are logged.
        """
        server = await self.startServer(
            ["threaded", "--port", "0", "--threads", "2", "--queue", "10"], 1
        )
        host, port = server.addresses[0]
        streams = [await connect(reactor, host, port, 10) for _ in range(2)]
        for stream in streams:
            self.addCleanup(lambda s=stream: s.transport and s.transport.abortConnection())
        replies = [
            stream.request("sleep", ["0.2"]) for stream in streams for _ in range(3)
        ]
        await server.waitForEvent(lambda e: e.get("handler") == "sleep" and "started" in e)
        stopped = server.stop()
        await server.waitForEvent(lambda e: "stopping gracefully" in e.get("log_format", ""))
        late = await streams[0].request("echo", ["late"])
        self.assertEqual((late.kind, late.text), ("BUSY", "stopping"))
        refused = fetchStream(reactor, host, port)
        self.assertIsInstance(await refused.addErrback(lambda f: f.value), ConnectionRefusedError)
        self.assertEqual(
            [(r.kind, r.text) for r in await gatherResults(replies)],
            [("OK", "slept 0.2")] * 6,
        )
        self.assertEqual(await stopped, CLEAN_STOP)
        texts = [eventText(e) for e in server.events]
        self.assertIn("requests completed=6 failed=0 rejected=1 timed out=0", texts)
        self.assertTrue([t for t in texts if t.startswith("work in flight finished after")])

    async def test_timeout(self) -> None:
        """
        Work still running at C{--shutdown-timeout} does not hold the
        stop: a warning, then status 0.
        """
        server = await self.startServer(
            ["threaded", "--port", "0", "--shutdown-timeout", "0.2"], 1
        )
        host, port = server.addresses[0]
        stream = await connect(reactor, host, port, 10)
        self.addCleanup(lambda: stream.transport and stream.transport.abortConnection())
        stream.request("sleep", ["30"]).addErrback(lambda f: None)
        await server.waitForEvent(lambda e: e.get("handler") == "sleep" and "started" in e)
        self.assertEqual(await server.stop(), CLEAN_STOP)
        texts = [eventText(e) for e in server.events]
        self.assertIn("work still in flight after 0.2 s: closing it", texts)

    async def test_echoClosesIdleConnections(self) -> None:
        """
        tcp-echo closes its open connections on SIGTERM and exits with 0
        at once, with its counters logged.
        """
        server = await self.startServer(["tcp-echo", "--port", "0"], 1)
        host, port = server.addresses[0]
        echo = EchoOnce(b"hello")
        await connectProtocol(TCP4ClientEndpoint(reactor, host, port), echo)
        self.addCleanup(echo.transport.abortConnection)
        await echo.echoed
        self.assertEqual(await server.stop(), CLEAN_STOP)
        self.assertIsInstance(await echo.closed, ConnectionDone)
        texts = [eventText(e) for e in server.events]
        self.assertIn("connections=1 bytes echoed=5", texts)
