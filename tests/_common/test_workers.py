"""
Tests for L{netservices._common.workers}: the options, how a worker adopts
its inherited sockets, and C{--workers N} under twistd (a killed worker is
replaced; stopping the parent stops all).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.internet.endpoints import (
    AdoptedStreamServerEndpoint,
    TCP4ClientEndpoint,
    connectProtocol,
)
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netservices._common.eager import EagerAdoptedEndpoint
from netservices._common.listen import DatagramAddress
from netservices._common.metrics import ServiceMetrics
from netservices._common.operations import withOperations
from netservices._common.proxy import ProxyHeaderEndpoint
from netservices._common.workers import (
    SCRAPE_TIMEOUT,
    WORKER_FDS,
    WORKER_METRICS,
    MetricsReporter,
    Supervisor,
    WORKER_INDEX,
    shareable,
    watchWorkers,
    workerCommand,
    workerEnvironment,
)
from netservices.echo.tap import TCPEchoOptions, UDPEchoOptions
from netservices.info.tap import TCPInfoOptions
from netservices.testing import (
    CLEAN_STOP,
    TwistdTestCase,
    eventText,
    fetchStream,
    openDatagramClient,
    scrapeMetrics,
)
from tests._common.test_metrics import EchoOnce


def workerOptions(optionsClass, name: str, environ: dict):
    """
    @return: options of C{name} with C{--workers}, reading C{environ}.
    """
    cls = withOperations(optionsClass, name, workers=True)
    options = cls()
    options.environ = environ
    return options


class OptionsTests(SynchronousTestCase):
    """
    C{--workers} in the parent, and the listeners of a worker.
    """

    def test_shareable(self) -> None:
        """
        Plain, PROXY, systemd and UDP listeners can be shared, TLS ones not.
        """
        for description in ["tcp:7", "tcp6:7", "unix:/x", "systemd:domain=INET:index=0",
                            "haproxy:tcp:7", "udp:7"]:
            self.assertTrue(shareable(description), description)
        for description in ["ssl:7", "tls:/etc", "haproxy-ssl:7", "haproxy:ssl:7"]:
            self.assertFalse(shareable(description), description)

    def test_refusesTLS(self) -> None:
        """
        C{--workers} with a TLS listener is a usage error naming it.
        """
        options = workerOptions(TCPInfoOptions, "tcp-info", {})
        error = self.assertRaises(
            usage.UsageError,
            options.parseOptions,
            ["--workers", "2", "--listen", "ssl:0:privateKey=nosuch.pem"],
        )
        self.assertIn("cannot be shared", str(error))

    def test_parent(self) -> None:
        """
        Without C{$NETSERVICES_WORKER_FDS}, the options are the parent's,
        and keep the arguments for the workers.
        """
        options = workerOptions(TCPEchoOptions, "tcp-echo", {})
        options.parseOptions(["--port", "0", "--workers", "3"])
        self.assertEqual(options["workers"], 3)
        self.assertIsNone(options.workerIndex)
        self.assertEqual(options.arguments, ["--port", "0", "--workers", "3"])

    def test_command(self) -> None:
        """
        A worker is twistd in the foreground, without a PID file, logging
        JSON lines, running the same sub-command with the same arguments.
        """
        command = workerCommand("tcp-echo", ["--port", "0"])
        self.assertEqual(command[0], sys.executable)
        self.assertEqual(
            command[3:],
            ["--nodaemon", "--pidfile=", "--logger=netservices.logs.jsonLines",
             "netservices", "tcp-echo", "--port", "0"],
        )

    def test_environment(self) -> None:
        """
        A worker's environment names its sockets and number, without the
        variables meant for the parent by a service manager.
        """
        env = workerEnvironment(
            {"PATH": "/bin", "NOTIFY_SOCKET": "/run/n", "LISTEN_FDS": "1", "LISTEN_PID": "9"},
            2,
            [3, 4],
        )
        self.assertEqual(
            env, {"PATH": "/bin", WORKER_FDS: "3 4", WORKER_INDEX: "2", "PYTHONUNBUFFERED": "1"}
        )

    def sockets(self, *kinds: int) -> list[int]:
        """
        @return: descriptors of new bound IPv4 sockets of C{kinds}, closed
            after the test.
        """
        fds = []
        for kind in kinds:
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", 0))
            self.addCleanup(s.close)
            fds.append(os.dup(s.fileno()))
        return fds

    def test_workerStream(self) -> None:
        """
        In a worker, each stream listener adopts the next inherited socket:
        with eager writes for tcp-echo, behind a PROXY header for
        C{haproxy:}; C{systemd:} descriptions are kept (for the log)
        although systemd's variables are not there; C{--workers} is 0.
        """
        first, second, third = self.sockets(socket.SOCK_STREAM, socket.SOCK_STREAM, socket.SOCK_STREAM)
        options = workerOptions(
            TCPEchoOptions, "tcp-echo", {WORKER_FDS: f"{first} {second} {third}", WORKER_INDEX: "2"}
        )
        options.parseOptions(
            ["--workers", "2", "--listen", "tcp:7", "--listen", "haproxy:tcp:8",
             "--listen", "systemd:domain=INET:index=0"]
        )
        self.assertEqual(options["workers"], 0)
        self.assertEqual(options.workerIndex, 2)
        self.assertEqual(
            options["listen"], ["tcp:7", "haproxy:tcp:8", "systemd:domain=INET:index=0"]
        )
        plain, proxied, systemd = options["endpoints"]
        self.assertIsInstance(plain, EagerAdoptedEndpoint)
        self.assertIsInstance(proxied, ProxyHeaderEndpoint)
        self.assertIsInstance(systemd, EagerAdoptedEndpoint)

    def test_workerHTTP(self) -> None:
        """
        tcp-info's C{--http-listen} listeners adopt sockets too, after the
        C{--listen} ones.
        """
        first, second = self.sockets(socket.SOCK_STREAM, socket.SOCK_STREAM)
        options = workerOptions(TCPInfoOptions, "tcp-info", {WORKER_FDS: f"{first} {second}"})
        options.parseOptions(["--port", "0", "--http-listen", "tcp:0"])
        [plain], [http] = options["endpoints"], options["http-endpoints"]
        self.assertIsInstance(plain, AdoptedStreamServerEndpoint)
        self.assertEqual((plain.fileno, http.fileno), (first, second))

    def test_workerDatagram(self) -> None:
        """
        A UDP listener of a worker is its address with the inherited
        descriptor; the worker knows its metrics socket.
        """
        [fd] = self.sockets(socket.SOCK_DGRAM)
        options = workerOptions(
            UDPEchoOptions, "udp-echo", {WORKER_FDS: str(fd), WORKER_METRICS: "9"}
        )
        options.parseOptions(["--port", "0"])
        self.assertEqual(options["endpoints"], [DatagramAddress(0, "127.0.0.1", fd)])
        self.assertEqual(options.metricsChannel, 9)

    def test_tooFewSockets(self) -> None:
        """
        Fewer inherited sockets than listeners is a usage error.
        """
        options = workerOptions(UDPEchoOptions, "udp-echo", {WORKER_FDS: ""})
        self.assertRaises(usage.UsageError, options.parseOptions, ["--port", "0"])


class FakeProcessTransport:
    """
    What L{FakeSpawner.spawnProcess} returns: records signals.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def closeStdin(self) -> None:
        pass

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class FakeSpawner(Clock):
    """
    A clock that records the processes it is asked to start.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple] = []

    def spawnProcess(self, protocol, executable, args, env, childFDs):
        transport = FakeProcessTransport(1000 + len(self.spawned))
        protocol.transport = transport
        self.spawned.append((protocol, args, env, childFDs))
        return transport

    def adoptStreamConnection(self, fd, family, factory):
        """
        Connect the protocol to a L{StringTransport} (the metrics socket).
        """
        factory.buildProtocol(None).makeConnection(StringTransport())


class FakeListener:
    """
    A bound listener whose socket is descriptor C{fd}.
    """

    def __init__(self, fd: int) -> None:
        self.port = type("Port", (), {"fileno": lambda self: fd})()


def ended(code: int | None = 0, number: int | None = None) -> Failure:
    """
    @return: how a process that ended with status C{code}, or by signal
        C{number}, is reported.
    """
    if number is None and code == 0:
        return Failure(ProcessDone(0))
    return Failure(ProcessTerminated(code, number))


class SupervisorTests(SynchronousTestCase):
    """
    L{Supervisor} with a fake process spawner and clock.
    """

    def setUp(self) -> None:
        self.reactor = FakeSpawner()
        self.supervisor = Supervisor(
            2, ["twistd", "x"], [FakeListener(7), FakeListener(9)], self.reactor, 5.0,
            {"NOTIFY_SOCKET": "/run/n", "HOME": "/root"},
        )
        self.supervisor.startService()

    def test_start(self) -> None:
        """
        N workers are started with the listeners' sockets as descriptors
        3, 4, ... and the environment naming them.
        """
        self.assertEqual(len(self.reactor.spawned), 2)
        protocol, args, env, childFDs = self.reactor.spawned[1]
        self.assertEqual(protocol.index, 2)
        self.assertEqual(args, ["twistd", "x"])
        channel = childFDs.pop(5)
        self.assertEqual(childFDs, {0: "w", 1: "r", 2: "r", 3: 7, 4: 9})
        self.assertIsInstance(channel, int)
        self.assertEqual(env[WORKER_FDS], "3 4")
        self.assertEqual(env[WORKER_METRICS], "5")
        self.assertNotIn("NOTIFY_SOCKET", env)

    def test_replaced(self) -> None:
        """
        A worker that dies is replaced at once if it lived a second or
        more, after a second if not.
        """
        self.reactor.advance(2)
        first = self.reactor.spawned[0][0]
        first.processEnded(ended(None, 9))
        self.reactor.advance(0)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.assertEqual(self.reactor.spawned[2][0].index, 1)
        self.reactor.spawned[2][0].processEnded(ended(1))
        self.reactor.advance(0.9)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.reactor.advance(0.1)
        self.assertEqual(len(self.reactor.spawned), 4)
        self.assertEqual(self.supervisor.restarts, 2)

    def test_drainAndStop(self) -> None:
        """
        Draining sends SIGTERM to every worker, replaces none, and fires
        when all have ended; a stop after it kills what is left at once.
        """
        one, two = (spawned[0] for spawned in self.reactor.spawned)
        drained = self.supervisor.drain()
        self.assertEqual((one.transport.signals, two.transport.signals), (["TERM"], ["TERM"]))
        one.processEnded(ended())
        self.assertNoResult(drained)
        stopped = self.supervisor.stopService()
        self.reactor.advance(0)
        self.assertEqual(two.transport.signals, ["TERM", "KILL"])
        two.processEnded(ended(None, 9))
        self.successResultOf(drained)
        self.successResultOf(stopped)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_stopKillsAfterTimeout(self) -> None:
        """
        A stop without a drain sends SIGTERM, then SIGKILL after the
        timeout to workers still running.
        """
        one, two = (spawned[0] for spawned in self.reactor.spawned)
        stopped = self.supervisor.stopService()
        one.processEnded(ended())
        self.reactor.advance(4.9)
        self.assertEqual(two.transport.signals, ["TERM"])
        self.reactor.advance(0.1)
        self.assertEqual(two.transport.signals, ["TERM", "KILL"])
        two.processEnded(ended(None, 9))
        self.successResultOf(stopped)


def snapshot(serial, accepted: int, open_: int, refused: dict[str, int]) -> bytes:
    """
    @return: a worker's metrics line, answering C{serial}.
    """
    families = {
        "connections_accepted": ["counter", "Accepted.", [], [[[], accepted]]],
        "connections_open": ["gauge", "Open.", [], [[[], open_]]],
        "connections_refused": [
            "counter", "Refused.", ["reason"], [[[k], v] for k, v in refused.items()]
        ],
    }
    return json.dumps({"id": serial, "families": families}).encode()


class WorkerMetricsTests(SynchronousTestCase):
    """
    The parent's metrics summed from its workers' snapshots (the metrics
    socket faked).
    """

    def setUp(self) -> None:
        self.reactor = FakeSpawner()
        self.supervisor = Supervisor(2, ["twistd"], [], self.reactor, 5.0, {})
        self.metrics = ServiceMetrics("tcp-echo")
        watchWorkers(self.metrics, self.supervisor)
        self.supervisor.startService()
        self.one, self.two = (spawned[0] for spawned in self.reactor.spawned)

    def requests(self, worker) -> list[bytes]:
        """
        @return: the requests sent to C{worker} so far.
        """
        return worker.channel.transport.value().split()

    def test_summed(self) -> None:
        """
        Counters are summed over every worker so far (a replaced worker's
        counts stay), gauges over the running workers; a scrape asks the
        ready workers and waits for their answers.
        """
        self.one.channel.lineReceived(snapshot(None, 0, 0, {}))
        self.two.channel.lineReceived(snapshot(None, 0, 0, {}))
        scraped = self.metrics.refresh()
        self.assertEqual(self.requests(self.one), [b"1"])
        self.one.channel.lineReceived(snapshot("1", 3, 1, {"max-per-peer": 1}))
        self.assertNoResult(scraped)
        self.two.channel.lineReceived(snapshot("1", 4, 2, {"idle-timeout": 2}))
        self.successResultOf(scraped)
        self.assertEqual(self.metrics.values("connections_accepted"), {(): 7})
        self.assertEqual(self.metrics.values("connections_open"), {(): 3})
        self.assertEqual(
            self.metrics.values("connections_refused"),
            {("max-per-peer",): 1, ("idle-timeout",): 2},
        )
        self.reactor.advance(2)
        self.one.processEnded(ended(None, 9))
        self.reactor.advance(0)
        three = self.reactor.spawned[2][0]
        self.assertEqual(self.metrics.values("connections_accepted"), {(): 7})
        self.assertEqual(self.metrics.values("connections_open"), {(): 2})
        three.channel.lineReceived(snapshot(None, 1, 1, {"max-per-peer": 1}))
        self.two.channel.lineReceived(snapshot(None, 5, 2, {"idle-timeout": 2}))
        self.assertEqual(self.metrics.values("connections_accepted"), {(): 9})
        self.assertEqual(self.metrics.values("connections_open"), {(): 3})
        self.assertEqual(
            self.metrics.values("connections_refused"),
            {("max-per-peer",): 2, ("idle-timeout",): 2},
        )
        self.assertEqual(self.metrics.values("worker_scrape_failures"), {(): 0})

    def test_timeout(self) -> None:
        """
        A worker that does not answer in time is counted and skipped (its
        last values stay); one not ready yet is not asked.
        """
        self.one.channel.lineReceived(snapshot(None, 2, 1, {}))
        scraped = self.metrics.refresh()
        self.assertEqual(self.requests(self.two), [])
        self.reactor.advance(SCRAPE_TIMEOUT)
        self.successResultOf(scraped)
        self.assertEqual(self.metrics.values("worker_scrape_failures"), {(): 1})
        self.assertEqual(self.metrics.values("connections_accepted"), {(): 2})
        self.one.channel.lineReceived(snapshot("1", 5, 1, {}))
        self.assertEqual(self.metrics.values("connections_accepted"), {(): 5})


class MetricsReporterTests(SynchronousTestCase):
    """
    A worker's side of its metrics socket.
    """

    def test_reports(self) -> None:
        """
        A snapshot is written as the worker starts, and one in answer to
        each request, with its serial number.
        """
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        metrics = ServiceMetrics("udp-echo")
        count = [4]
        metrics.counter("datagrams_received", "Received.", lambda: count[0])
        adopted = []
        fakeReactor = type("R", (), {"adoptStreamConnection": lambda self, *a: adopted.append(a)})()
        MetricsReporter(metrics, os.dup(theirs.fileno()), fakeReactor).startService()
        theirs.close()
        hello = json.loads(ours.recv(65536))
        self.assertEqual(hello["id"], None)
        self.assertEqual(
            hello["families"]["datagrams_received"], ["counter", "Received.", [], [[[], 4]]]
        )
        [(_, family, factory)] = adopted
        self.assertEqual(family, socket.AF_UNIX)
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        count[0] = 6
        protocol.dataReceived(b"7\n")
        answer = json.loads(transport.value())
        self.assertEqual(answer["id"], "7")
        self.assertEqual(answer["families"]["datagrams_received"][3], [[[], 6]])


def isWorkerListening(event: dict) -> bool:
    """
    @return: whether C{event} is a worker's C{listening on}.
    """
    return "worker" in event and str(event.get("log_format", "")).startswith("listening on")


def isWorkerStart(event: dict) -> bool:
    """
    @return: whether C{event} is the parent's C{worker N started}.
    """
    return str(event.get("log_format", "")).startswith("worker {worker} started")


def closedCount(echoes: list[EchoOnce], count: int, timeout: float = 10) -> Deferred:
    """
    @return: a L{Deferred} firing once C{count} of C{echoes} were closed
        by the server.
    """
    done: Deferred = Deferred()
    closed = []

    def one(_) -> None:
        closed.append(1)
        if len(closed) == count:
            done.callback(None)

    for echo in echoes:
        echo.closed.addCallback(one)
    if not count:
        done.callback(None)
    return done.addTimeout(timeout, reactor)


class SupervisionTests(TwistdTestCase):
    """
    C{--workers N} under twistd.
    """

    async def waitForWorkers(self, server, count: int) -> None:
        """
        Wait until C{count} C{listening on} events came from workers.
        """
        await server.waitForEvent(
            lambda e: len(server.eventsMatching(isWorkerListening)) >= count
        )

    async def test_replaced(self) -> None:
        """
        Two tcp-echo workers share the listener; one killed by its PID is
        logged and replaced, and the service keeps echoing; stopping the
        parent stops both and exits with 0.
        """
        server = await self.startServer(
            ["tcp-echo", "--port", "0", "--workers", "2",
             "--metrics-listen", "tcp:0:interface=127.0.0.1"],
            2,
        )
        (host, port), metrics = server.addresses[:2]
        await self.waitForWorkers(server, 2)
        starts = {e["worker"]: e["pid"] for e in server.eventsMatching(isWorkerStart)}
        self.assertEqual(sorted(starts), [1, 2])
        scrape = await scrapeMetrics(reactor, *metrics)
        self.assertEqual(scrape.value("netservices_workers"), 2)
        os.kill(starts[1], signal.SIGKILL)
        replaced = await server.waitForEvent(lambda e: isWorkerStart(e) and e["pid"] != starts[1] and e["worker"] == 1)
        self.assertIn(
            f"worker 1 (pid {starts[1]}) ended (killed by SIGKILL)",
            " ".join(eventText(e) for e in server.events),
        )
        await self.waitForWorkers(server, 3)
        for _ in range(4):
            echo = EchoOnce(b"still here")
            await connectProtocol(TCP4ClientEndpoint(reactor, host, port), echo)
            self.assertEqual(await echo.echoed, b"still here")
            echo.transport.loseConnection()
        scrape = await scrapeMetrics(reactor, *metrics)
        self.assertEqual(scrape.value("netservices_worker_restarts_total"), 1)
        self.assertEqual(await server.stop(), CLEAN_STOP)
        ended = server.eventsMatching(
            lambda e: str(e.get("log_format", "")).startswith("worker {worker} (pid {pid}) ended:")
        )
        self.assertEqual(sorted(e["pid"] for e in ended), sorted([starts[2], replaced["pid"]]))
        self.assertEqual({e["status"] for e in ended}, {"exit status 0"})

    async def test_metricsSummed(self) -> None:
        """
        The parent's C{/metrics} shows tcp-echo's counters summed over its
        two workers, exactly what was sent; a worker killed by its PID
        takes nothing from the counters, the connections open are the
        survivor's, and the replacement's traffic is added.
        """
        # No per-peer limit: each worker would apply its own, and the
        # kernel may well give one worker most connections.
        server = await self.startServer(
            ["tcp-echo", "--port", "0", "--workers", "2", "--max-per-peer", "0",
             "--metrics-listen", "tcp:0:interface=127.0.0.1"],
            2,
        )
        (host, port), metrics = server.addresses[:2]
        await self.waitForWorkers(server, 2)
        starts = {e["worker"]: e["pid"] for e in server.eventsMatching(isWorkerStart)}
        echoes = [EchoOnce(b"x" * n) for n in range(1, 13)]
        for echo in echoes:
            await connectProtocol(TCP4ClientEndpoint(reactor, host, port), echo)
            self.addCleanup(echo.transport.abortConnection)
        await gatherResults([echo.echoed for echo in echoes])
        sent = sum(range(1, 13))
        scrape = await scrapeMetrics(reactor, *metrics)
        self.assertEqual(scrape.value("netservices_connections_accepted_total", service="tcp-echo"), 12)
        self.assertEqual(scrape.value("netservices_connections_open", service="tcp-echo"), 12)
        self.assertEqual(scrape.value("netservices_bytes_received_total"), sent)
        self.assertEqual(scrape.value("netservices_bytes_sent_total"), sent)
        self.assertEqual(scrape.value("netservices_workers"), 2)
        self.assertEqual(scrape.value("netservices_worker_scrape_failures_total"), 0)
        self.assertIsNotNone(scrape.value("process_cpu_seconds_total"))

        os.kill(starts[1], signal.SIGKILL)
        await server.waitForEvent(lambda e: isWorkerStart(e) and e["pid"] != starts[1])
        await self.waitForWorkers(server, 3)
        after = await scrapeMetrics(reactor, *metrics)
        self.assertEqual(after.value("netservices_worker_restarts_total"), 1)
        self.assertEqual(after.value("netservices_connections_accepted_total"), 12)
        self.assertEqual(after.value("netservices_bytes_received_total"), sent)
        self.assertEqual(after.value("netservices_bytes_sent_total"), sent)
        survivors = after.value("netservices_connections_open")
        await closedCount(echoes, 12 - int(survivors))

        for data in [b"again", b"and again"]:
            echo = EchoOnce(data)
            await connectProtocol(TCP4ClientEndpoint(reactor, host, port), echo)
            self.assertEqual(await echo.echoed, data)
            echo.transport.loseConnection()
            await echo.closed
        final = await scrapeMetrics(reactor, *metrics)
        self.assertEqual(final.value("netservices_connections_accepted_total"), 14)
        self.assertEqual(final.value("netservices_bytes_received_total"), sent + 14)
        self.assertEqual(final.value("netservices_bytes_sent_total"), sent + 14)
        self.assertEqual(final.value("netservices_worker_scrape_failures_total"), 0)

    async def test_udp(self) -> None:
        """
        A udp-echo worker answers the datagrams sent to the socket it shares.
        """
        server = await self.startServer(["udp-echo", "--port", "0", "--workers", "1"], 1)
        host, port = server.addresses[0]
        await self.waitForWorkers(server, 1)
        client = openDatagramClient(reactor, "127.0.0.1")
        self.addCleanup(client.close)
        for n in range(5):
            client.send(b"datagram %d" % n, (host, port))
            self.assertEqual((await client.nextDatagram())[0], b"datagram %d" % n)

    async def test_tcpInfo(self) -> None:
        """
        tcp-info workers answer on the shared TCP and HTTP listeners.
        """
        server = await self.startServer(
            ["tcp-info", "--port", "0", "--http-listen", "tcp:0:interface=127.0.0.1",
             "--workers", "1"],
            2,
        )
        await self.waitForWorkers(server, 2)
        (host, port), (_, httpPort) = server.addresses[:2]
        answer = await fetchStream(reactor, host, port)
        self.assertIn(f"local_port={port}", answer.data.decode())
        answer = await fetchStream(reactor, host, httpPort, b"GET / HTTP/1.0\r\n\r\n")
        self.assertIn(f"local_port={httpPort}", answer.data.decode())
