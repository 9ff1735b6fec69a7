"""
Tests for L{netservices.testing}.
"""

from __future__ import annotations

import signal
import sys

from twisted.internet import reactor
from twisted.internet.defer import TimeoutError
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netservices.testing import (
    FALLBACKS,
    ListeningAddress,
    ProcessFailed,
    ProcessTimeout,
    TwistdProcess,
    eventText,
    listeningAddress,
    parseAddress,
    parseLogRecord,
    runProcess,
    startTwistd,
)


def listeningEvent(address: str, description: str) -> dict:
    """
    @return: a C{listening on} event as C{twistd} logs it.
    """
    return {
        "address": address,
        "description": description,
        "log_namespace": "netservices._common.listen",
        "log_format": "listening on {address} ({description})",
    }


def line(event: dict, separator: bytes = b"") -> bytes:
    """
    @return: C{event} as a JSON log line.
    """
    import json

    return separator + json.dumps(event).encode() + b"\n"


class FakeProcessTransport:
    """
    Records the signals sent to a process.
    """

    pid = 4242

    def __init__(self) -> None:
        self.signals: list[str] = []
        self.exited = False

    def signalProcess(self, name: str) -> None:
        if self.exited:
            raise ProcessExitedAlready()
        self.signals.append(name)


class ParsingTests(SynchronousTestCase):
    """
    Parsing log records and listening addresses.
    """

    def test_parseAddress(self) -> None:
        """
        IPv4, bracketed IPv6 and UNIX addresses are parsed.
        """
        self.assertEqual(parseAddress("tcp 127.0.0.1:43567"), ("tcp", "127.0.0.1", 43567))
        self.assertEqual(parseAddress("udp [::1]:5000"), ("udp", "::1", 5000))
        self.assertEqual(parseAddress("unix /run/x.sock"), ("unix", "/run/x.sock", None))
        for bad in ("tcp 127.0.0.1", "nonsense", "tcp ::1:5"):
            self.assertRaises(ValueError, parseAddress, bad)

    def test_listeningAddress(self) -> None:
        """
        A C{listening on} event gives a L{ListeningAddress}; other events
        give L{None}.
        """
        self.assertEqual(
            listeningAddress(listeningEvent("udp [::1]:5000", "udp:0:interface=\\:\\:1")),
            ListeningAddress("udp", "::1", 5000, "udp:0:interface=\\:\\:1"),
        )
        self.assertIsNone(listeningAddress({"log_format": "something else"}))
        self.assertIsNone(listeningAddress({"log_format": "listening on {address}"}))

    def test_parseLogRecord(self) -> None:
        """
        Records with or without the C{twist} record separator are parsed;
        anything but a JSON object gives L{None}.
        """
        self.assertEqual(parseLogRecord(b'{"a": 1}\n'), {"a": 1})
        self.assertEqual(parseLogRecord(b'\x1e{"a": 1}'), {"a": 1})
        self.assertIsNone(parseLogRecord(b"not json"))
        self.assertIsNone(parseLogRecord(b"[1, 2]"))
        self.assertIsNone(parseLogRecord(b"\x1e\n"))

    def test_eventText(self) -> None:
        """
        L{eventText} shows stderr lines as written and other events
        formatted.
        """
        self.assertEqual(eventText({"log_io": "oops", "log_format": "{log_io}"}), "oops")
        self.assertEqual(
            eventText({"log_format": "x={x}", "x": 1}), "x=1"
        )


class TwistdProcessTests(SynchronousTestCase):
    """
    L{TwistdProcess} driven in memory, with a fake transport and clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.process = TwistdProcess(self.clock, ["twistd"], 2)
        self.transport = FakeProcessTransport()
        self.process.makeConnection(self.transport)
        self.started = self.process._untilListening(30)

    def end(self, reason=None) -> None:
        """
        End the fake process.
        """
        self.transport.exited = True
        self.process.processEnded(Failure(reason or ProcessDone(0)))

    def test_listening(self) -> None:
        """
        Records split anywhere, with newlines or C{\\x1e} separators, are
        parsed; the start fires after the expected number of C{listening
        on} events, with their addresses.
        """
        data = (
            line({"log_format": "hello"})
            + line(listeningEvent("tcp 127.0.0.1:1234", "tcp:0"), b"\x1e")
            + b"not json\n"
            + line(listeningEvent("tcp [::1]:5678", "tcp6:0"))
        )
        for i in range(0, len(data), 7):
            self.process.outReceived(data[i : i + 7])
        self.assertIs(self.successResultOf(self.started), self.process)
        self.assertEqual(self.process.addresses, [("127.0.0.1", 1234), ("::1", 5678)])
        self.assertEqual(len(self.process.events), 3)
        self.assertEqual(self.process.unparsed, ["not json"])

    def test_exitBeforeListening(self) -> None:
        """
        If the process ends before listening, the start fails with
        L{ProcessFailed} holding its output and exit status.
        """
        self.process.errReceived(b"netservices: something is wrong\n")
        self.end(ProcessTerminated(exitCode=1))
        failure = self.failureResultOf(self.started, ProcessFailed)
        self.assertEqual(failure.value.exitCode, 1)
        self.assertIn("netservices: something is wrong", str(failure.value))

    def test_startTimeout(self) -> None:
        """
        After the timeout, the process is killed, and the start fails with
        L{ProcessTimeout} once it has ended.
        """
        self.clock.advance(30)
        self.assertEqual(self.transport.signals, ["KILL"])
        self.assertNoResult(self.started)
        self.end(ProcessTerminated(signal=signal.SIGKILL))
        failure = self.failureResultOf(self.started, ProcessTimeout)
        self.assertEqual(failure.value.exitCode, -signal.SIGKILL)

    def test_waitForEvent(self) -> None:
        """
        L{TwistdProcess.waitForEvent} fires with a past matching event at
        once, or with a later one when it arrives; it times out, and fails
        when the process ends.
        """
        self.process.outReceived(line({"n": 1}))
        past = self.process.waitForEvent(lambda e: True)
        self.assertEqual(self.successResultOf(past), {"n": 1})
        later = self.process.waitForEvent(lambda e: e.get("n") == 2)
        never = self.process.waitForEvent(lambda e: False, timeout=5)
        ended = self.process.waitForEvent(lambda e: False, timeout=50)
        self.assertNoResult(later)
        self.process.outReceived(line({"n": 2}))
        self.assertEqual(self.successResultOf(later), {"n": 2})
        self.clock.advance(5)
        self.failureResultOf(never, TimeoutError)
        self.end()
        self.failureResultOf(ended, ProcessFailed)
        self.failureResultOf(self.started, ProcessFailed)

    def test_stop(self) -> None:
        """
        L{TwistdProcess.stop} sends SIGTERM to its process and fires with
        the exit status once the process has ended; later calls fire at
        once.
        """
        stopped = self.process.stop()
        self.assertEqual(self.transport.signals, ["TERM"])
        self.assertNoResult(stopped)
        self.end(ProcessTerminated(signal=signal.SIGTERM))
        self.assertEqual(self.successResultOf(stopped), -signal.SIGTERM)
        self.assertEqual(self.successResultOf(self.process.stop()), -signal.SIGTERM)
        self.assertEqual(self.transport.signals, ["TERM"])
        self.failureResultOf(self.started, ProcessFailed)

    def test_stopTimeout(self) -> None:
        """
        A process still running after the timeout of
        L{TwistdProcess.stop} is killed, and C{stop} fails with
        L{ProcessTimeout} once it has ended.
        """
        stopped = self.process.stop(timeout=3)
        self.clock.advance(3)
        self.assertEqual(self.transport.signals, ["TERM", "KILL"])
        self.assertNoResult(stopped)
        self.end(ProcessTerminated(signal=signal.SIGKILL))
        self.failureResultOf(stopped, ProcessTimeout)
        self.failureResultOf(self.started, ProcessFailed)


class ChildProcessTests(TestCase):
    """
    L{startTwistd} and L{runProcess} with real child processes.
    """

    async def test_startFailure(self) -> None:
        """
        A server that exits at once makes L{startTwistd} fail with its
        output.
        """
        with self.assertRaises(ProcessFailed) as caught:
            await startTwistd(reactor, ["tcp-info", "--port", "x"], 1)
        self.assertEqual(caught.exception.exitCode, 1)
        self.assertIn("--port 'x'", str(caught.exception))

    async def test_startTimeout(self) -> None:
        """
        A server that does not log enough C{listening on} events in time is
        killed, and L{startTwistd} fails with L{ProcessTimeout}.
        """
        with self.assertRaises(ProcessTimeout) as caught:
            await startTwistd(reactor, ["tcp-info", "--port", "0"], 2, timeout=2)
        self.assertEqual(caught.exception.exitCode, -signal.SIGKILL)
        self.assertIn("listening on tcp 127.0.0.1:", str(caught.exception))

    async def test_runProcessTimeout(self) -> None:
        """
        L{runProcess} kills a command that outlives its timeout.
        """
        command = [sys.executable, "-c", "import signal; signal.pause()"]
        with self.assertRaises(ProcessTimeout) as caught:
            await runProcess(reactor, command, timeout=0.5)
        self.assertEqual(caught.exception.exitCode, -signal.SIGKILL)

    async def test_fallbacks(self) -> None:
        """
        The fallback of each console script runs it.
        """
        for name, args in FALLBACKS.items():
            out, err, code = await runProcess(reactor, [sys.executable, *args, "--help"])
            self.assertEqual(code, 0, (name, err))
            self.assertIn(b"Options:", out, name)
