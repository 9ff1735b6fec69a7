# -*- test-case-name: tests.test_testing -*-
"""
Helpers for testing the netservices commands as a user runs them:
C{twistd -n netservices SERVICE}, C{twist netservices SERVICE} and the
C{netservices} console command, each started as a child process of the test.

For example, in a L{twisted.trial.unittest.TestCase}::

    from twisted.internet import reactor
    from netservices.testing import runCommand, startTwistd

    async def test_answers(self):
        server = await startTwistd(reactor, ["tcp-info", "--port", "0"], 1)
        self.addCleanup(server.stop)
        host, port = server.addresses[0]
        out, err, code = await runCommand(
            reactor, ["info", "tcp", f"{host}:{port}", "--json"]
        )

The scripts are looked up next to C{sys.executable} (the virtualenv the
tests run in), with C{python -c}/C{python -m} as a fallback.  Servers log
one JSON event per line to standard output, which L{TwistdProcess} parses,
so a test learns the ports chosen for C{port 0} from the C{listening on}
events and can wait for any other event without polling.

L{fetchStream} (a TCP client that may send a PROXY header and start TLS;
L{fetchFrom} for any endpoint) and L{openDatagramClient} (a UDP socket) talk to the servers without any
netservices code on the client side.

Everything is bounded by a timeout.  A process is only ever signalled
through the transport of the process we started (its own PID); one that
outlives its timeout is killed with C{SIGKILL} and waited for, so that none
is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import subprocess
import socket
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import attrs
from cryptography.hazmat.primitives import serialization
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectionDone, ProcessDone, ProcessExitedAlready
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import DatagramProtocol, Factory, ProcessProtocol, Protocol
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.words.protocols.irc import IRCClient

from netservices._common.tls import createSelfSignedCertificate

#: Seconds any one step (starting, waiting for an event, stopping, running a
#: command) may take before it fails.
DEFAULT_TIMEOUT = 30.0

#: The exit status (see L{ProcessFailed.exitCode}) of a netservices service
#: that stopped cleanly on C{SIGTERM}: it drains its work and exits with 0
#: (L{netservices._common.operations}; plain C{twistd} and C{twist} would
#: re-raise the signal instead).
CLEAN_STOP = 0

#: Arguments for C{sys.executable} that stand in for each console script
#: when it is not next to C{sys.executable}.
FALLBACKS = {
    "twistd": ["-c", "from twisted.scripts.twistd import run; run()"],
    "twist": ["-m", "twisted"],
    "netservices": ["-m", "netservices"],
}

#: The observer factory that makes C{twistd} log JSON lines to stdout.
JSON_LOGGER = "netservices.logs.jsonLines"

_RECORD_BOUNDARY = re.compile(rb"[\n\x1e]")
_ADDRESS = re.compile(
    r"^(?P<transport>\w+) (?:\[(?P<ipv6>[^\]]*)\]|(?P<host>[^\s:]*)):(?P<port>\d+)$"
)


class ProcessFailed(Exception):
    """
    A child process did not do what was expected of it: it exited too soon,
    or (see L{ProcessTimeout}) took too long.

    @ivar argv: the command line.
    @ivar exitCode: its exit status (minus the signal number if a signal
        ended it), or L{None} if it has not ended.
    @ivar stdout: everything it wrote to standard output.
    @ivar stderr: everything it wrote to standard error.
    """

    def __init__(
        self,
        message: str,
        argv: Sequence[str],
        exitCode: int | None,
        stdout: bytes,
        stderr: bytes,
    ) -> None:
        self.argv = list(argv)
        self.exitCode = exitCode
        self.stdout = stdout
        self.stderr = stderr
        shownOut = "\n".join(_readableRecords(stdout))
        super().__init__(
            f"{message}\ncommand: {' '.join(self.argv)}\nexit status: {exitCode}"
            f"\n--- stderr ---\n{stderr.decode('utf-8', 'replace')}"
            f"\n--- stdout ---\n{shownOut}"
        )


class ProcessTimeout(ProcessFailed):
    """
    A child process took longer than its timeout; it was killed (and has
    ended) by the time this is raised.
    """


@attrs.frozen
class ListeningAddress:
    """
    One C{listening on} event of a server.

    @ivar transport: C{"tcp"}, C{"udp"} or C{"unix"}.
    @ivar host: the bound address (an IPv6 address without brackets), or
        the socket path for C{unix}.
    @ivar port: the bound port; L{None} for C{unix}.
    @ivar description: the C{--listen} description it came from.
    """

    transport: str
    host: str
    port: int | None
    description: str


def parseAddress(text: str) -> tuple[str, str, int | None]:
    """
    Parse the C{address} field of a C{listening on} event.

    @param text: e.g. C{"tcp 127.0.0.1:43567"}, C{"udp [::1]:5000"} or
        C{"unix /run/x.sock"}.
    @return: C{(transport, host, port)}; C{port} is L{None} for C{unix}.
    @raise ValueError: if C{text} is none of those.
    """
    match = _ADDRESS.match(text)
    if match is not None:
        host = match.group("ipv6") if match.group("ipv6") is not None else match.group("host")
        return match.group("transport"), host, int(match.group("port"))
    transport, _, path = text.partition(" ")
    if transport == "unix" and path:
        return transport, path, None
    raise ValueError(f"not a listening address: {text!r}")


def listeningAddress(event: dict) -> ListeningAddress | None:
    """
    @return: the address a C{listening on} event announces, or L{None} if
        C{event} is another event.
    """
    if not str(event.get("log_format", "")).startswith("listening on"):
        return None
    address, description = event.get("address"), event.get("description")
    if not isinstance(address, str) or not isinstance(description, str):
        return None
    try:
        transport, host, port = parseAddress(address)
    except ValueError:
        return None
    return ListeningAddress(transport, host, port, description)


def eventText(event: dict) -> str:
    """
    @return: a logged event (as parsed from JSON) as the one line of text
        that a text log would show; lines written to C{stderr} (which
        C{twistd} logs) as they were written.
    """
    if isinstance(event.get("log_io"), str):
        return event["log_io"]
    if "log_format" in event:
        text = formatEvent(event)
        if text:
            return text
    failure = event.get("log_failure")
    if isinstance(failure, dict) and isinstance(failure.get("type"), dict):
        # Logger.failure without a message: say what was raised, and where.
        kind = failure["type"]
        where = "".join(
            f"\n  {frame[1]}:{frame[2]} in {frame[0]}"
            for frame in failure.get("frames", [])
            if isinstance(frame, list) and len(frame) >= 3
        )
        return (
            f"{event.get('log_namespace', '?')} logged a failure:"
            f" {kind.get('__module__')}.{kind.get('__name__')}{where}"
        )
    return json.dumps(event)


def hasTraceback(event: dict) -> bool:
    """
    @return: whether C{event} (as parsed from JSON) reports an exception
        with its traceback: C{Logger.failure}, legacy C{log.err}, or an
        "Unhandled Error" of the reactor.
    """
    return (
        "log_failure" in event
        or "failure" in event
        or "Traceback (most recent call last)" in str(event.get("log_text", ""))
    )


def isError(event: dict) -> bool:
    """
    @return: whether C{event} (as parsed from JSON) was logged at level
        error or critical, or reports an exception.
    """
    level = event.get("log_level")
    name = level.get("name") if isinstance(level, dict) else None
    return bool(event.get("isError")) or name in ("error", "critical") or hasTraceback(event)


def _readableRecords(output: bytes) -> list[str]:
    """
    @return: the records of C{output}, JSON events shown as L{eventText}.
    """
    shown = []
    for record in _RECORD_BOUNDARY.split(output):
        event = parseLogRecord(record)
        if event is not None:
            shown.append(eventText(event))
        elif record.strip():
            shown.append(record.decode("utf-8", "replace").rstrip())
    return shown


def parseLogRecord(record: bytes) -> dict | None:
    """
    Parse one record of a JSON log, as written by C{twistd
    --logger=netservices.logs.jsonLines} (one object per line) or C{twist
    --log-format=json} (each object after a C{\\x1e} record separator).

    @return: the event, or L{None} if C{record} is not a JSON object.
    """
    record = record.strip(b"\x1e \t\r\n")
    if not record:
        return None
    try:
        event = json.loads(record)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def scriptCommand(name: str, fallback: Sequence[str] | None = None) -> list[str]:
    """
    @param fallback: arguments for C{sys.executable} that do what the
        script does; by default those of L{FALLBACKS}.
    @return: the command line that runs the console script C{name} of the
        running Python environment: the script next to C{sys.executable}
        if there is one, else C{sys.executable} with C{fallback}.
    """
    script = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), name)
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [script]
    return [sys.executable, *(FALLBACKS[name] if fallback is None else fallback)]


def twistdCommand(args: Sequence[str], runner: str = "twistd") -> list[str]:
    """
    @param args: the sub-command and its options, e.g. C{["tcp-info",
        "--port", "0"]}.
    @param runner: C{"twistd"} (in the foreground, without a PID file,
        logging JSON lines to stdout) or C{"twist"} (logging JSON records).
    @return: the command line that runs a netservices service.
    """
    if runner == "twistd":
        command = scriptCommand("twistd")
        return [*command, "-n", "--pidfile=", f"--logger={JSON_LOGGER}", "netservices", *args]
    if runner == "twist":
        command = scriptCommand("twist")
        return [*command, "--log-format=json", "netservices", *args]
    raise ValueError(f"unknown runner {runner!r}: expected 'twistd' or 'twist'")


def netservicesCommand(args: Sequence[str]) -> list[str]:
    """
    @return: the command line that runs C{netservices ARGS}.
    """
    return [*scriptCommand("netservices"), *args]


def childEnvironment() -> dict[str, str]:
    """
    @return: the environment for child processes: ours, with unbuffered
        output so that every log line arrives as soon as it is written.
    """
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _exitCode(reason: Failure) -> int | None:
    """
    @return: the exit status in C{processEnded}'s C{reason}, or minus the
        number of the signal that ended the process.
    """
    code = getattr(reason.value, "exitCode", None)
    if code is not None:
        return code
    number = getattr(reason.value, "signal", None)
    if number is not None:
        return -number
    return 0 if reason.check(ProcessDone) else None


def _spawn(
    reactor, protocol: ProcessProtocol, argv: Sequence[str], env, path: str | None = None
) -> str | None:
    """
    Start C{argv} with C{protocol} in directory C{path}, or by default in a
    new temporary directory which is removed when the process has ended.

    @return: the temporary directory, or L{None} if C{path} was given.
    """
    directory = tempfile.mkdtemp(prefix="netservices-test-") if path is None else None
    try:
        reactor.spawnProcess(
            protocol,
            argv[0],
            list(argv),
            env=childEnvironment() if env is None else env,
            path=path if directory is None else directory,
        )
    except BaseException:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    return directory


def _deadline(
    reactor,
    waiting: Deferred,
    timeout: float,
    kill: Callable[[], None],
    timedOut: Callable[[], Exception],
) -> Deferred:
    """
    Give C{waiting} C{timeout} seconds; after that, C{kill} the process and
    fail with C{timedOut()} once C{waiting} has fired.

    @param waiting: fires or fails at the latest when the process has ended.
    @return: a L{Deferred} with C{waiting}'s result.
    """
    result: Deferred = Deferred()
    expired: list[bool] = []

    def expire() -> None:
        expired.append(True)
        kill()

    call = reactor.callLater(timeout, expire)

    def finish(outcome) -> None:
        if call.active():
            call.cancel()
        if expired:
            result.errback(Failure(timedOut()))
        elif isinstance(outcome, Failure):
            result.errback(outcome)
        else:
            result.callback(outcome)

    waiting.addBoth(finish)
    return result


class _ProcessBase(ProcessProtocol):
    """
    What L{TwistdProcess} and L{runProcess} share: output, exit status, and
    signals sent to our own PID only.
    """

    def __init__(self, reactor, argv: Sequence[str]) -> None:
        self.reactor = reactor
        self.argv = list(argv)
        self.directory: str | None = None
        self.exitCode: int | None = None
        self.ended = False
        self._stdout = bytearray()
        self._stderr = bytearray()
        self._endWaiters: list[Deferred] = []

    @property
    def stdout(self) -> bytes:
        """
        Everything the process wrote to standard output so far.
        """
        return bytes(self._stdout)

    @property
    def stderr(self) -> bytes:
        """
        Everything the process wrote to standard error so far.
        """
        return bytes(self._stderr)

    @property
    def pid(self) -> int | None:
        """
        The PID of the process, while it runs.
        """
        return getattr(self.transport, "pid", None)

    def outReceived(self, data: bytes) -> None:
        self._stdout += data

    def errReceived(self, data: bytes) -> None:
        self._stderr += data

    def processEnded(self, reason: Failure) -> None:
        self.exitCode = _exitCode(reason)
        self.ended = True
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
        waiters, self._endWaiters = self._endWaiters, []
        for waiter in waiters:
            waiter.callback(self.exitCode)

    def whenEnded(self) -> Deferred:
        """
        @return: a L{Deferred} firing with the exit status (see
            L{ProcessFailed.exitCode}) once the process has exited and its
            output has all been read.
        """
        if self.ended:
            return succeed(self.exitCode)
        waiter: Deferred = Deferred()
        self._endWaiters.append(waiter)
        return waiter

    def sendSignal(self, name: str) -> None:
        """
        Send signal C{name} (C{"TERM"}, C{"KILL"}, ...) to the process we
        started, if it still runs.
        """
        if self.ended or self.transport is None:
            return
        try:
            self.transport.signalProcess(name)
        except ProcessExitedAlready:
            pass

    def _kill(self) -> None:
        self.sendSignal("KILL")

    def _failure(self, message: str, kind: type = ProcessFailed) -> Exception:
        return kind(message, self.argv, self.exitCode, self.stdout, self.stderr)


class TwistdProcess(_ProcessBase):
    """
    A server started by L{startTwistd}, whose JSON log lines are parsed as
    they arrive.

    @ivar events: every event logged so far, parsed from JSON.
    @ivar unparsed: lines of standard output that were not JSON events.
    @ivar listening: a L{ListeningAddress} for each C{listening on} event.
    @ivar listeners: how many C{listening on} events L{startTwistd} waits
        for.
    """

    def __init__(self, reactor, argv: Sequence[str], listeners: int) -> None:
        super().__init__(reactor, argv)
        self.listeners = listeners
        self.events: list[dict] = []
        self.unparsed: list[str] = []
        self.listening: list[ListeningAddress] = []
        self._partial = b""
        self._eventWaiters: list[tuple[Callable[[dict], bool], Deferred]] = []
        self._listeningWaiter: Deferred | None = None

    @property
    def addresses(self) -> list[tuple[str, int | None]]:
        """
        The C{(host, port)} of each C{listening on} event, in the order they
        were logged (which is the order of the C{--listen} options).
        """
        return [(address.host, address.port) for address in self.listening]

    def outReceived(self, data: bytes) -> None:
        super().outReceived(data)
        records = _RECORD_BOUNDARY.split(self._partial + data)
        self._partial = records.pop()
        for record in records:
            self._recordReceived(record)

    def _recordReceived(self, record: bytes) -> None:
        event = parseLogRecord(record)
        if event is None:
            text = record.strip(b"\x1e \t\r\n")
            if text:
                self.unparsed.append(text.decode("utf-8", "replace"))
            return
        self.eventReceived(event)

    def eventReceived(self, event: dict) -> None:
        """
        Record one logged event and fire whatever waited for it.
        """
        self.events.append(event)
        address = listeningAddress(event)
        if address is not None:
            self.listening.append(address)
            reached = self._listeningWaiter
            if reached is not None and len(self.listening) >= self.listeners:
                self._listeningWaiter = None
                reached.callback(self)
        for waiter in list(self._eventWaiters):
            predicate, waiting = waiter
            try:
                matched = predicate(event)
            except Exception:
                self._eventWaiters.remove(waiter)
                waiting.errback()
                continue
            if matched:
                self._eventWaiters.remove(waiter)
                waiting.callback(event)

    def processEnded(self, reason: Failure) -> None:
        if self._partial:
            partial, self._partial = self._partial, b""
            self._recordReceived(partial)
        super().processEnded(reason)
        reached, self._listeningWaiter = self._listeningWaiter, None
        if reached is not None:
            reached.errback(
                self._failure(
                    f"exited after {len(self.listening)} of {self.listeners}"
                    " 'listening on' events"
                )
            )
        waiters, self._eventWaiters = self._eventWaiters, []
        for _, waiting in waiters:
            waiting.errback(self._failure("exited before the awaited event"))

    def eventsMatching(self, predicate: Callable[[dict], bool]) -> list[dict]:
        """
        @return: the events logged so far for which C{predicate} is true.
        """
        return [event for event in self.events if predicate(event)]

    def waitForEvent(
        self,
        predicate: Callable[[dict], bool],
        timeout: float = DEFAULT_TIMEOUT,
        past: bool = True,
    ) -> Deferred:
        """
        Wait for an event for which C{predicate} is true.

        @param past: whether an event logged already counts; if not, only
            events logged from now on do.
        @return: a L{Deferred} firing with the first such event; it fails
            with L{ProcessFailed} if the process ends first, with
            L{twisted.internet.defer.TimeoutError} after C{timeout}
            seconds, or with what C{predicate} raised.
        """
        if past:
            for event in self.events:
                if predicate(event):
                    return succeed(event)
        if self.ended:
            return fail(self._failure("had exited before the awaited event"))
        waiter: tuple[Callable[[dict], bool], Deferred]

        def cancel(waiting: Deferred) -> None:
            if waiter in self._eventWaiters:
                self._eventWaiters.remove(waiter)

        waiting: Deferred = Deferred(cancel)
        waiter = (predicate, waiting)
        self._eventWaiters.append(waiter)
        waiting.addTimeout(timeout, self.reactor)
        return waiting

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> Deferred:
        """
        Send C{SIGTERM} to the process (our own PID, nothing else) and wait
        for it to end; if it has not ended after C{timeout} seconds, kill it
        and fail with L{ProcessTimeout}.  Safe to call more than once, and
        after the process has ended.

        A netservices service stops gracefully on C{SIGTERM} (it lets work
        in flight finish first) and exits with L{CLEAN_STOP}, 0.

        @return: a L{Deferred} firing with the exit status.
        """
        self.sendSignal("TERM")
        return _deadline(
            self.reactor,
            self.whenEnded(),
            timeout,
            self._kill,
            lambda: self._failure(
                f"still running {timeout:g} s after SIGTERM; killed", ProcessTimeout
            ),
        )

    def _untilListening(self, timeout: float) -> Deferred:
        """
        @return: a L{Deferred} firing with C{self} once C{listeners}
            C{listening on} events have been logged (see L{startTwistd}).
        """
        if len(self.listening) >= self.listeners:
            return succeed(self)
        if self.ended:
            return fail(self._failure("had exited before listening"))
        self._listeningWaiter = Deferred()
        return _deadline(
            self.reactor,
            self._listeningWaiter,
            timeout,
            self._kill,
            lambda: self._failure(
                f"did not log {self.listeners} 'listening on' events within"
                f" {timeout:g} s; killed",
                ProcessTimeout,
            ),
        )


def startTwistd(
    reactor,
    args: Sequence[str],
    listeners: int,
    runner: str = "twistd",
    timeout: float = DEFAULT_TIMEOUT,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> Deferred:
    """
    Start a netservices service (see L{twistdCommand}) in a new temporary
    directory, and wait until it has logged C{listeners} C{listening on}
    events.

    The caller must stop the process (L{TwistdProcess.stop}), e.g. with
    C{self.addCleanup(process.stop)}; if starting fails, the process has
    already ended.

    @param args: the sub-command and its options.
    @param listeners: how many C{listening on} events to wait for: one per
        C{--listen}, C{--port} and C{--http-listen}.
    @param runner: C{"twistd"} or C{"twist"}.
    @param env: the environment (default: L{childEnvironment}).
    @param prefix: a command that runs the rest, such as
        L{NetworkLab.prefix}'s C{ip netns exec NS}; it must exec it, so
        that the PID stopped is the service's.
    @return: a L{Deferred} firing with the L{TwistdProcess}, or failing with
        L{ProcessFailed} (whose message holds the output) if the process
        exits first, or L{ProcessTimeout} after C{timeout} seconds.
    """
    if listeners < 1:
        raise ValueError("listeners must be at least 1")
    argv = [*prefix, *twistdCommand(args, runner)]
    process = TwistdProcess(reactor, argv, listeners)
    process.directory = _spawn(reactor, process, argv, env)
    process.transport.closeStdin()
    return process._untilListening(timeout)


class _OutputCollector(_ProcessBase):
    """
    Collects a command's output until it ends.
    """


def runProcess(
    reactor,
    argv: Sequence[str],
    timeout: float = DEFAULT_TIMEOUT,
    env: dict[str, str] | None = None,
    path: str | None = None,
) -> Deferred:
    """
    Run C{argv} to completion, with nothing on its standard input, in
    directory C{path} (by default a new temporary directory).

    Unlike L{twisted.internet.utils.getProcessOutputAndValue}, a command
    that outlives C{timeout} is killed (and waited for).

    @return: a L{Deferred} firing with C{(stdout, stderr, exitStatus)}
        (bytes, bytes, int; minus the signal number if a signal ended it),
        or failing with L{ProcessTimeout}.
    """
    collector = _OutputCollector(reactor, argv)
    collector.directory = _spawn(reactor, collector, argv, env, path)
    collector.transport.closeStdin()
    ended = collector.whenEnded()
    ended.addCallback(lambda code: (collector.stdout, collector.stderr, code))
    return _deadline(
        reactor,
        ended,
        timeout,
        collector._kill,
        lambda: collector._failure(
            f"still running after {timeout:g} s; killed", ProcessTimeout
        ),
    )


def runCommand(
    reactor, argv: Sequence[str], timeout: float = DEFAULT_TIMEOUT
) -> Deferred:
    """
    Run the C{netservices} console command with arguments C{argv}.

    @return: see L{runProcess}.
    """
    return runProcess(reactor, netservicesCommand(argv), timeout)


def runTwistd(
    reactor, args: Sequence[str], runner: str = "twistd", timeout: float = DEFAULT_TIMEOUT
) -> Deferred:
    """
    Run a netservices service (see L{twistdCommand}) to completion, e.g.
    with C{--help} or options it must refuse.

    @return: see L{runProcess}.
    """
    return runProcess(reactor, twistdCommand(args, runner), timeout)


@attrs.frozen
class StreamAnswer:
    """
    What L{fetchStream} or L{fetchFrom} received.

    @ivar data: everything the server sent before it closed the connection.
    @ivar host: our end's address (for a UNIX socket, its name, often
        L{None}).
    @ivar port: our end's port (L{None} for a UNIX socket).
    """

    data: bytes
    host: str | None
    port: int | None


class _StreamFetcher(Protocol):
    """
    Sends some bytes, optionally starts TLS, then collects what arrives
    until the server closes the connection.
    """

    def __init__(self, send: bytes, tlsOptions) -> None:
        self.send = send
        self.tlsOptions = tlsOptions
        self.received = bytearray()
        self.local = None
        self.lost: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.local = self.transport.getHost()
        if self.send:
            self.transport.write(self.send)
        if self.tlsOptions is not None:
            self.transport.startTLS(self.tlsOptions)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        if reason.check(ConnectionDone):
            host = getattr(self.local, "host", getattr(self.local, "name", None))
            port = getattr(self.local, "port", None)
            self.lost.callback(StreamAnswer(bytes(self.received), host, port))
        else:
            self.lost.errback(reason)


def fetchStream(
    reactor,
    host: str,
    port: int,
    send: bytes = b"",
    tlsOptions=None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Deferred:
    """
    Connect over TCP to C{host} (an IPv4 or IPv6 address), send C{send}
    (e.g. a PROXY header), then start TLS with C{tlsOptions} if given, and
    read until the server closes the connection.

    @return: see L{fetchFrom}.
    """
    endpoint = (TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint)(
        reactor, host, port, timeout=timeout
    )
    return fetchFrom(reactor, endpoint, send, tlsOptions, timeout)


def fetchFrom(
    reactor,
    endpoint: IStreamClientEndpoint,
    send: bytes = b"",
    tlsOptions=None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Deferred:
    """
    Connect to C{endpoint} (e.g. a
    L{twisted.internet.endpoints.UNIXClientEndpoint}), send C{send},
    then start TLS with C{tlsOptions} if given, and read until the server
    closes the connection.

    @return: a L{Deferred} firing with the L{StreamAnswer}; it fails if the
        connection is not closed cleanly (a TLS error, say), or with
        L{twisted.internet.defer.TimeoutError} after C{timeout} seconds, by
        which time the connection has been aborted and closed.
    """
    return Deferred.fromCoroutine(_fetchFrom(reactor, endpoint, send, tlsOptions, timeout))


async def _fetchFrom(reactor, endpoint, send, tlsOptions, timeout) -> StreamAnswer:
    fetcher = _StreamFetcher(send, tlsOptions)
    await connectProtocol(endpoint, fetcher)

    def timedOut() -> Exception:
        return DeferredTimeoutError(
            f"the server did not close the connection within {timeout:g} s"
            f" (received {bytes(fetcher.received)!r})"
        )

    return await _deadline(
        reactor, fetcher.lost, timeout, fetcher.transport.abortConnection, timedOut
    )


class DatagramClient(DatagramProtocol):
    """
    A UDP socket for tests: L{send} datagrams, and take those received in
    order with L{nextDatagram}.

    Make one with L{openDatagramClient}; L{close} it when done.
    """

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self._received: list[tuple[bytes, tuple]] = []
        self._waiting: list[Deferred] = []
        self._port = None
        self._closed: Deferred | None = None

    @property
    def port(self) -> int:
        """
        Our port number.
        """
        return self._port.getHost().port

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        """
        Send one datagram to C{address}, C{(host, port)}.
        """
        self._port.write(data, address)

    def datagramReceived(self, data: bytes, address) -> None:
        if self._waiting:
            self._waiting.pop(0).callback((data, address[:2]))
        else:
            self._received.append((data, address[:2]))

    def nextDatagram(self, timeout: float = DEFAULT_TIMEOUT) -> Deferred:
        """
        @return: a L{Deferred} firing with C{(data, (host, port))} of the
            next datagram not yet taken, or failing with
            L{twisted.internet.defer.TimeoutError} after C{timeout}
            seconds.
        """
        if self._received:
            return succeed(self._received.pop(0))

        def cancel(waiting: Deferred) -> None:
            if waiting in self._waiting:
                self._waiting.remove(waiting)

        waiting: Deferred = Deferred(cancel)
        self._waiting.append(waiting)
        waiting.addTimeout(timeout, self.reactor)
        return waiting

    def close(self) -> Deferred:
        """
        Stop listening; safe to call more than once.

        @return: a L{Deferred} firing when the socket is closed.
        """
        if self._closed is None:
            self._closed = maybeDeferred(self._port.stopListening)
        closing: Deferred = Deferred()
        self._closed.addBoth(lambda result: (closing.callback(None), result)[1])
        return closing


def openDatagramClient(reactor, interface: str) -> DatagramClient:
    """
    @param interface: the address to bind to, on a port the system picks:
        C{"127.0.0.1"}, C{"::1"}, ...
    @return: a listening L{DatagramClient}.
    """
    client = DatagramClient(reactor)
    # 65535: the default of 8192 would truncate larger answers silently.
    client._port = reactor.listenUDP(0, client, interface=interface, maxPacketSize=65535)
    return client


@attrs.frozen
class Scrape:
    """
    What one scrape of a service's C{/metrics} (C{--metrics-listen}) found.

    @ivar samples: each sample's value by C{(name, labels)}, the labels as
        a sorted tuple of C{(label, value)} pairs.
    """

    samples: dict

    def value(self, name: str, **labels: str) -> float | None:
        """
        @return: the sum of the samples called C{name} (as exposed, e.g.
            C{netservices_connections_accepted_total}) whose labels include
            C{labels}; L{None} if there is none.
        """
        wanted = set(labels.items())
        found = [
            value
            for (sample, sampleLabels), value in self.samples.items()
            if sample == name and wanted <= set(sampleLabels)
        ]
        return sum(found) if found else None


def scrapeMetrics(
    reactor, host: str, port: int, timeout: float = DEFAULT_TIMEOUT
) -> Deferred:
    """
    Fetch C{http://HOST:PORT/metrics} and parse the Prometheus text format.

    @return: a L{Deferred} firing with a L{Scrape}, or failing with
        L{ValueError} if the answer is not C{200 OK}.
    """
    return Deferred.fromCoroutine(_scrapeMetrics(reactor, host, port, timeout))


async def _scrapeMetrics(reactor, host: str, port: int, timeout: float) -> Scrape:
    from prometheus_client.parser import text_string_to_metric_families

    answer = await fetchStream(
        reactor, host, port, b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n", timeout=timeout
    )
    head, _, body = answer.data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise ValueError(f"/metrics answered {status!r}")
    samples = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return Scrape(samples)


def oneLineFailure(
    testCase, result: tuple[bytes, bytes, int], *mentions: str, code: int | None = None
) -> str:
    """
    Check that a command failed the way our commands must fail on bad
    input: a non-zero exit status (C{code} if given), one line on stderr
    mentioning each of C{mentions}, nothing on stdout, no traceback.

    @param result: C{(stdout, stderr, exit status)} as L{runCommand} gives.
    @return: the line.
    """
    out, err, status = result
    testCase.assertNotIn(b"Traceback", out + err)
    if code is None:
        testCase.assertNotEqual(status, 0, (out, err))
    else:
        testCase.assertEqual(status, code, (out, err))
    testCase.assertEqual(out, b"")
    lines = err.decode().splitlines()
    testCase.assertEqual(len(lines), 1, err)
    for text in mentions:
        testCase.assertIn(text, lines[0])
    return lines[0]


class NetworkLab:
    """
    A LAN of hosts made of network namespaces, for tests of what crosses a
    network (broadcast, multicast, loss): host I is namespace C{NAME<I>}
    with C{eth0} at C{SUBNET.I/24}, all on one bridge in namespace
    C{NAMEbr}.  Nothing is created in the caller's namespace, and the
    subnet exists only inside the lab, so nothing sent in it leaves it.
    Needs root and C{ip} (iproute2).

    @ivar hosts: how many hosts.
    """

    def __init__(
        self,
        hosts: int,
        subnet: str = "10.213.0",
        name: str | None = None,
        subnet6: str | None = None,
        multicastRoutes: bool = False,
    ) -> None:
        """
        @param subnet6: if given (say C{"fd13:213::"}), host I also gets the
            unique-local address C{SUBNET6I/64} (no duplicate address
            detection, so it is usable at once; link-local addresses skip
            it too, so MLD reports carry a real source).
        @param multicastRoutes: add C{224.0.0.0/4} on C{eth0} in each host
            (the lab has no default route; IPv6 multicast needs none).
        """
        self.hosts = hosts
        self.subnet = subnet
        self.name = name or f"ns{os.getpid()}x"
        self.subnet6 = subnet6
        self.multicastRoutes = multicastRoutes
        self._created: list[str] = []

    def address6(self, host: int) -> str:
        """
        @return: the IPv6 unique-local address of host C{host} (needs
            C{subnet6}).
        """
        return f"{self.subnet6}{host}"

    def inside(self, host: int | None):
        """
        @return: a context manager entering host C{host}'s (or, for L{None},
            the bridge's) network namespace for the calling thread: sockets
            made inside stay in it, so one reactor can drive sockets in
            several hosts.
        """
        return enterNamespace(self.name + "br" if host is None else self.namespace(host))

    def namespace(self, host: int) -> str:
        """
        @return: the namespace of host C{host} (1-based).
        """
        return f"{self.name}{host}"

    def address(self, host: int) -> str:
        """
        @return: the IPv4 address of host C{host}.
        """
        return f"{self.subnet}.{host}"

    @property
    def broadcast(self) -> str:
        """
        The subnet's directed broadcast address.
        """
        return f"{self.subnet}.255"

    def prefix(self, host: int) -> list[str]:
        """
        @return: the command prefix that runs a command on host C{host}.
        """
        return ["ip", "netns", "exec", self.namespace(host)]

    def run(self, host: int | None, *argv: str) -> str:
        """
        Run a short command on host C{host} (or in the bridge namespace for
        L{None}) and return its output.

        @raise RuntimeError: if it fails, with its output.
        """
        namespace = self.name + "br" if host is None else self.namespace(host)
        completed = subprocess.run(
            ["ip", "netns", "exec", namespace, *argv],
            capture_output=True,
            timeout=30,
            check=False,
        )
        if completed.returncode:
            raise RuntimeError(
                f"{' '.join(argv)} in {namespace}: {completed.stderr.decode().strip()}"
            )
        return completed.stdout.decode()

    def _ip(self, *argv: str) -> None:
        completed = subprocess.run(["ip", *argv], capture_output=True, timeout=30)
        if completed.returncode:
            raise RuntimeError(f"ip {' '.join(argv)}: {completed.stderr.decode().strip()}")

    def create(self) -> None:
        """
        Build the lab.  Call L{remove} afterwards, also when this fails.
        """
        bridge = self.name + "br"
        for namespace in [bridge] + [self.namespace(i) for i in range(1, self.hosts + 1)]:
            self._ip("netns", "add", namespace)
            self._created.append(namespace)
            self.run(None if namespace == bridge else int(namespace[len(self.name):]),
                     "ip", "link", "set", "lo", "up")
            if self.subnet6 is not None and namespace != bridge:
                # Written directly: /proc/sys/net is the namespace's own,
                # and the sysctl command (procps) may not be installed.
                self.run(int(namespace[len(self.name):]), "sh", "-c",
                         "for key in accept_dad dad_transmits accept_ra; do"
                         " echo 0 > /proc/sys/net/ipv6/conf/default/$key; done")
        self.run(None, "ip", "link", "add", "br0", "type", "bridge")
        self.run(None, "ip", "link", "set", "br0", "up")
        for i in range(1, self.hosts + 1):
            # Both ends are made inside their namespaces: no interface ever
            # appears in the caller's namespace.
            self._ip(
                "-n", self.namespace(i), "link", "add", "eth0", "type", "veth",
                "peer", "name", f"veth{i}", "netns", bridge,
            )
            self.run(None, "ip", "link", "set", f"veth{i}", "master", "br0", "up")
            self.run(i, "ip", "addr", "add", f"{self.address(i)}/24",
                     "brd", self.broadcast, "dev", "eth0")
            self.run(i, "ip", "link", "set", "eth0", "up")
            if self.subnet6 is not None:
                self.run(i, "ip", "-6", "addr", "add", f"{self.address6(i)}/64",
                         "dev", "eth0", "nodad")
            if self.multicastRoutes:
                self.run(i, "ip", "route", "add", "224.0.0.0/4", "dev", "eth0")

    def remove(self) -> None:
        """
        Remove every namespace this lab created (their interfaces go with
        them).  Processes must have been stopped first.
        """
        while self._created:
            subprocess.run(["ip", "netns", "del", self._created.pop()], capture_output=True, timeout=30)


_CLONE_NEWNET = 0x40000000


@contextlib.contextmanager
def enterNamespace(name: str):
    """
    Enter network namespace C{/run/netns/NAME} for the calling thread, and
    always return to the one it was in (C{setns} through C{ctypes}: Python
    3.11 has no C{os.setns}).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if libc.setns(target, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {name}")
            try:
                yield
            finally:
                if libc.setns(home, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back")
        finally:
            os.close(target)
    finally:
        os.close(home)


def writeCertificate(directory: Path) -> tuple[Path, Path]:
    """
    Write a self-signed EC P-256 certificate for C{localhost} and
    C{127.0.0.1}, valid for a day (made by
    L{netservices._common.tls.createSelfSignedCertificate}).

    @return: the path of the key and certificate in one PEM file (what
        C{ssl:...:privateKey=} takes when C{certKey} is not given), and of
        the certificate alone (what clients trust).
    """
    both, alone = directory / "server.pem", directory / "ca.pem"
    created = createSelfSignedCertificate(both, both, ["localhost", "127.0.0.1"], days=1)
    alone.write_bytes(created.certificate.public_bytes(serialization.Encoding.PEM))
    return both, alone


def canBindIPv6Loopback() -> bool:
    """
    @return: whether this host has C{::1} (some containers have no IPv6).
    """
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


#: Why tests that need both address families are skipped, if they are.
NO_IPV6 = None if canBindIPv6Loopback() else "this host has no IPv6 loopback (::1)"


class TwistdTestCase(TestCase):
    """
    Starts a server for each test, and stops it (by its own PID) after.
    """

    async def startServer(
        self, args: list[str], listeners: int, prefix: Sequence[str] = ()
    ) -> TwistdProcess:
        """
        Start C{twistd -n netservices ARGS} (after C{prefix}, see
        L{startTwistd}); it is stopped after the test, and must not have
        logged any error.
        """
        from twisted.internet import reactor

        server = await startTwistd(reactor, args, listeners, prefix=prefix)
        self.addCleanup(self.assertNoErrorsLogged, server)
        self.addCleanup(server.stop)
        return server

    def assertNoErrorsLogged(self, server: TwistdProcess) -> None:
        """
        Check that C{server} logged no error and no traceback.
        """
        self.assertEqual([eventText(event) for event in server.eventsMatching(isError)], [])

    def temporaryDirectory(self) -> Path:
        """
        @return: a new directory, removed after the test (not under the
            current directory, which is the source tree under pytest).
        """
        directory = Path(tempfile.mkdtemp(prefix="netservices-test-"))
        self.addCleanup(shutil.rmtree, directory, True)
        return directory


class ThreadedClock:
    """
    A L{twisted.internet.task.Clock} that also has C{callFromThread},
    running the call at once: with L{SynchronousThreadPool}, what code that
    uses C{deferToThreadPool} takes as its reactor in unit tests.
    """

    def __init__(self) -> None:
        from twisted.internet.task import Clock

        self.clock = Clock()

    def __getattr__(self, name: str):
        return getattr(self.clock, name)

    def callFromThread(self, f, *args, **kwargs) -> None:
        """
        Call C{f} now.
        """
        f(*args, **kwargs)


class SynchronousThreadPool:
    """
    A stand-in for L{twisted.python.threadpool.ThreadPool} that runs work
    in the calling thread, for unit tests of code using
    C{deferToThreadPool}: at once if C{immediate}, else when the test says
    (L{runNext}, L{runAll}, L{run}), so that a test can hold work "in the
    pool" to fill it.

    @ivar pending: work not run yet: C{(onResult, f, args, kwargs)}.
    """

    def __init__(self, immediate: bool = False) -> None:
        self.immediate = immediate
        self.pending: list[tuple] = []
        self.started = False
        self.stopped = False

    def start(self) -> None:
        """
        Start (nothing to do but remember it).
        """
        self.started = True

    def stop(self) -> None:
        """
        Stop (nothing to join).
        """
        self.started = False
        self.stopped = True

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs) -> None:
        """
        Queue C{f(*args, **kwargs)}, or run it now if C{immediate}; then
        C{onResult(True, result)} or C{onResult(False, Failure)}.
        """
        self.pending.append((onResult, f, args, kwargs))
        if self.immediate:
            self.runNext()

    def run(self, index: int) -> None:
        """
        Run the pending work at C{index} (0 is the oldest).
        """
        from twisted.python.failure import Failure

        onResult, f, args, kwargs = self.pending.pop(index)
        try:
            result = f(*args, **kwargs)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)

    def runNext(self) -> None:
        """
        Run the oldest pending work.
        """
        self.run(0)

    def runAll(self) -> None:
        """
        Run pending work, oldest first, until there is none (work queued
        while running is run too).
        """
        while self.pending:
            self.runNext()


class RecordingProtocol(Protocol):
    """
    Records what happens to one connection, for tests of protocol wrappers
    and factories.

    @ivar made: how many times C{connectionMade} ran.
    @ivar peer: C{getPeer()} in C{connectionMade}.
    @ivar host: C{getHost()} in C{connectionMade}.
    @ivar chunks: the data received, chunk by chunk.
    @ivar lost: the reasons given to C{connectionLost}.
    """

    def __init__(self) -> None:
        self.made = 0
        self.peer = self.host = None
        self.chunks: list[bytes] = []
        self.lost: list[Failure] = []

    @property
    def received(self) -> bytes:
        """
        All the data received.
        """
        return b"".join(self.chunks)

    def connectionMade(self) -> None:
        self.made += 1
        self.peer = self.transport.getPeer()
        self.host = self.transport.getHost()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)


class RecordingFactory(Factory):
    """
    Builds C{protocol} instances (L{RecordingProtocol} by default) and keeps
    them in C{built}.
    """

    protocol = RecordingProtocol

    def __init__(self) -> None:
        self.built: list = []

    def buildProtocol(self, addr):
        protocol = self.protocol()
        protocol.factory = self
        self.built.append(protocol)
        return protocol


class FakeChatClient:
    """
    One client of a L{FakeChatServer}: a chat connection on a
    C{StringTransport}, driven line by line.

    @ivar protocol: the server's connection object.
    @ivar transport: what the server wrote is in C{transport.value()}.
    """

    def __init__(
        self, server: FakeChatServer, host: str, secure: bool, handshake: bool = True
    ) -> None:
        from twisted.internet.address import IPv4Address, IPv6Address
        from twisted.internet.interfaces import ISSLTransport
        from twisted.internet.testing import StringTransport
        from zope.interface import alsoProvides

        kind = IPv6Address if ":" in host else IPv4Address
        self.transport = StringTransport(peerAddress=kind("TCP", host, 40000))
        if secure:
            alsoProvides(self.transport, ISSLTransport)
        self.server = server
        self.protocol = server.factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        if secure and handshake:
            self.protocol.handshakeCompleted()
        self._read = 0

    def send(self, *lines: str | bytes) -> None:
        """
        Send lines, each ended with CR LF, as one read.
        """
        data = b"".join(
            (line if isinstance(line, bytes) else line.encode("utf-8")) + b"\r\n"
            for line in lines
        )
        self.protocol.dataReceived(data)

    def received(self) -> list[str]:
        """
        @return: the lines the server wrote since the last call, without
            line ends (lines collected for the end of the reactor turn are
            written first).
        """
        self.server.clock.advance(0)
        data = self.transport.value()
        new, self._read = data[self._read :], len(data)
        return [line.decode("utf-8") for line in new.split(b"\r\n") if line]

    def register(self, nick: str) -> list[str]:
        """
        Register as C{nick} and forget the welcome burst.

        @return: the welcome burst.
        """
        self.send(f"NICK {nick}", f"USER {nick} 0 * :{nick.title()} Example")
        return self.received()

    @property
    def closed(self) -> bool:
        """
        @return: whether the server closed (or aborted) the connection.
        """
        return bool(self.transport.disconnecting)


def offeredCapabilities(*extra: str) -> str:
    """
    @return: the chat server's C{CAP LS} list: its IRCv3 capabilities,
        C{cap-notify} and C{extra} (such as C{sasl=PLAIN,EXTERNAL}), in
        order.
    """
    from netservices.chat.ircv3 import CAPABILITIES

    return " ".join(sorted((*CAPABILITIES, "cap-notify", *extra)))


class FakeClusterLog:
    """
    A chat cluster's log in memory, in place of Redis: the nodes
    (L{FakeChatServer}s made with C{cluster=}) append entries, and every
    node applies every entry, in order, at the end of the clock's turn
    (L{FakeChatClient.received} advances the clock).

    @ivar entries: every entry appended: its id and bytes.
    @ivar available: set to C{False} to have appends fail as when Redis
        is unreachable.
    @ivar autoDeliver: set to C{False} to have entries applied only by
        L{deliver} and L{deliverOne}.
    """

    autoDeliver = True

    def __init__(self) -> None:
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.entries: list[tuple[str, bytes]] = []
        self.available = True
        self._positions: dict = {}
        self._delivery = None

    def attach(self, replica) -> None:
        """
        Make C{replica} a node of this cluster, and have it join at once.
        """
        replica.log = self
        self._positions[replica] = 0
        self.announce(replica)

    def detach(self, replica) -> None:
        """
        C{replica}'s node is gone: it applies nothing more.
        """
        self._positions.pop(replica, None)

    def announce(self, replica) -> None:
        """
        Append C{replica}'s C{U} entry (what L{RedisLog.announce} does).
        """
        replica.publish(b"U", replica.instance, replica.announcement())
        self.deliver()

    def append(self, data: bytes) -> Deferred:
        from netservices.chat.cluster import ClusterUnavailable

        if not self.available:
            return fail(ClusterUnavailable())
        entryId = f"{1000 + len(self.entries)}-0"
        self.entries.append((entryId, data))
        if self._delivery is None and self.autoDeliver:
            self._delivery = self.clock.callLater(0, self.deliver)
        return succeed(entryId)

    def deliverOne(self, index: int) -> None:
        """
        Have only the C{index}th node (in the order they were attached)
        apply its next entry, if it has one: nodes that apply the log at
        different times.
        """
        replicas = list(self._positions)
        replica = replicas[index % len(replicas)]
        position = self._positions[replica]
        if position < len(self.entries):
            self._positions[replica] = position + 1
            replica.apply(*self.entries[position])

    def deliver(self) -> None:
        """
        Have every node apply every entry it has not applied yet.
        """
        if self._delivery is not None and self._delivery.active():
            self._delivery.cancel()
        self._delivery = None
        progress = True
        while progress:
            progress = False
            for replica, position in list(self._positions.items()):
                if position < len(self.entries) and replica in self._positions:
                    entryId, data = self.entries[position]
                    self._positions[replica] = position + 1
                    replica.apply(entryId, data)
                    progress = True


class FakeChatServer:
    """
    A chat service and factory on a fake clock, for unit tests without
    sockets: C{connect()} gives a L{FakeChatClient}.

    @ivar clock: the L{Clock} everything runs on; advance it to fire timers.
    """

    def __init__(
        self,
        settings=None,
        limits=None,
        motd=None,
        name: str = "irc.test",
        accounts=None,
        directory=None,
        cluster: FakeClusterLog | None = None,
        nodeName: str = "n1",
    ) -> None:
        """
        @param accounts: the L{netservices.chat.login.AccountSettings}
            (no logins by default).
        @param directory: the accounts and registered channels the
            service knows (a L{netservices.chat.directory.MemoryDirectory}).
        @param cluster: the log of a cluster this server is node
            C{nodeName} of (it runs on the log's clock and has joined when
            made).
        """
        from twisted.internet.task import Clock

        from netservices.chat.login import AccountSettings
        from netservices.chat.protocol import ChatFactory, ConnectionSettings, ServerInfo
        from netservices.chat.service import ChatLimits, ChatService

        self.clock = Clock() if cluster is None else cluster.clock
        self.service = ChatService(name, self.clock, limits or ChatLimits(), directory)
        arguments = (
            self.service,
            ServerInfo(name=name, created="today", motd=motd),
            self.clock,
            settings or ConnectionSettings(floodRate=0),
        )
        if cluster is None:
            self.factory = ChatFactory(*arguments, accounts=accounts or AccountSettings())
        else:
            from netservices.chat.cluster import ClusterFactory

            self.factory = ClusterFactory(
                *arguments, accounts=accounts or AccountSettings(), nodeName=nodeName
            )
            cluster.attach(self.factory.replica)
        self.factory.startFactory()

    def connect(
        self, host: str = "192.0.2.1", secure: bool = False, handshake: bool = True
    ) -> FakeChatClient:
        """
        @param handshake: for a C{secure} client, whether its TLS handshake
            is over.
        @return: a new connected, unregistered client.
        """
        return FakeChatClient(self, host, secure, handshake)

    def user(self, nick: str) -> FakeChatClient:
        """
        @return: a new client registered as C{nick}, its welcome read.
        """
        client = self.connect()
        client.register(nick)
        return client

    def stop(self) -> None:
        """
        Stop the factory's timer.
        """
        self.factory.stopFactory()


class RecordingIRCClient(IRCClient):
    """
    Twisted's own IRC client (L{twisted.words.protocols.irc.IRCClient}),
    for tests of a chat server over real sockets: each callback of
    L{RECORDED} it gets (C{privmsg}, C{userQuit}, ...) waits, with its
    arguments, until the test takes it with L{next}; every line received
    is kept in L{lines}.  Make one with L{connectIRCClient}.

    A test is resumed only once the line that caused the callback has been
    handled, so L{lines}C{[-1]} is that line.

    @ivar lines: every line received so far, without its line end.
    @ivar lost: the reason given to C{connectionLost}, once it was.
    """

    #: The callbacks of L{IRCClient} that are recorded.
    RECORDED = (
        "signedOn", "joined", "left", "kickedFrom", "nickChanged",
        "privmsg", "noticed", "userJoined", "userLeft", "userQuit",
        "userKicked", "userRenamed", "topicUpdated", "modeChanged",
    )

    # No PING timer of the client's own left in the reactor.
    heartbeatInterval = None

    def __init__(
        self,
        reactor,
        nickname: str,
        register: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """
        @param register: whether to register (C{NICK}, C{USER}) as soon as
            connected.
        @param timeout: how long L{next} and L{linesUntil} wait by default.
        """
        self.reactor = reactor
        self.nickname = nickname
        self.realname = f"{nickname} test"
        self.performLogin = register
        self.timeout = timeout
        self.lines: list[str] = []
        self.lost: Failure | None = None
        self._queues: dict[str, list[tuple]] = {name: [] for name in self.RECORDED}
        self._fresh: list[tuple[str, tuple]] = []
        self._waiters: list[tuple[str, Deferred]] = []
        self._lineWaiters: list[tuple[Callable[[str], bool], list[str], Deferred]] = []
        self._lostWaiters: list[tuple[Deferred]] = []

    def _record(self, name: str, args: tuple) -> None:
        self._fresh.append((name, args))

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        self.lines.append(text)
        # Those waiting before this line only: a test resumed below may
        # wait for lines again, from the next one on.
        lineWaiters = list(self._lineWaiters)
        super().lineReceived(line)
        fresh, self._fresh = self._fresh, []
        for name, args in fresh:
            self._queues[name].append(args)
        for waiter in lineWaiters:
            predicate, seen, waiting = waiter
            if waiter not in self._lineWaiters:
                continue
            seen.append(text)
            if predicate(text):
                self._lineWaiters.remove(waiter)
                waiting.callback(seen)
        for name, _ in fresh:
            for waiter in self._waiters:
                if waiter[0] == name and self._queues[name]:
                    self._waiters.remove(waiter)
                    waiter[1].callback(self._queues[name].pop(0))
                    break

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.lost = reason
        waiters = [entry[-1] for entry in self._waiters + self._lineWaiters]
        lostWaiters = [entry[-1] for entry in self._lostWaiters]
        self._waiters, self._lineWaiters, self._lostWaiters = [], [], []
        for waiting in waiters:
            waiting.errback(reason)
        for waiting in lostWaiters:
            waiting.callback(reason.value)

    def _wait(self, waiters: list, key: tuple, timeout: float | None) -> Deferred:
        """
        @return: a new L{Deferred}, added to C{waiters} as C{(*key,
            deferred)} until it fires, times out or is cancelled.
        """
        entry: tuple = ()

        def cancel(waiting: Deferred) -> None:
            if entry in waiters:
                waiters.remove(entry)

        waiting: Deferred = Deferred(cancel)
        entry = (*key, waiting)
        waiters.append(entry)
        waiting.addTimeout(self.timeout if timeout is None else timeout, self.reactor)
        return waiting

    def next(self, name: str, timeout: float | None = None) -> Deferred:
        """
        Take the oldest call of callback C{name} not taken yet.

        @param name: one of L{RECORDED}.
        @return: a L{Deferred} firing with the arguments of the call, as a
            tuple; failing with the reason the connection was lost if it
            is first, or with L{twisted.internet.defer.TimeoutError}.
        """
        queue = self._queues[name]
        if queue:
            return succeed(queue.pop(0))
        if self.lost is not None:
            return fail(self.lost)
        return self._wait(self._waiters, (name,), timeout)

    def pending(self, name: str) -> list[tuple]:
        """
        @return: the calls of callback C{name} not taken by L{next}.
        """
        return list(self._queues[name])

    def linesUntil(
        self, predicate: Callable[[str], bool], timeout: float | None = None
    ) -> Deferred:
        """
        Collect the lines received from now on until one for which
        C{predicate} is true (call it before sending what they answer).

        @return: a L{Deferred} firing with those lines, the last one
            included; failing as L{next} does.
        """
        if self.lost is not None:
            return fail(self.lost)
        return self._wait(self._lineWaiters, (predicate, []), timeout)

    def whenLost(self, timeout: float | None = None) -> Deferred:
        """
        @return: a L{Deferred} firing with the exception of the reason
            given to C{connectionLost} (L{ConnectionDone} for a clean
            close) once the connection is lost, or failing with
            L{twisted.internet.defer.TimeoutError}.
        """
        if self.lost is not None:
            return succeed(self.lost.value)
        return self._wait(self._lostWaiters, (), timeout)

    def close(self) -> Deferred:
        """
        Abort the connection if it is still open (for cleanups).

        @return: a L{Deferred} firing once it is closed.
        """
        if self.lost is not None or self.transport is None:
            return succeed(None)
        self.transport.abortConnection()
        return self.whenLost().addCallback(lambda _: None)


def _recorder(name: str) -> Callable[..., None]:
    base = getattr(IRCClient, name)

    def record(self: RecordingIRCClient, *args) -> None:
        base(self, *args)
        self._record(name, args)

    record.__name__ = name
    record.__doc__ = f"Do what L{{IRCClient}} does, and record the call of C{{{name}}}."
    return record


for _name in RecordingIRCClient.RECORDED:
    setattr(RecordingIRCClient, _name, _recorder(_name))
del _name


def connectIRCClient(
    reactor,
    endpoint: IStreamClientEndpoint,
    nickname: str,
    register: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> Deferred:
    """
    Connect a L{RecordingIRCClient} to C{endpoint} (e.g.
    C{wrapClientTLS(optionsForClientTLS(...), TCP4ClientEndpoint(...))} for
    TLS) and, if C{register}, register as C{nickname}.

    @return: a L{Deferred} firing with the client once connected (and,
        if C{register}, welcomed: its welcome read up to the end of the
        MOTD, 376 or 422); failing if the connection fails or is lost
        first (a TLS error, say), or after C{timeout} seconds.
    """
    return Deferred.fromCoroutine(_connectIRCClient(reactor, endpoint, nickname, register, timeout))


async def _connectIRCClient(reactor, endpoint, nickname, register, timeout) -> RecordingIRCClient:
    client = RecordingIRCClient(reactor, nickname, register, timeout)
    connecting = connectProtocol(endpoint, client)
    connecting.addTimeout(timeout, reactor)
    await connecting
    if register:
        try:
            await client.linesUntil(lambda line: line.split(" ", 2)[1:2] in (["376"], ["422"]))
            await client.next("signedOn", timeout)
        except BaseException:
            await client.close()
            raise
    return client


class InteractiveProcess(_ProcessBase):
    """
    A command started by L{startInteractive}, driven as a person would:
    its standard input stays open for L{write}, and the test waits for the
    lines it prints with L{nextLine}, in order, without polling.

    @ivar lines: the complete lines of standard output so far, decoded
        from UTF-8, without their line ends.
    """

    def __init__(self, reactor, argv: Sequence[str]) -> None:
        super().__init__(reactor, argv)
        self.lines: list[str] = []
        self._partial = b""
        self._read = 0
        self._lineWaiter: tuple[Callable[[str], bool], Deferred] | None = None

    def outReceived(self, data: bytes) -> None:
        super().outReceived(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        self.lines += [line.rstrip(b"\r").decode("utf-8", "replace") for line in complete]
        self._matchLines()

    def processEnded(self, reason: Failure) -> None:
        if self._partial:
            self.lines.append(self._partial.decode("utf-8", "replace"))
            self._partial = b""
            self._matchLines()
        super().processEnded(reason)
        waiter, self._lineWaiter = self._lineWaiter, None
        if waiter is not None:
            waiter[1].errback(self._failure("exited before printing the awaited line"))

    def _matchLines(self) -> None:
        if self._lineWaiter is None:
            return
        predicate, waiting = self._lineWaiter
        while self._read < len(self.lines):
            line = self.lines[self._read]
            self._read += 1
            if predicate(line):
                self._lineWaiter = None
                waiting.callback(line)
                return

    def write(self, data: bytes | str) -> None:
        """
        Write to the process's standard input.
        """
        self.transport.write(data.encode("utf-8") if isinstance(data, str) else data)

    def closeStdin(self) -> None:
        """
        Close its standard input (the end of what was typed).
        """
        self.transport.closeStdin()

    def nextLine(
        self, predicate: Callable[[str], bool], timeout: float = DEFAULT_TIMEOUT
    ) -> Deferred:
        """
        Wait for the next line of output for which C{predicate} is true;
        the lines before it, from the one after the last line this
        returned, are passed over.  One wait at a time.

        @return: a L{Deferred} firing with the line, or failing with
            L{ProcessFailed} (whose message holds the output) if the process
            ends first or after C{timeout} seconds.
        """
        if self._lineWaiter is not None:
            raise RuntimeError("already waiting for a line")
        waiting: Deferred = Deferred(lambda _: setattr(self, "_lineWaiter", None))
        self._lineWaiter = (predicate, waiting)
        self._matchLines()
        if waiting.called:
            return waiting
        if self.ended:
            self._lineWaiter = None
            return fail(self._failure("had exited before printing the awaited line"))

        def timedOut(failure: Failure) -> Failure:
            failure.trap(DeferredTimeoutError)
            return Failure(self._failure(f"printed no awaited line within {timeout:g} s"))

        return waiting.addTimeout(timeout, self.reactor).addErrback(timedOut)

    def finish(self, timeout: float = DEFAULT_TIMEOUT) -> Deferred:
        """
        Wait for the process to exit; kill it after C{timeout} seconds.

        @return: a L{Deferred} firing with its exit status, or failing with
            L{ProcessTimeout}.
        """
        return _deadline(
            self.reactor,
            self.whenEnded(),
            timeout,
            self._kill,
            lambda: self._failure(f"still running after {timeout:g} s; killed", ProcessTimeout),
        )

    def kill(self) -> Deferred:
        """
        Kill the process if it still runs (for cleanups).

        @return: a L{Deferred} firing once it has ended.
        """
        self._kill()
        return self.whenEnded().addCallback(lambda _: None)


def startInteractive(
    reactor, argv: Sequence[str], env: dict[str, str] | None = None
) -> InteractiveProcess:
    """
    Start C{argv} in a new temporary directory with its standard input
    open (see L{InteractiveProcess}); the caller must see it end, e.g.
    with C{self.addCleanup(process.kill)}.
    """
    process = InteractiveProcess(reactor, argv)
    process.directory = _spawn(reactor, process, argv, env)
    return process


class RedisServer:
    """
    A C{redis-server} of a test's own on a free port of 127.0.0.1 (never
    the system's 6379), keeping its data in C{directory} as an append-only
    file written through on every change: L{start} it, L{stop} it with
    C{SIGTERM} (it saves and exits), and L{start} it again on the same port
    with the same data.  Only the process started here is ever signalled,
    by its own PID.

    For example::

        redis = RedisServer(reactor, self.temporaryDirectory())
        await redis.start()
        self.addCleanup(redis.stop)
        ... "--cluster", redis.url ...

    @ivar port: its port, chosen when this is made.
    @ivar process: the process last started, or L{None}.
    """

    def __init__(
        self, reactor, directory: Path | str, executable: str | None = None,
        port: int | None = None,
    ) -> None:
        """
        @param executable: the C{redis-server} to run (default: the one on
            C{PATH}).
        @param port: the port (default: one free now).
        """
        executable = executable or shutil.which("redis-server")
        if executable is None:
            raise ValueError("redis-server is not installed")
        self.reactor = reactor
        self.directory = Path(directory)
        self.executable = executable
        if port is None:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
        self.port = port
        self.process: _ProcessBase | None = None

    @property
    def url(self) -> str:
        """
        Its C{redis://127.0.0.1:PORT/0} URL.
        """
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def argv(self) -> list[str]:
        """
        The command line that runs it.
        """
        return [
            self.executable, "--save", "", "--appendonly", "yes", "--appendfsync", "always",
            "--dir", str(self.directory), "--bind", "127.0.0.1", "--port", str(self.port),
        ]

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> Deferred:
        """
        Start it (again), and wait until it answers C{PING}: a connection
        is tried at once and then every 20 ms of the reactor's clock, each
        given a second at most.  The caller must see it stopped, e.g. with
        C{self.addCleanup(redis.stop)}.

        @return: a L{Deferred} firing with C{self}, or failing with
            L{ProcessFailed} if it exits first (say, the port was taken),
            or L{ProcessTimeout} (killed) after C{timeout} seconds.
        """
        if self.process is not None and not self.process.ended:
            raise RuntimeError(f"redis-server is running already (PID {self.process.pid})")
        self.process = process = _ProcessBase(self.reactor, self.argv)
        _spawn(self.reactor, process, self.argv, None, str(self.directory))
        process.transport.closeStdin()
        return Deferred.fromCoroutine(self._untilReady(process, timeout))

    async def _untilReady(self, process: _ProcessBase, timeout: float) -> RedisServer:
        from twisted.internet.task import deferLater

        reactor = self.reactor
        deadline = reactor.seconds() + timeout
        problem = "no attempt"
        while not process.ended:
            try:
                answer = await fetchStream(
                    reactor, "127.0.0.1", self.port, b"PING\r\nQUIT\r\n",
                    # Short, so that an exit is noticed soon even if
                    # another program holds the port and never answers.
                    timeout=min(1.0, max(0.1, deadline - reactor.seconds())),
                )
            except Exception as e:
                problem = f"{type(e).__name__}: {e}"
            else:
                if answer.data.startswith(b"+PONG\r\n"):
                    return self
                problem = f"answered {answer.data!r}"
            if reactor.seconds() >= deadline:
                process._kill()
                await process.whenEnded()
                raise process._failure(
                    f"answered no PING within {timeout:g} s ({problem}); killed", ProcessTimeout
                )
            await deferLater(reactor, 0.02, lambda: None)
        raise process._failure(f"exited before it answered PING ({problem})")

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> Deferred:
        """
        Send C{SIGTERM} to it (it saves its data and exits) and wait for it
        to end; kill it if it has not after C{timeout} seconds.  Safe to
        call more than once, and before L{start}.

        @return: a L{Deferred} firing with its exit status (L{None} if it
            was never started), or failing with L{ProcessTimeout}.
        """
        process = self.process
        if process is None:
            return succeed(None)
        process.sendSignal("TERM")
        return _deadline(
            self.reactor,
            process.whenEnded(),
            timeout,
            process._kill,
            lambda: process._failure(
                f"still running {timeout:g} s after SIGTERM; killed", ProcessTimeout
            ),
        )
