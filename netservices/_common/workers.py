# -*- test-case-name: tests._common.test_workers -*-
"""
C{--workers N}: a stateless service served by N processes that share its
listening sockets, supervised by the parent.

The parent binds every listener itself (as it would without workers: ports
below 1024 before twistd drops privileges, one-line errors, C{listening
on} logged with the real port), never reads from them, and starts N
workers: C{twistd netservices SERVICE} with the same options, the sockets
as descriptors 3, 4, ... and their numbers in C{$NETSERVICES_WORKER_FDS}.
A worker listens on those instead of binding (the kernel hands each
connection or datagram to one of them).  Workers log JSON lines to a pipe;
the parent logs their events as its own, with a C{worker} field.

Metrics: each worker gets one end of a UNIX socket pair as descriptor
C{$NETSERVICES_WORKER_METRICS}; the parent keeps the other.  The worker
writes a snapshot of its metrics (L{netservices._common.metrics.ServiceMetrics.snapshot}, a JSON
line)
as it starts, then one in answer to each request (a line with a serial
number) the parent sends when its C{/metrics} is scraped.  The parent
waits up to L{SCRAPE_TIMEOUT} for the answers, then serves the workers'
metrics under their own names and labels: counters summed over every
worker it has had (it adds what each snapshot grew, so a replaced
worker's counts stay), gauges summed over the workers running.  A worker
that does not answer in time is counted in
C{netservices_worker_scrape_failures_total} and its last snapshot used.
Pulled rather than pushed: the numbers are exact at each scrape, a worker
does no work between scrapes, and the private socket cannot be mixed up
with the log lines or reached from outside; a worker killed outright loses
only what it counted since the last scrape.

A worker that dies is logged and replaced (after a second if it lived less
than that, so a worker that cannot start does not spin).  Stopping the
parent stops them all: a graceful stop (C{SIGTERM}) passes C{SIGTERM} on
and waits for them to drain; other stops send C{SIGTERM}, then C{SIGKILL}
after C{--shutdown-timeout}.  A worker whose parent dies gets C{SIGTERM}
from the kernel (C{PR_SET_PDEATHSIG}).

Listeners that can be shared: C{tcp:}, C{tcp6:}, C{unix:}, C{systemd:}
and C{haproxy:} over them, and C{udp:}; TLS listeners cannot.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import sys
from typing import Mapping

from twisted.application import service
from twisted.internet.defer import Deferred, DeferredList, TimeoutError, succeed
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.protocol import DatagramProtocol, Factory, ProcessProtocol
from twisted.logger import Logger, eventFromJSON, globalLogPublisher
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python import usage

import attrs

from netservices._common.eager import eagerEquivalent
from netservices._common.listen import (
    DatagramAddress,
    DatagramListener,
    StreamListener,
    numberOption,
)
from netservices._common.proxy import ProxyHeaderEndpoint

log = Logger(namespace="netservices.workers")

#: The environment variable that makes a process a worker: the inherited
#: listening sockets' descriptors, in the order of the listeners.
WORKER_FDS = "NETSERVICES_WORKER_FDS"

#: The worker's number (1 to N), for its log.
WORKER_INDEX = "NETSERVICES_WORKER"

#: The descriptor of the worker's end of its metrics socket.
WORKER_METRICS = "NETSERVICES_WORKER_METRICS"

#: Seconds a scrape of the parent waits for each worker's metrics.
SCRAPE_TIMEOUT = 1.0

#: The options holding listeners: (descriptions, parsed endpoints).
SHARED = [("listen", "endpoints"), ("http-listen", "http-endpoints")]

#: Listener kinds whose socket can be shared.
SHAREABLE = {"tcp", "tcp6", "unix", "systemd", "udp"}

#: Seconds: a worker that lived less is replaced after this delay.
RESTART_DELAY = 1.0

#: Not L{netservices._common.listen.nonNegativeInt}, whose help says that
#: 0 means no limit.
workerCount = numberOption(int, lambda n: 0 <= n <= 256, "an integer from 0 to 256")

#: Variables of service managers that a worker must not see.
MANAGER_VARIABLES = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def shareable(description: str) -> bool:
    """
    @return: whether the socket of a listener so described can be shared
        by worker processes.
    """
    kind, _, rest = description.partition(":")
    if kind == "haproxy":
        return shareable(rest)
    return kind in SHAREABLE


def adoptedStreamEndpoint(reactor, description: str, fd: int, eagerWrites: bool):
    """
    @return: an endpoint listening on inherited socket C{fd} the way
        C{description} would (behind a PROXY header for C{haproxy:}).
    """
    kind, _, rest = description.partition(":")
    if kind == "haproxy":
        return ProxyHeaderEndpoint(
            adoptedStreamEndpoint(reactor, rest, fd, eagerWrites), reactor
        )
    with socket.socket(fileno=os.dup(fd)) as probe:
        family = probe.family
    endpoint = AdoptedStreamServerEndpoint(reactor, fd, family)
    return eagerEquivalent(reactor, endpoint) if eagerWrites else endpoint


def _dieWithParent() -> None:
    """
    Ask the kernel for C{SIGTERM} when the parent dies (Linux).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class WorkerOptions(usage.Options):
    """
    C{--workers}, mixed into the options of the stateless services by
    L{netservices._common.operations.withOperations}.  In a worker
    (C{$NETSERVICES_WORKER_FDS} set), the listeners are replaced by the
    inherited sockets.

    @ivar arguments: the sub-command's arguments, for the workers.
    @ivar workerIndex: the worker's number in a worker, else L{None}.
    @ivar metricsChannel: a worker's end of its metrics socket, else
        L{None}.
    """

    workerIndex: int | None = None
    metricsChannel: int | None = None
    environ: Mapping[str, str] = os.environ

    optParameters = [
        [
            "workers",
            None,
            0,
            "Serve with this many worker processes sharing the listening"
            " sockets, supervised by this one (a worker that dies is"
            " replaced); 0: serve in this process.",
            workerCount,
        ],
    ]

    def parseOptions(self, options=None) -> None:
        self.arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def postOptions(self) -> None:
        inherited = self.environ.get(WORKER_FDS)
        if inherited is None:
            if self["workers"]:
                for key, _ in SHARED:
                    for description in self.get(key, []):
                        if not shareable(description):
                            raise usage.UsageError(
                                f"--workers: {description!r} cannot be shared"
                                " (tcp:, tcp6:, unix:, systemd:, haproxy:, udp: can)"
                            )
            super().postOptions()
            return
        self._adoptListeners([int(fd) for fd in inherited.split()])

    def _adoptListeners(self, fds: list[int]) -> None:
        self.workerIndex = int(self.environ.get(WORKER_INDEX, "0"))
        channel = self.environ.get(WORKER_METRICS)
        self.metricsChannel = int(channel) if channel else None
        self["workers"] = 0
        # systemd: descriptions would look for systemd's variables, which
        # workers do not have: parse a stand-in, keep the description.
        standIns: dict[str, dict[int, str]] = {}
        for key, _ in SHARED:
            if key in self:
                for i, description in enumerate(self[key]):
                    if "systemd:" in description:
                        standIns.setdefault(key, {})[i] = description
                        self[key][i] = "tcp:0"
        super().postOptions()
        for key, replaced in standIns.items():
            for i, description in replaced.items():
                self[key][i] = description
        pending = list(fds)
        for key, endpointsKey in SHARED:
            if endpointsKey not in self:
                continue
            adopted = []
            for description, endpoint in zip(self[key], self[endpointsKey]):
                if not pending:
                    raise usage.UsageError(f"{WORKER_FDS}: fewer sockets than listeners")
                fd = pending.pop(0)
                if isinstance(endpoint, DatagramAddress):
                    adopted.append(attrs.evolve(endpoint, fd=fd))
                else:
                    adopted.append(
                        adoptedStreamEndpoint(
                            self.getReactor(), description, fd, self.eagerWrites
                        )
                    )
            self[endpointsKey] = adopted
        _dieWithParent()


def workerCommand(serviceName: str, arguments: list[str]) -> list[str]:
    """
    @return: the command line of a worker: twistd in the foreground,
        logging JSON lines to standard output, serving C{serviceName}.
    """
    return [
        sys.executable,
        "-c",
        "from twisted.scripts.twistd import run; run()",
        "--nodaemon",
        "--pidfile=",
        "--logger=netservices.logs.jsonLines",
        "netservices",
        serviceName,
        *arguments,
    ]


def workerEnvironment(
    environ: Mapping[str, str], index: int, fds: list[int], channel: int | None = None
) -> dict[str, str]:
    """
    @return: the environment of worker C{index} (1 to N) inheriting the
        sockets C{fds} and the metrics socket C{channel}.
    """
    env = {k: v for k, v in environ.items() if k not in MANAGER_VARIABLES}
    env.update(
        {
            WORKER_FDS: " ".join(map(str, fds)),
            WORKER_INDEX: str(index),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if channel is not None:
        env[WORKER_METRICS] = str(channel)
    return env


class _Channel(LineOnlyReceiver):
    """
    A metrics socket: JSON lines one way, serial numbers the other.
    """

    delimiter = b"\n"
    MAX_LENGTH = 16 * 1024 * 1024

    def lineLengthExceeded(self, line: bytes) -> None:
        log.warn("metrics socket: a line of {length} bytes is too long", length=len(line))
        self.transport.loseConnection()


class _OneProtocol(Factory):
    """
    Builds one given protocol (for an adopted connection).
    """

    noisy = False

    def __init__(self, protocol) -> None:
        self.protocol_ = protocol

    def buildProtocol(self, addr):
        return self.protocol_


class MetricsReporter(service.Service):
    """
    A worker's side of its metrics socket: a snapshot as it starts
    (written before the listeners say they listen), then one in answer to
    each request.
    """

    def __init__(self, metrics, fd: int, reactor) -> None:
        self.metrics = metrics
        self.fd = fd
        self.reactor = reactor

    def _message(self, serial: str | None) -> bytes:
        return json.dumps({"id": serial, "families": self.metrics.snapshot()}).encode() + b"\n"

    def startService(self) -> None:
        super().startService()
        # Written at once (the socket is still blocking and empty), so that
        # the parent has it before any log line saying the worker is ready.
        os.write(self.fd, self._message(None))
        channel = _Channel()
        channel.lineReceived = lambda line: channel.sendLine(
            self._message(line.decode("ascii", "replace"))[:-1]
        )
        self.reactor.adoptStreamConnection(self.fd, socket.AF_UNIX, _OneProtocol(channel))
        os.close(self.fd)


class WorkerChannel(_Channel):
    """
    The parent's side of a worker's metrics socket.

    @ivar ready: whether the worker's first snapshot came.
    """

    def __init__(self, supervisor: Supervisor, worker: WorkerProcess) -> None:
        self.supervisor = supervisor
        self.worker = worker
        self.ready = False
        self.serial = 0
        self.waiting: dict[str, Deferred] = {}

    def lineReceived(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            families = message["families"]
        except (ValueError, KeyError, TypeError):
            log.warn("worker {worker}: bad metrics line", worker=self.worker.index)
            return
        self.ready = True
        self.supervisor.snapshotReceived(self.worker, families)
        waiter = self.waiting.pop(str(message.get("id")), None)
        if waiter is not None:
            waiter.callback(None)

    def ask(self, timeout: float) -> Deferred:
        """
        Ask the worker for a snapshot.

        @return: a L{Deferred} firing when it came, or after C{timeout}
            seconds (counted as a failure, logged).
        """
        self.serial += 1
        serial = str(self.serial)
        waiter = self.waiting[serial] = Deferred()
        self.sendLine(serial.encode("ascii"))

        def failed(reason) -> None:
            self.waiting.pop(serial, None)
            self.supervisor.scrapeFailures += 1
            log.warn(
                "worker {worker} (pid {pid}) did not send its metrics: {reason}",
                worker=self.worker.index,
                pid=self.worker.pid,
                reason=(
                    f"no answer in {timeout:g} s"
                    if reason.check(TimeoutError)
                    else reason.getErrorMessage()
                ),
            )

        return waiter.addTimeout(timeout, self.supervisor.reactor).addErrback(failed)

    def connectionLost(self, reason) -> None:
        self.ready = False
        for waiter in list(self.waiting.values()):
            waiter.errback(reason)


def _status(reason) -> str:
    code = getattr(reason.value, "exitCode", None)
    number = getattr(reason.value, "signal", None)
    if number is not None:
        return f"killed by {signal.Signals(number).name}"
    return f"exit status {code}"


def _unflatten(event: dict) -> None:
    """
    Let an event that came as JSON be formatted from its own fields when
    they are all there: the flattened copy that JSON carries ignores format
    specifications (C{{seconds:.3f}} would show every digit).
    """
    try:
        str(event.get("log_format", "")).format(**event)
    except Exception:
        return
    event.pop("log_flattened", None)


class WorkerProcess(ProcessProtocol):
    """
    One worker, as its supervisor sees it: its log lines are logged again
    here, its end reported.

    @ivar index: its number, 1 to N.
    @ivar pid: its PID.
    @ivar started: when it was started.
    @ivar channel: the parent's end of its metrics socket.
    @ivar values: the values of its last metrics snapshot, by metric name.
    """

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.pid: int | None = None
        self.started = 0.0
        self.channel: WorkerChannel | None = None
        self.values: dict[str, dict[tuple[str, ...], float]] = {}
        self._partial = {1: b"", 2: b""}

    def childDataReceived(self, fd: int, data: bytes) -> None:
        lines = (self._partial[fd] + data).split(b"\n")
        self._partial[fd] = lines.pop()
        for line in lines:
            self._line(fd, line)

    def _line(self, fd: int, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if not text:
            return
        if fd == 1:
            try:
                event = eventFromJSON(text)
            except ValueError:
                event = None
            if isinstance(event, dict):
                _unflatten(event)
                event["worker"] = self.index
                event["worker_pid"] = self.pid
                event["log_system"] = f"{event.get('log_namespace', '-')} worker {self.index}"
                globalLogPublisher(event)
                return
        log.warn(
            "worker {worker} (pid {pid}) says: {text}",
            worker=self.index,
            pid=self.pid,
            text=text,
        )

    def processEnded(self, reason) -> None:
        for fd, rest in self._partial.items():
            if rest:
                self._line(fd, rest)
        self.supervisor.workerEnded(self, reason)


class Supervisor(service.Service):
    """
    Runs N workers on the sockets of C{listeners} and replaces those that
    die (see the module's documentation).

    @ivar workers: the running workers by number.
    @ivar restarts: workers replaced so far.
    @ivar scrapeFailures: requests for a worker's metrics not answered.
    @ivar families: the definitions of the workers' metrics, by name:
        C{(kind, documentation, labels)}.
    @ivar counters: the workers' counters, summed over every worker so
        far, by name.
    @ivar newFamily: called with a name and its definition when a worker
        first shows a metric.
    """

    def __init__(
        self,
        count: int,
        command: list[str],
        listeners: list,
        reactor,
        timeout: float,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        """
        @param command: a worker's command line.
        @param listeners: the parent's listeners, bound, whose sockets are
            shared.
        @param timeout: seconds a stop waits before killing workers.
        """
        self.count = count
        self.command = command
        self.listeners = listeners
        self.reactor = reactor
        self.timeout = timeout
        self.environ = environ
        self.workers: dict[int, WorkerProcess] = {}
        self.restarts = 0
        self.scrapeFailures = 0
        self.families: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        self.counters: dict[str, dict[tuple[str, ...], float]] = {}
        self.newFamily = lambda name, kind, documentation, labels: None
        self.stopping = False
        self._restartCalls: dict[int, object] = {}
        self._allEnded: list[Deferred] = []

    def startService(self) -> None:
        super().startService()
        self.stopping = False
        for index in range(1, self.count + 1):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        self._restartCalls.pop(index, None)
        fds = [listener.port.fileno() for listener in self.listeners]
        childFDs: dict[int, object] = {0: "w", 1: "r", 2: "r"}
        childFDs.update({3 + i: fd for i, fd in enumerate(fds)})
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel = 3 + len(fds)
        childFDs[channel] = theirs.fileno()
        worker = WorkerProcess(self, index)
        try:
            transport = self.reactor.spawnProcess(
                worker,
                self.command[0],
                self.command,
                env=workerEnvironment(
                    self.environ, index, list(range(3, channel)), channel
                ),
                childFDs=childFDs,
            )
        finally:
            theirs.close()
        with ours:
            worker.channel = WorkerChannel(self, worker)
            self.reactor.adoptStreamConnection(
                ours.fileno(), socket.AF_UNIX, _OneProtocol(worker.channel)
            )
        transport.closeStdin()
        worker.pid = transport.pid
        worker.started = self.reactor.seconds()
        self.workers[index] = worker
        log.info("worker {worker} started: pid {pid}", worker=index, pid=worker.pid)

    def workerEnded(self, worker: WorkerProcess, reason) -> None:
        """
        A worker ended: replace it unless stopping.
        """
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        status = _status(reason)
        if self.stopping:
            log.info(
                "worker {worker} (pid {pid}) ended: {status}",
                worker=worker.index,
                pid=worker.pid,
                status=status,
            )
            if not self.workers:
                waiters, self._allEnded = self._allEnded, []
                for waiter in waiters:
                    waiter.callback(None)
            return
        lived = self.reactor.seconds() - worker.started
        delay = 0.0 if lived >= RESTART_DELAY else RESTART_DELAY
        self.restarts += 1
        log.warn(
            "worker {worker} (pid {pid}) ended ({status}) after {lived:.1f} s;"
            " starting another{when}",
            worker=worker.index,
            pid=worker.pid,
            status=status,
            lived=lived,
            when=f" in {delay:g} s" if delay else "",
        )
        self._restartCalls[worker.index] = self.reactor.callLater(
            delay, self._spawn, worker.index
        )

    def snapshotReceived(self, worker: WorkerProcess, families: dict) -> None:
        """
        A worker sent its metrics: add what its counters grew to the
        totals, keep its values.
        """
        for name, (kind, documentation, labels, samples) in families.items():
            if name not in self.families:
                self.families[name] = (kind, documentation, tuple(labels))
                self.newFamily(name, kind, documentation, tuple(labels))
            values = {tuple(key): number for key, number in samples}
            if kind == "counter":
                before = worker.values.get(name, {})
                totals = self.counters.setdefault(name, {})
                for key, number in values.items():
                    grown = number - before.get(key, 0)
                    if grown > 0 or key not in totals:
                        totals[key] = totals.get(key, 0) + max(grown, 0)
            worker.values[name] = values

    def total(self, name: str) -> dict[tuple[str, ...], float]:
        """
        @return: the workers' metric C{name} by label values: a counter
            summed over every worker so far, a gauge over those running.
        """
        if self.families[name][0] == "counter":
            return self.counters.get(name, {})
        totals: dict[tuple[str, ...], float] = {}
        for worker in self.workers.values():
            for key, number in worker.values.get(name, {}).items():
                totals[key] = totals.get(key, 0) + number
        return totals

    def collect(self) -> Deferred:
        """
        Ask the running workers for their metrics.

        @return: a L{Deferred} firing when all have answered or timed out.
        """
        return DeferredList(
            [
                worker.channel.ask(SCRAPE_TIMEOUT)
                for worker in self.workers.values()
                if worker.channel is not None and worker.channel.ready
            ]
        )

    def _signalAll(self, name: str) -> None:
        for worker in list(self.workers.values()):
            try:
                worker.transport.signalProcess(name)
            except Exception:
                pass

    def _whenAllEnded(self) -> Deferred:
        if not self.workers:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._allEnded.append(waiter)
        return waiter

    def drain(self) -> Deferred:
        """
        Stop replacing workers and ask them to stop gracefully (C{SIGTERM}).

        @return: a L{Deferred} firing when they all have ended.
        """
        if not self.stopping:
            self.stopping = True
            for call in self._restartCalls.values():
                call.cancel()
            self._restartCalls.clear()
            self._signalAll("TERM")
        return self._whenAllEnded()

    def stopService(self) -> Deferred:
        """
        Stop the workers: C{SIGTERM} (if L{drain} did not already), then
        C{SIGKILL} to those left after the timeout (at once if L{drain}
        already waited).
        """
        super().stopService()
        drained = self.stopping
        ended = self.drain()
        if self.workers:
            kill = self.reactor.callLater(0 if drained else self.timeout, self._signalAll, "KILL")
            ended.addBoth(lambda result: (kill.active() and kill.cancel(), result)[1])
        return ended


def watchWorkers(metrics, supervisor: Supervisor) -> None:
    """
    Add the supervisor's metrics (workers running, replaced, scrapes they
    did not answer) and the workers' own, collected at each scrape.
    """
    metrics.gauge("workers", "Worker processes running.", lambda: len(supervisor.workers))
    metrics.counter(
        "worker_restarts", "Workers that ended and were replaced.", lambda: supervisor.restarts
    )
    metrics.counter(
        "worker_scrape_failures",
        "Requests for a worker's metrics not answered in time (its last values were used).",
        lambda: supervisor.scrapeFailures,
    )
    metrics.refreshers.append(supervisor.collect)

    def newFamily(name: str, kind: str, documentation: str, labels: tuple[str, ...]) -> None:
        add = metrics.counter if kind == "counter" else metrics.gauge
        try:
            add(name, documentation, lambda: supervisor.total(name), labels)
        except ValueError:
            log.warn("a worker's metric {name!r} clashes with the parent's", name=name)

    supervisor.newFamily = newFamily


class _SharedStreamListener(StreamListener):
    """
    Binds a listener for the workers and never accepts on it.
    """

    def _boundPort(self, port) -> None:
        port.stopReading()


class _SharedDatagramListener(DatagramListener):
    """
    Binds a UDP socket for the workers and never reads from it.
    """

    def _boundPort(self, port) -> None:
        port.stopReading()


def supervisedService(options, reactor, timeout: float) -> service.MultiService:
    """
    @return: the parent of C{--workers N}: the listeners, bound for the
        workers, and their L{Supervisor} (C{top.supervisor}).
    """
    top = service.MultiService()
    listeners = []
    for key, endpointsKey in SHARED:
        for description, endpoint in zip(options.get(key, []), options.get(endpointsKey, [])):
            if isinstance(endpoint, DatagramAddress):
                listener = _SharedDatagramListener(
                    description, endpoint, DatagramProtocol, reactor
                )
            else:
                placeholder = Factory()
                placeholder.noisy = False
                listener = _SharedStreamListener(description, endpoint, placeholder, reactor)
            listener.setServiceParent(top)
            listeners.append(listener)
    supervisor = Supervisor(
        options["workers"],
        workerCommand(options.serviceName, options.arguments),
        listeners,
        reactor,
        timeout,
    )
    supervisor.setServiceParent(top)
    top.supervisor = supervisor
    return top
