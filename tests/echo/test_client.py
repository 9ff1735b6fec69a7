"""
Tests for L{netservices.echo.client} and the C{netservices echo} command.

The clients run against small in-process servers on loopback ports chosen
by the system, some misbehaving on purpose.  Where a test waits for a
timeout or an interval, the clients get the real reactor for the network
and a L{Clock} for time (L{RealNetworkFakeTime}), and the servers advance
the clock themselves at the moment a timeout is due, so nothing sleeps.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
import socket

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import directlyProvides, implementer, providedBy

from netservices import cli
from netservices._common.client import ClientError, untilInterrupted
from netservices.echo.client import (
    HEADER,
    MAX_UDP_MESSAGE,
    EchoError,
    EchoStatistics,
    LineReader,
    _echoEach,
    decodeDatagram,
    describeEvent,
    describeSummary,
    echoTCP,
    echoUDP,
    encodeDatagram,
    formatMilliseconds,
    generatedMessages,
    patternMessage,
    summaryEvent,
)
from netservices.echo.tcp import TCPEchoFactory
from netservices.testing import writeCertificate

SESSION = b"\x01\x02\x03\x04\x05\x06\x07\x08"


class RealNetworkFakeTime:
    """
    The real reactor for sockets, a L{Clock} for time: what the clients
    take as C{reactor} when a test must control their timeouts.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        # HostnameEndpoint looks for the name resolver's interface.
        directlyProvides(self, providedBy(reactor))

    def __getattr__(self, name: str):
        return getattr(reactor, name)

    def callLater(self, *args, **kwargs):
        return self.clock.callLater(*args, **kwargs)

    def seconds(self) -> float:
        return self.clock.seconds()


def closedPort(kind: int) -> int:
    """
    @return: a loopback port that nothing listens on (it was free a moment
        ago).
    """
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EchoStatisticsTests(SynchronousTestCase):
    """
    L{EchoStatistics} counts each message once and sums the round trips up
    as ping does.
    """

    def received(self, *rtts: float) -> EchoStatistics:
        """
        @return: statistics of messages received after C{rtts} seconds.
        """
        statistics = EchoStatistics()
        for rtt in rtts:
            self.assertEqual(statistics.echoed(statistics.messageSent(), 0, True, rtt), "received")
        return statistics

    def test_rtt(self) -> None:
        """
        Minimum, average, maximum and mean deviation (sqrt(mean(rtt²) -
        mean(rtt)²), ping's mdev) of known round trips.
        """
        minimum, average, maximum, mdev = self.received(0.001, 0.002, 0.003, 0.004).rtt()
        self.assertAlmostEqual(minimum, 0.001, places=12)
        self.assertAlmostEqual(average, 0.0025, places=12)
        self.assertAlmostEqual(maximum, 0.004, places=12)
        self.assertAlmostEqual(mdev, math.sqrt(7.5e-6 - 0.0025**2), places=12)
        self.assertAlmostEqual(mdev, 0.00111803398875, places=12)

    def test_rttOfEqualValues(self) -> None:
        """
        Equal round trips have a deviation of exactly 0, although rounding
        makes mean(rtt²) - mean(rtt)² slightly negative for these.
        """
        self.assertLess(0.1**2 * 3 / 3 - (0.1 * 3 / 3) ** 2, 0)
        minimum, average, maximum, mdev = self.received(0.1, 0.1, 0.1).rtt()
        self.assertEqual((minimum, maximum, mdev), (0.1, 0.1, 0.0))
        self.assertAlmostEqual(average, 0.1, places=15)

    def test_noRttBeforeAnEcho(self) -> None:
        """
        Before any message was received there are no round trips.
        """
        statistics = EchoStatistics()
        statistics.messageSent()
        self.assertIsNone(statistics.rtt())
        self.assertIsNone(statistics.asDict()["rtt_ms"])

    def test_allReceived(self) -> None:
        """
        Messages each echoed once, intact, make a run that is C{ok}.
        """
        statistics = self.received(0.001, 0.002)
        self.assertEqual(
            statistics.asDict(),
            {
                "sent": 2,
                "received": 2,
                "lost": 0,
                "duplicated": 0,
                "corrupted": 0,
                "late": 0,
                "retries": 0,
                "ignored": 0,
                "rtt_ms": {"min": 1.0, "avg": 1.5, "max": 2.0, "mdev": 0.5},
                "ok": True,
            },
        )

    def test_duplicateCountedOnce(self) -> None:
        """
        A second echo of the same try is a duplicate: the message is still
        received once, and the run is not C{ok}.
        """
        statistics = self.received(0.001)
        self.assertEqual(statistics.echoed(1, 0, True, 0.002), "duplicate")
        self.assertEqual(statistics.echoed(1, 0, False, None), "duplicate")
        self.assertEqual((statistics.received, statistics.duplicated), (1, 2))
        self.assertEqual(statistics.corrupted, 0)
        self.assertFalse(statistics.ok)
        self.assertEqual(statistics.rtt()[2], 0.001)

    def test_echoOfAnotherTry(self) -> None:
        """
        The echo of a retry after an earlier try's echo (a slow answer, not
        the server's fault) is late: the message is not received twice and
        the run stays C{ok}.
        """
        statistics = EchoStatistics()
        seq = statistics.messageSent()
        statistics.retried()
        self.assertEqual(statistics.echoed(seq, 0, True, 1.5), "received")
        self.assertEqual(statistics.echoed(seq, 1, True, 0.5), "late")
        self.assertEqual(
            (statistics.received, statistics.late, statistics.duplicated, statistics.retries),
            (1, 1, 0, 1),
        )
        self.assertTrue(statistics.ok)

    def test_corrupted(self) -> None:
        """
        A first echo whose bytes differ settles its message as corrupted:
        neither received nor lost, and the run is not C{ok}.
        """
        statistics = self.received(0.001)
        seq = statistics.messageSent()
        self.assertEqual(statistics.echoed(seq, 0, False, 0.001), "corrupted")
        self.assertEqual(
            (statistics.sent, statistics.received, statistics.lost, statistics.corrupted),
            (2, 1, 0, 1),
        )
        self.assertFalse(statistics.ok)
        # Only the intact echo was timed.
        self.assertEqual(statistics.rtt(), (0.001, 0.001, 0.001, 0.0))

    def test_corruptedLateEcho(self) -> None:
        """
        A late echo is checked too: one with other bytes counts as corrupted
        without changing how its message ended.
        """
        statistics = EchoStatistics()
        seq = statistics.messageSent()
        statistics.echoed(seq, 0, True, 0.1)
        self.assertEqual(statistics.echoed(seq, 1, False, None), "late")
        self.assertEqual((statistics.received, statistics.corrupted), (1, 1))

    def test_lostStaysLost(self) -> None:
        """
        A message given up is lost, even if an echo comes after.
        """
        statistics = EchoStatistics()
        seq = statistics.messageSent()
        statistics.gaveUp(seq)
        self.assertEqual(statistics.echoed(seq, 2, True, None), "late")
        self.assertEqual((statistics.received, statistics.lost, statistics.late), (0, 1, 1))
        self.assertFalse(statistics.ok)

    def test_inFlightCountsAsLost(self) -> None:
        """
        A message still without an echo when the run ends counts as lost.
        """
        statistics = self.received(0.001)
        statistics.messageSent()
        self.assertEqual(statistics.lost, 1)

    def test_unknownMessagesIgnored(self) -> None:
        """
        Echoes naming a message that was not sent, or an impossible try,
        are ignored.
        """
        statistics = self.received(0.001)
        for seq, attempt in [(0, 0), (2, 0), (1, 64), (1, -1)]:
            self.assertEqual(statistics.echoed(seq, attempt, True, 0.001), "ignored")
        self.assertEqual((statistics.received, statistics.ignored), (1, 4))
        self.assertTrue(statistics.ok)

    def test_nothingSentIsNotOk(self) -> None:
        """
        A run that sent nothing is not C{ok}.
        """
        self.assertFalse(EchoStatistics().ok)

    def test_firstEchoNeedsRtt(self) -> None:
        """
        The echo that makes a message received must be timed.
        """
        statistics = EchoStatistics()
        self.assertRaises(ValueError, statistics.echoed, statistics.messageSent(), 0, True, None)


class DatagramCodecTests(SynchronousTestCase):
    """
    The header of UDP echoes, and the generated messages.
    """

    def test_layout(self) -> None:
        """
        Magic, session, sequence number and try, big-endian, then the
        message.
        """
        self.assertEqual(
            encodeDatagram(SESSION, 1, 2, b"hi"),
            b"NSE1" + SESSION + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x02" + b"hi",
        )
        self.assertEqual(HEADER.size, 20)
        self.assertEqual(MAX_UDP_MESSAGE, 65_487)

    def test_roundTrip(self) -> None:
        """
        L{decodeDatagram} gives back what L{encodeDatagram} was given, for
        empty, small and the largest messages.
        """
        for seq, attempt, message in [
            (1, 0, b""),
            (7, 3, b"hello"),
            (2**32 - 1, 63, patternMessage(1, MAX_UDP_MESSAGE)),
        ]:
            data = encodeDatagram(SESSION, seq, attempt, message)
            self.assertEqual(decodeDatagram(data, SESSION), (seq, attempt, message))
        self.assertEqual(len(data), 65_507)

    def test_shortRejected(self) -> None:
        """
        Datagrams shorter than the header are refused.
        """
        data = encodeDatagram(SESSION, 1, 0, b"")
        for length in [0, 4, len(data) - 1]:
            self.assertRaises(ValueError, decodeDatagram, data[:length], SESSION)

    def test_foreignRejected(self) -> None:
        """
        Datagrams with another magic (not ours) or another session (an
        earlier run) are refused.
        """
        data = encodeDatagram(SESSION, 1, 0, b"hello")
        self.assertRaises(ValueError, decodeDatagram, b"XXXX" + data[4:], SESSION)
        self.assertRaises(ValueError, decodeDatagram, data, b"\x00" * 8)
        self.assertRaises(ValueError, decodeDatagram, b"hello, are you an echo server?", SESSION)

    def test_pattern(self) -> None:
        """
        Generated messages have the size asked for, are the same in every
        run and differ from one sequence number to the next.
        """
        self.assertEqual(len(patternMessage(3, 1000)), 1000)
        self.assertEqual(patternMessage(3, 1000), patternMessage(3, 1000))
        self.assertNotEqual(patternMessage(3, 64), patternMessage(4, 64))
        self.assertEqual(
            list(generatedMessages(3, 10)), [patternMessage(seq, 10) for seq in (1, 2, 3)]
        )


class DescribeTests(SynchronousTestCase):
    """
    Events and summaries as lines for people.
    """

    def echo(self, **fields) -> dict:
        """
        @return: an echo event, with C{fields} changed.
        """
        event = {
            "type": "echo",
            "seq": 1,
            "bytes": 64,
            "from": "127.0.0.1:7777",
            "time_ms": 0.213,
            "outcome": "received",
            "intact": True,
        }
        event.update(fields)
        return event

    def test_echo(self) -> None:
        """
        An echo is shown as ping shows a reply, with a try after the first
        and marks for duplicates, late and corrupted echoes.
        """
        self.assertEqual(
            describeEvent(self.echo()), "64 bytes from 127.0.0.1:7777: seq=1 time=0.213 ms"
        )
        self.assertEqual(
            describeEvent(self.echo(**{"try": 1, "seq": 2})),
            "64 bytes from 127.0.0.1:7777: seq=2 time=0.213 ms",
        )
        self.assertEqual(
            describeEvent(self.echo(**{"try": 2, "outcome": "duplicate"})),
            "64 bytes from 127.0.0.1:7777: seq=1 try=2 time=0.213 ms (DUP!)",
        )
        self.assertEqual(
            describeEvent(self.echo(outcome="late", intact=False, time_ms=None)),
            "64 bytes from 127.0.0.1:7777: seq=1 (late, corrupted)",
        )
        self.assertEqual(
            describeEvent(self.echo(outcome="corrupted", intact=False, time_ms=12.345)),
            "64 bytes from 127.0.0.1:7777: seq=1 time=12.3 ms (corrupted)",
        )

    def test_lost(self) -> None:
        """
        A message given up says how many tries it had.
        """
        event = {"type": "lost", "seq": 3, "bytes": 64, "from": "[::1]:7777", "tries": 3}
        self.assertEqual(describeEvent(event), "no echo of seq=3 from [::1]:7777 after 3 tries")
        event["tries"] = 1
        self.assertEqual(describeEvent(event), "no echo of seq=3 from [::1]:7777 after 1 try")

    def test_milliseconds(self) -> None:
        """
        Round trips have as many decimals as ping gives them.
        """
        self.assertEqual(
            [formatMilliseconds(ms) for ms in (0.0534, 1.234, 12.34, 123.4)],
            ["0.053", "1.23", "12.3", "123"],
        )

    def test_summary(self) -> None:
        """
        The summary has ping's title and rtt line; UDP counts its retries,
        and late and ignored echoes show only when there were some.
        """
        statistics = EchoStatistics()
        for rtt in (0.001, 0.002, 0.003, 0.004):
            statistics.echoed(statistics.messageSent(), 0, True, rtt)
        self.assertEqual(
            describeSummary(summaryEvent(statistics, "tcp", "localhost:7777")),
            "--- localhost:7777 tcp echo statistics ---\n"
            "4 sent, 4 received, 0 lost, 0 duplicated, 0 corrupted\n"
            "rtt min/avg/max/mdev = 1.000/2.500/4.000/1.118 ms",
        )
        statistics.retried()
        statistics.echoed(4, 1, True, None)
        statistics.ignore()
        statistics.gaveUp(statistics.messageSent())
        self.assertEqual(
            describeSummary(summaryEvent(statistics, "udp", "[::1]:7777")).splitlines()[:2],
            [
                "--- [::1]:7777 udp echo statistics ---",
                "5 sent, 4 received, 1 lost, 0 duplicated, 0 corrupted, 1 retry, 1 late, 1 ignored",
            ],
        )

    def test_summaryWithoutEchoes(self) -> None:
        """
        Without echoes the summary has no rtt line.
        """
        self.assertEqual(
            describeSummary(summaryEvent(EchoStatistics(), "udp", "h:1")),
            "--- h:1 udp echo statistics ---\n"
            "0 sent, 0 received, 0 lost, 0 duplicated, 0 corrupted, 0 retries",
        )


class PacingTests(SynchronousTestCase):
    """
    Messages leave one at a time, C{interval} seconds apart.
    """

    def start(self, messages, interval: float, took: float = 0.0):
        """
        Start sending C{messages} through a fake C{echoOne} that takes
        C{took} seconds of a L{Clock}.

        @return: the clock, the send times so far, the run's L{Deferred}
            and its statistics.
        """
        clock = Clock()
        sentAt = []
        statistics = EchoStatistics()

        async def echoOne(seq: int, message: bytes) -> None:
            sentAt.append(clock.seconds())
            clock.advance(took)

        running = defer.Deferred.fromCoroutine(
            _echoEach(clock, messages, interval, statistics, echoOne)
        )
        return clock, sentAt, running, statistics

    def test_interval(self) -> None:
        """
        Each message leaves C{interval} seconds after the one before it,
        counted from send to send, and no wait follows the last one.
        """
        clock, sentAt, running, statistics = self.start([b"a", b"b", b"c"], 1.0, took=0.25)
        self.assertEqual(sentAt, [0.0])
        clock.advance(0.74)
        self.assertEqual(sentAt, [0.0])
        clock.advance(0.01)
        self.assertEqual(sentAt, [0.0, 1.0])
        clock.advance(0.75)
        self.assertEqual(sentAt, [0.0, 1.0, 2.0])
        self.successResultOf(running)
        self.assertEqual(statistics.sent, 3)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_slowEcho(self) -> None:
        """
        A message whose echo took longer than the interval is followed at
        once.
        """
        clock, sentAt, running, _ = self.start([b"a", b"b"], 1.0, took=1.5)
        self.assertEqual(sentAt, [0.0, 1.5])
        self.successResultOf(running)

    def test_noInterval(self) -> None:
        """
        With an interval of 0 the messages follow each other without any
        timer.
        """
        clock, sentAt, running, statistics = self.start(generatedMessages(4, 8), 0.0)
        self.assertEqual(sentAt, [0.0] * 4)
        self.successResultOf(running)
        self.assertEqual((statistics.sent, clock.getDelayedCalls()), (4, []))

    def test_interrupted(self) -> None:
        """
        Cancelling the run (Ctrl-C) during a wait ends it with what was
        measured.
        """
        clock, sentAt, running, statistics = self.start([b"a", b"b"], 1.0)
        running.cancel()
        self.successResultOf(running)
        self.assertEqual(statistics.sent, 1)
        self.assertEqual(clock.getDelayedCalls(), [])


class LineReaderTests(TestCase):
    """
    L{LineReader} gives the lines of a pipe, bounded in length.
    """

    def pipe(self, data: bytes, maxLength: int = 100) -> LineReader:
        """
        @return: a L{LineReader} of a pipe that holds C{data}, then ends.
        """
        readEnd, writeEnd = os.pipe()
        self.addCleanup(os.close, readEnd)
        os.write(writeEnd, data)
        os.close(writeEnd)
        lines = LineReader(reactor, readEnd, maxLength)
        self.addCleanup(lambda: self.assertNotIn(lines, reactor.getReaders()))
        return lines

    async def readAll(self, lines: LineReader) -> list[bytes]:
        """
        @return: every line of C{lines}.
        """
        return [line async for line in lines]

    async def test_lines(self) -> None:
        """
        Lines come with their endings; the last one may have none; an empty
        line is one byte.
        """
        lines = self.pipe(b"one\n\ntwo\r\nthree")
        self.assertEqual(await self.readAll(lines), [b"one\n", b"\n", b"two\r\n", b"three"])

    async def test_empty(self) -> None:
        """
        An empty input has no lines.
        """
        self.assertEqual(await self.readAll(self.pipe(b"")), [])

    async def test_longest(self) -> None:
        """
        A line of C{maxLength} bytes, its ending included, is accepted.
        """
        lines = self.pipe(b"x" * 9 + b"\n" + b"y" * 10, maxLength=10)
        self.assertEqual(await self.readAll(lines), [b"x" * 9 + b"\n", b"y" * 10])

    async def test_tooLong(self) -> None:
        """
        A longer line fails with its number.
        """
        lines = self.pipe(b"ok\n" + b"x" * 10 + b"\n", maxLength=10)
        self.assertEqual(await lines.__anext__(), b"ok\n")
        with self.assertRaises(EchoError) as caught:
            await lines.__anext__()
        self.assertEqual(str(caught.exception), "line 2 of standard input is longer than 10 bytes")


class MisbehavingUDPEcho(DatagramProtocol):
    """
    A UDP echo server that misbehaves deterministically, by the sequence
    number and try in each datagram's header.  When it drops or holds a try
    it advances the client's clock by the client's timeout, so that the
    client sends its next try at once.

    @ivar drop: C{(seq, try)} pairs not echoed.
    @ivar duplicate: sequence numbers echoed twice.
    @ivar corrupt: sequence numbers echoed with a byte flipped.
    @ivar hold: sequence numbers whose first try is echoed only after the
        second, just before it.
    @ivar strays: datagrams sent before the first echo.
    @ivar arrived: fired when a datagram has been handled, if set.
    """

    def __init__(self, clock: Clock, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout
        self.drop: set[tuple[int, int]] = set()
        self.duplicate: set[int] = set()
        self.corrupt: set[int] = set()
        self.hold: set[int] = set()
        self.strays: list[bytes] = []
        self.held: bytes | None = None
        self.received: list[tuple[int, int]] = []
        self.arrived: defer.Deferred | None = None

    def datagramReceived(self, data: bytes, addr) -> None:
        self.handle(data, addr)
        arrived, self.arrived = self.arrived, None
        if arrived is not None:
            arrived.callback(None)

    def handle(self, data: bytes, addr) -> None:
        _, _, seq, attempt = HEADER.unpack_from(data)
        self.received.append((seq, attempt))
        for stray in self.strays:
            self.transport.write(stray, addr)
        self.strays = []
        if (seq, attempt) in self.drop or (seq in self.hold and attempt == 0):
            if seq in self.hold:
                self.held = data
            self.clock.advance(self.timeout)
            return
        if self.held is not None:
            self.transport.write(self.held, addr)
            self.held = None
        if seq in self.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        self.transport.write(data, addr)
        if seq in self.duplicate:
            self.transport.write(data, addr)


class UDPClientTests(TestCase):
    """
    L{echoUDP} against misbehaving servers on 127.0.0.1.
    """

    timeout = 1.0

    def setUp(self) -> None:
        self.clock = Clock()
        self.server = MisbehavingUDPEcho(self.clock, self.timeout)
        port = reactor.listenUDP(0, self.server, interface="127.0.0.1", maxPacketSize=65535)
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port
        self.events: list[dict] = []

    def echo(self, messages, retries: int = 2, clientReactor=None):
        """
        Run L{echoUDP} to the server, with no interval.

        @return: its L{Deferred}.
        """
        return defer.Deferred.fromCoroutine(
            echoUDP(
                clientReactor or RealNetworkFakeTime(self.clock),
                "127.0.0.1",
                self.port,
                messages,
                timeout=self.timeout,
                retries=retries,
                interval=0,
                report=self.events.append,
                session=SESSION,
            )
        )

    def outcomes(self) -> list[tuple]:
        """
        @return: C{(seq, try, outcome)} of each echo, C{(seq, "lost")} of
            each message given up.
        """
        return [
            (e["seq"], e["try"], e["outcome"]) if e["type"] == "echo" else (e["seq"], "lost")
            for e in self.events
        ]

    async def test_allConfirmed(self) -> None:
        """
        Generated messages, some retried (the first try of every third is
        dropped), one echoed twice: every message is received once, the
        retries are counted, and the copy only as a duplicate (so the run
        is not C{ok}).
        """
        self.server.drop = {(3, 0), (6, 0)}
        self.server.duplicate = {2}
        statistics = await self.echo(generatedMessages(7, 100))
        self.assertEqual(
            (statistics.sent, statistics.received, statistics.lost, statistics.retries),
            (7, 7, 0, 2),
        )
        self.assertEqual((statistics.duplicated, statistics.corrupted), (1, 0))
        self.assertFalse(statistics.ok)
        self.assertIn((2, 1, "duplicate"), self.outcomes())
        self.assertIn((3, 2, "received"), self.outcomes())
        received = [e["seq"] for e in self.events if e["outcome"] == "received"]
        self.assertEqual(received, list(range(1, 8)))
        self.assertEqual(
            self.server.received,
            [(1, 0), (2, 0), (3, 0), (3, 1), (4, 0), (5, 0), (6, 0), (6, 1), (7, 0)],
        )

    async def test_retriedWithoutDuplicates(self) -> None:
        """
        Retries alone do not spoil a run: it is C{ok}, and the retried
        message's round trip is timed from the try that was echoed.
        """
        self.server.drop = {(2, 0), (2, 1)}
        statistics = await self.echo([b"a", b"b", b"c"])
        self.assertEqual((statistics.received, statistics.retries), (3, 2))
        self.assertTrue(statistics.ok)
        self.assertEqual([e["time_ms"] for e in self.events], [0.0, 0.0, 0.0])

    async def test_lateEcho(self) -> None:
        """
        An echo of the first try that arrives after the second try was sent
        settles the message, timed from the first try; the second try's
        echo is then only late.
        """
        self.server.hold = {2}
        statistics = await self.echo([b"a", b"b", b"c"])
        self.assertEqual(
            self.outcomes(),
            [(1, 1, "received"), (2, 1, "received"), (2, 2, "late"), (3, 1, "received")],
        )
        self.assertEqual(self.events[1]["time_ms"], self.timeout * 1000)
        self.assertEqual((statistics.received, statistics.late, statistics.duplicated), (3, 1, 0))
        self.assertTrue(statistics.ok)

    async def test_lost(self) -> None:
        """
        A message none of whose tries is echoed is given up, reported, and
        the next one is sent.
        """
        self.server.drop = {(2, 0), (2, 1)}
        statistics = await self.echo([b"a", b"b", b"c"], retries=1)
        self.assertEqual(self.outcomes(), [(1, 1, "received"), (2, "lost"), (3, 1, "received")])
        self.assertEqual(self.events[1]["tries"], 2)
        self.assertEqual((statistics.sent, statistics.received, statistics.lost), (3, 2, 1))
        self.assertFalse(statistics.ok)

    async def test_corrupted(self) -> None:
        """
        An echo with a byte changed counts as corrupted.
        """
        self.server.corrupt = {2}
        statistics = await self.echo([b"hello", b"world", b"again"])
        self.assertEqual((statistics.received, statistics.corrupted, statistics.lost), (2, 1, 0))
        self.assertEqual(self.outcomes()[1], (2, 1, "corrupted"))
        self.assertFalse(self.events[1]["intact"])
        self.assertFalse(statistics.ok)

    async def test_straysIgnored(self) -> None:
        """
        Datagrams of another run, of another program or too short to be
        ours are ignored.
        """
        self.server.strays = [
            encodeDatagram(b"\x00" * 8, 1, 0, b"a"),
            b"NSE1",
            b"hello",
            encodeDatagram(SESSION, 9, 0, b"from the future"),
        ]
        statistics = await self.echo([b"a"])
        self.assertEqual((statistics.received, statistics.ignored), (1, 4))
        self.assertTrue(statistics.ok)

    async def test_largest(self) -> None:
        """
        The largest message that fits in a datagram comes back whole
        (Twisted's default read size of 8,192 bytes would truncate it).
        """
        statistics = await self.echo([patternMessage(1, MAX_UDP_MESSAGE)])
        self.assertTrue(statistics.ok)

    async def test_tooLarge(self) -> None:
        """
        A message that does not fit in one datagram fails the run.
        """
        with self.assertRaises(EchoError) as caught:
            await self.echo([b"x" * (MAX_UDP_MESSAGE + 1)])
        self.assertIn("does not fit in one datagram", str(caught.exception))

    async def test_portUnreachable(self) -> None:
        """
        ICMP port unreachable fails the run with one line.
        """
        port = closedPort(socket.SOCK_DGRAM)
        running = defer.Deferred.fromCoroutine(
            echoUDP(reactor, "127.0.0.1", port, [b"a"], timeout=5.0, interval=0)
        )
        with self.assertRaises(EchoError) as caught:
            await running
        self.assertEqual(
            str(caught.exception), f"127.0.0.1:{port}: port unreachable (is the server running?)"
        )

    async def test_interrupted(self) -> None:
        """
        Cancelling the run while a message waits for its echo gives the
        statistics, the message counted as lost.
        """
        self.server.drop = {(1, 0)}
        self.server.clock = Clock()  # so that the client keeps waiting
        self.server.arrived = arrived = defer.Deferred()
        running = self.echo([b"a"])
        await arrived
        running.cancel()
        statistics = await running
        self.assertEqual((statistics.sent, statistics.lost), (1, 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class NeverAnswers(Protocol):
    """
    Reads and never answers; advances a clock by C{timeout} when the first
    bytes arrive, so that the client's timeout expires at once.
    """

    def __init__(self, clock: Clock, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout
        self.advanced = False

    def dataReceived(self, data: bytes) -> None:
        if not self.advanced:
            self.advanced = True
            self.clock.advance(self.timeout)


class EchoOnceThenClose(Protocol):
    """
    Echoes the first bytes, then closes the connection.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)
        self.transport.loseConnection()


class CorruptingEcho(Protocol):
    """
    Echoes, with one byte flipped: the fourth one of the stream.
    """

    def connectionMade(self) -> None:
        self.offset = 0

    def dataReceived(self, data: bytes) -> None:
        position = 3 - self.offset
        if 0 <= position < len(data):
            data = data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]
        self.offset += len(data)
        self.transport.write(data)


class TalkativeEcho(Protocol):
    """
    Echoes, and says one byte more after the first message.
    """

    def connectionMade(self) -> None:
        self.extra = b"!"

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data + self.extra)
        self.extra = b""


def trackConnections(testCase: TestCase, factory: Factory) -> Factory:
    """
    Make C{testCase} wait, at its end, until every connection of
    C{factory} is closed (the server's side closes after the client's).

    @return: C{factory}.
    """
    lost: list[defer.Deferred] = []
    buildProtocol = factory.buildProtocol

    def build(addr):
        protocol = buildProtocol(addr)
        done = defer.Deferred()
        lost.append(done)
        connectionLost = protocol.connectionLost

        def closed(reason) -> None:
            connectionLost(reason)
            done.callback(None)

        protocol.connectionLost = closed
        return protocol

    factory.buildProtocol = build
    factory.noisy = False
    testCase.addCleanup(lambda: defer.gatherResults(lost))
    return factory


@implementer(IOpenSSLContextFactory)
class ServerTLS:
    """
    A server's TLS context, made from C{cryptography} objects (pyOpenSSL's
    own, which Twisted's certificate classes make, are deprecated).
    """

    def __init__(self, certificate: x509.Certificate, key) -> None:
        self.certificate = certificate
        self.key = key

    def getContext(self) -> SSL.Context:
        context = SSL.Context(SSL.TLS_SERVER_METHOD)
        context.use_certificate(self.certificate)
        context.use_privatekey(self.key)
        return context


def makeCertificate(directory: str) -> tuple[ServerTLS, str]:
    """
    Make a self-signed certificate for C{localhost} and 127.0.0.1.

    @return: the server's TLS context, and the path of a PEM file of the
        certificate alone (what clients trust).
    """
    os.makedirs(directory)
    pem, caFile = writeCertificate(Path(directory))
    data = pem.read_bytes()
    key = serialization.load_pem_private_key(data, None)
    certificate = x509.load_pem_x509_certificate(data)
    return ServerTLS(certificate, key), str(caFile)


class TCPClientTests(TestCase):
    """
    L{echoTCP} against in-process servers on 127.0.0.1.
    """

    def listen(self, factory, tls=None) -> int:
        """
        Listen with C{factory} on 127.0.0.1, until the end of the test.

        @param tls: the server's TLS context, for TLS.
        @return: the port.
        """
        trackConnections(self, factory)
        if tls is None:
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        else:
            port = reactor.listenSSL(0, factory, tls, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def listenWith(self, protocol) -> int:
        """
        Listen with a factory of C{protocol}, until the end of the test;
        its connections are closed after the client's.

        @return: the port.
        """
        return self.listen(Factory.forProtocol(protocol))

    def echo(self, port: int, messages, clientReactor=reactor, **kwargs):
        """
        Run L{echoTCP} against 127.0.0.1:C{port}, with no interval.

        @return: its L{Deferred}.
        """
        self.events: list[dict] = []
        return defer.Deferred.fromCoroutine(
            echoTCP(
                clientReactor,
                "127.0.0.1",
                port,
                messages,
                interval=0,
                report=self.events.append,
                **kwargs,
            )
        )

    async def test_messages(self) -> None:
        """
        Several messages, one of 100 KiB (many reads), all come back intact
        from tcp-echo.
        """
        factory = TCPEchoFactory()
        port = self.listen(factory)
        big = patternMessage(1, 100 * 1024)
        statistics = await self.echo(port, [b"hello", big, b"x", big[::-1]])
        self.assertEqual(
            [(e["seq"], e["bytes"], e["outcome"]) for e in self.events],
            [(1, 5, "received"), (2, 102400, "received")]
            + [(3, 1, "received"), (4, 102400, "received")],
        )
        self.assertEqual({e["from"] for e in self.events}, {f"127.0.0.1:{port}"})
        self.assertTrue(statistics.ok)
        self.assertEqual(factory.counts, {"connections": 1, "bytes": 204806})

    async def test_corrupted(self) -> None:
        """
        An echo with a byte flipped counts as corrupted, and the messages
        after it are still checked.
        """
        port = self.listenWith(CorruptingEcho)
        statistics = await self.echo(port, generatedMessages(3, 64))
        self.assertEqual((statistics.received, statistics.corrupted, statistics.lost), (2, 1, 0))
        self.assertEqual([e["intact"] for e in self.events], [False, True, True])
        self.assertFalse(statistics.ok)

    async def test_moreThanSent(self) -> None:
        """
        A byte more than was sent puts the stream out of step: one message
        counts as corrupted.
        """
        port = self.listenWith(TalkativeEcho)
        statistics = await self.echo(port, [b"abc", b"def"])
        self.assertEqual((statistics.received, statistics.corrupted), (1, 1))
        self.assertEqual(statistics.duplicated, 0)

    async def test_noEcho(self) -> None:
        """
        A server that never answers fails the run after C{timeout}, with
        the message counted as lost.
        """
        clock = Clock()
        port = self.listenWith(lambda: NeverAnswers(clock, 5.0))
        with self.assertRaises(EchoError) as caught:
            await self.echo(
                port, [b"a", b"b"], clientReactor=RealNetworkFakeTime(clock), timeout=5.0
            )
        self.assertEqual(
            str(caught.exception), f"no echo of seq=1 from 127.0.0.1:{port} within 5 s"
        )
        statistics = caught.exception.statistics
        self.assertEqual((statistics.sent, statistics.lost), (1, 1))
        self.assertEqual(clock.getDelayedCalls(), [])

    async def test_closed(self) -> None:
        """
        A server that closes the connection fails the run with one line and
        the statistics so far.
        """
        port = self.listenWith(EchoOnceThenClose)
        with self.assertRaises(EchoError) as caught:
            await self.echo(port, [b"a", b"b"])
        self.assertEqual(str(caught.exception), f"127.0.0.1:{port} closed the connection")
        statistics = caught.exception.statistics
        self.assertEqual((statistics.sent, statistics.received, statistics.lost), (2, 1, 1))

    async def test_handshakeTimeout(self) -> None:
        """
        A TLS server that never finishes the handshake fails the connection
        after C{timeout}.
        """
        clock = Clock()
        port = self.listenWith(lambda: NeverAnswers(clock, 2.0))
        with self.assertRaises(EchoError) as caught:
            await self.echo(
                port, [b"a"], clientReactor=RealNetworkFakeTime(clock), timeout=2.0, tls=True
            )
        self.assertEqual(str(caught.exception), f"cannot connect to 127.0.0.1:{port} within 2 s")
        self.assertIsNone(caught.exception.statistics)

    async def test_refused(self) -> None:
        """
        A port nothing listens on fails with one line.
        """
        port = closedPort(socket.SOCK_STREAM)
        with self.assertRaises(ClientError) as caught:
            await self.echo(port, [b"a"])
        self.assertEqual(str(caught.exception), f"connection refused by 127.0.0.1:{port}")

    async def test_tls(self) -> None:
        """
        Over TLS, with the server's certificate trusted, the messages come
        back; a certificate for another name fails with one line.
        """
        certificate, caFile = makeCertificate(self.mktemp())
        port = self.listen(TCPEchoFactory(), tls=certificate)
        statistics = await self.echo(
            port, [b"secret", b"x" * 70000], tls=True, caFile=caFile, serverName="localhost"
        )
        self.assertTrue(statistics.ok)
        with self.assertRaises(ClientError) as caught:
            await self.echo(port, [b"a"], tls=True, caFile=caFile, serverName="wrong.example")
        self.assertEqual(
            str(caught.exception),
            f"127.0.0.1:{port}: TLS failed: the certificate is not valid for wrong.example",
        )


class CommandLineTests(SynchronousTestCase):
    """
    Parsing C{netservices echo}.
    """

    def parse(self, *args: str):
        """
        @return: the options of the echo mode of C{netservices ARGS}.
        """
        options = cli.Options()
        options.parseOptions(list(args))
        return options.subOptions.subOptions

    def test_defaults(self) -> None:
        """
        Port 7777, 5 messages of 64 bytes, one a second; TCP waits 5 s, UDP
        1 s per try, with 2 retries.
        """
        tcp = self.parse("echo", "tcp", "localhost")
        self.assertEqual((tcp["host"], tcp["port"]), ("localhost", 7777))
        self.assertEqual((tcp["interval"], tcp["timeout"]), (1.0, 5.0))
        self.assertEqual(list(tcp.messages(reactor)), list(generatedMessages(5, 64)))
        udp = self.parse("echo", "udp", "[::1]:9")
        self.assertEqual((udp["host"], udp["port"]), ("::1", 9))
        self.assertEqual((udp["timeout"], udp["retries"]), (1.0, 2))

    def test_messages(self) -> None:
        """
        Arguments after HOST are the messages, as bytes; options may follow
        them, and C{--} ends the options.
        """
        options = self.parse("echo", "udp", "h", "hello", "-i", "0", "w\u00f6rld", "--", "-q")
        self.assertEqual(options["messages"], [b"hello", "w\u00f6rld".encode(), b"-q"])
        self.assertEqual((options["interval"], options["quiet"]), (0.0, False))

    def test_generated(self) -> None:
        """
        C{--count} and C{--size} shape the generated messages.
        """
        options = self.parse("echo", "tcp", "h", "-c", "2", "--size=10")
        self.assertEqual(list(options.messages(reactor)), list(generatedMessages(2, 10)))

    def test_stdin(self) -> None:
        """
        C{--stdin} reads lines no longer than a message may be.
        """
        lines = self.parse("echo", "udp", "h", "--stdin").messages(reactor)
        self.assertIsInstance(lines, LineReader)
        self.assertEqual(lines._maxLength, MAX_UDP_MESSAGE)

    def test_largestDatagram(self) -> None:
        """
        UDP messages may have up to 65,487 bytes.
        """
        self.assertEqual(self.parse("echo", "udp", "h", "-s", "65487")["size"], 65487)

    def test_usageErrors(self) -> None:
        """
        Bad arguments are usage errors, each one line.
        """
        for args, message in [
            (["echo"], "choose tcp or udp"),
            (["echo", "tcp"], "expected HOST[:PORT]"),
            (["echo", "tcp", "h:0"], "bad port"),
            (["echo", "tcp", "h", "m", "--size", "3"], "only one of them"),
            (["echo", "tcp", "h", "--stdin", "-c", "3"], "only one of them"),
            (["echo", "tcp", "h", ""], "empty MESSAGE"),
            (["echo", "udp", "h", "-s", "65488"], "at most 65,487 bytes fit in one datagram"),
            (["echo", "udp", "h", "x" * 65488], "a message of 65,488 bytes is too long"),
            (["echo", "tcp", "h", "-s", str(16 * 2**20 + 1)], "at most 16,777,216 bytes"),
            (["echo", "udp", "h", "--retries", "64"], "at most 63"),
            # The shared number coercers word the reason.
            (["echo", "tcp", "h", "-i", "-1"], "'-1'"),
            (["echo", "tcp", "h", "-c", "0"], "'0'"),
            (["echo", "udp", "h", "--retries", "-1"], "'-1'"),
            (["echo", "tcp", "h", "--timeout", "0"], "Parameter type enforcement failed"),
            (["echo", "udp", "h", "--tls"], "option --tls not recognized"),
        ]:
            with self.assertRaises(usage.UsageError, msg=args) as caught:
                self.parse(*args)
            self.assertIn(message, str(caught.exception), args)
            self.assertNotIn("\n", str(caught.exception))

    def test_usageExitStatus(self) -> None:
        """
        The command says what is wrong in one line and exits with status 2.
        """
        stderr = io.StringIO()
        self.patch(cli.sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as caught:
            cli.main(["echo", "udp", "h", "m", "--count", "2"])
        self.assertEqual(caught.exception.code, 2)
        self.assertEqual(
            stderr.getvalue(),
            "netservices echo udp: give MESSAGEs, --stdin or --count/--size:"
            " only one of them (see --help)\n",
        )

    def test_infoStillParses(self) -> None:
        """
        The info modes, sharing the option parsing, still take options
        after HOST (and parameters with empty values).
        """
        options = cli.Options()
        options.parseOptions(["info", "tcp", "h:1", "--tls", "--server-name=", "--json"])
        tcp = options.subOptions.subOptions
        self.assertEqual((tcp["host"], tcp["port"], tcp["tls"], tcp["json"]), ("h", 1, True, True))
        self.assertEqual(tcp["server-name"], "")


class CommandTests(TestCase):
    """
    C{netservices echo} end to end in this process: what it prints and its
    exit status.
    """

    def setUp(self) -> None:
        self.stdout = io.StringIO()
        self.patch(cli.sys, "stdout", self.stdout)

    def listen(self, factory) -> int:
        """
        Listen with C{factory} on 127.0.0.1 until the end of the test.
        """
        port = reactor.listenTCP(0, trackConnections(self, factory), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def command(self, *args: str) -> int | str | None:
        """
        Run C{netservices ARGS} as L{cli.main} does, in this reactor.

        @return: the exit status: L{None} for 0, or the one-line message.
        """
        options = cli.Options()
        options.parseOptions(list(args))
        try:
            await cli._run(reactor, options)
        except SystemExit as e:
            return e.code
        return None

    async def test_success(self) -> None:
        """
        Ping-style lines, then the summary; exit status 0.
        """
        port = self.listen(TCPEchoFactory())
        status = await self.command("echo", "tcp", f"127.0.0.1:{port}", "-i", "0", "ab", "cde")
        self.assertIsNone(status)
        lines = self.stdout.getvalue().splitlines()
        self.assertRegex(lines[0], rf"^2 bytes from 127\.0\.0\.1:{port}: seq=1 time=\d+\.\d+ ms$")
        self.assertRegex(lines[1], rf"^3 bytes from 127\.0\.0\.1:{port}: seq=2 time=")
        self.assertEqual(lines[2:4], ["", f"--- 127.0.0.1:{port} tcp echo statistics ---"])
        self.assertEqual(lines[4], "2 sent, 2 received, 0 lost, 0 duplicated, 0 corrupted")
        self.assertRegex(lines[5], r"^rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms$")
        self.assertEqual(len(lines), 6)

    async def test_corruptedJSON(self) -> None:
        """
        With C{--json}, one object per echo and the summary; a corrupted
        echo makes the exit status 1.
        """
        port = self.listen(Factory.forProtocol(CorruptingEcho))
        status = await self.command(
            "echo", "tcp", f"127.0.0.1:{port}", "-i", "0", "-c", "2", "--json"
        )
        self.assertEqual(status, 1)
        objects = [json.loads(line) for line in self.stdout.getvalue().splitlines()]
        self.assertEqual([o["type"] for o in objects], ["echo", "echo", "summary"])
        self.assertEqual([o.get("outcome") for o in objects[:2]], ["corrupted", "received"])
        summary = objects[2]
        self.assertEqual(
            {k: summary[k] for k in ("transport", "sent", "received", "corrupted", "ok")},
            {"transport": "tcp", "sent": 2, "received": 1, "corrupted": 1, "ok": False},
        )

    async def test_duplicatedQuiet(self) -> None:
        """
        With C{--quiet}, only the summary; a duplicated UDP echo makes the
        exit status 1.
        """
        server = MisbehavingUDPEcho(Clock(), 1.0)
        server.duplicate = {1}
        udpPort = reactor.listenUDP(0, server, interface="127.0.0.1")
        self.addCleanup(udpPort.stopListening)
        port = udpPort.getHost().port
        status = await self.command("echo", "udp", f"127.0.0.1:{port}", "-q", "-i", "0", "-c", "2")
        self.assertEqual(status, 1)
        lines = self.stdout.getvalue().splitlines()
        self.assertEqual(lines[0], f"--- 127.0.0.1:{port} udp echo statistics ---")
        self.assertEqual(
            lines[1], "2 sent, 2 received, 0 lost, 1 duplicated, 0 corrupted, 0 retries"
        )

    async def test_failure(self) -> None:
        """
        A failure is one line, prefixed with the command; nothing else is
        printed.
        """
        port = closedPort(socket.SOCK_STREAM)
        status = await self.command("echo", "tcp", f"127.0.0.1:{port}")
        self.assertEqual(status, f"netservices echo tcp: connection refused by 127.0.0.1:{port}")
        self.assertEqual(self.stdout.getvalue(), "")


class FakeShutdown:
    """
    Just enough of a reactor for L{untilInterrupted}: its shutdown
    triggers.
    """

    def __init__(self) -> None:
        self.triggers: dict[object, object] = {}

    def addSystemEventTrigger(self, phase, event, function):
        handle = object()
        self.triggers[handle] = function
        return handle

    def removeSystemEventTrigger(self, handle) -> None:
        del self.triggers[handle]


class InterruptTests(SynchronousTestCase):
    """
    Ctrl-C stops the run, which still reports, and the reactor waits for it.
    """

    def test_interrupt(self) -> None:
        """
        The shutdown trigger cancels the run and returns a L{Deferred} that
        fires once the run has returned.
        """
        shutdown = FakeShutdown()
        echo = defer.Deferred()
        afterwards = []

        async def run() -> int:
            try:
                await echo
            except defer.CancelledError:
                afterwards.append("summary")
            return 1

        result = defer.Deferred.fromCoroutine(untilInterrupted(shutdown, run()))
        (trigger,) = shutdown.triggers.values()
        stopping = trigger()
        self.assertEqual(afterwards, ["summary"])
        self.assertIsNone(self.successResultOf(stopping))
        self.assertEqual(self.successResultOf(result), 1)

    def test_notInterrupted(self) -> None:
        """
        A run that ends by itself removes its trigger.
        """
        shutdown = FakeShutdown()

        async def run() -> int:
            return 0

        result = defer.Deferred.fromCoroutine(untilInterrupted(shutdown, run()))
        self.assertEqual(self.successResultOf(result), 0)
        self.assertEqual(shutdown.triggers, {})
