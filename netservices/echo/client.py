# -*- test-case-name: tests.echo.test_client -*-
"""
The clients of tcp-echo and udp-echo: send messages, check that every byte
comes back, time each round trip and sum it all up as ping does.

L{echoTCP} and L{echoUDP} send the messages one at a time: the next one
leaves when the echo of the last is in (or, for UDP, given up) and
C{interval} seconds have passed since the last one left.  Each echo is
reported as it comes (a dictionary, see L{describeEvent}) and the run
returns an L{EchoStatistics}.

UDP
===

Each datagram is a 20-byte header, then the message::

    offset  size  field
         0     4  magic, b"NSE1"
         4     8  session: random, new for each run
        12     4  sequence number of the message, from 1 (big-endian)
        16     4  try: 0 for the first send of the message, 1 for the
                  first retry, ... (big-endian)
        20     -  the message, at most 65,487 bytes (65,507 in all)

An echo counts only if its magic and session are ours and it names a
message that was sent; anything else (an echo from an earlier run, stray
datagrams) is counted as I{ignored}.  The try says which send an echo
answers, so its round trip is timed from that send; a second echo of the
same send is a I{duplicate}.  A message is retried when no echo comes within
C{timeout} seconds, C{retries} times, then given up (I{lost}).  The first
echo of a message settles it: I{received} if its bytes are those sent,
I{corrupted} if not.  Echoes of a message already settled (a retry's echo
after an earlier try's, or any echo after the message was given up) are
I{late}; they are checked for corruption but never make a message
received twice, and a lost message stays lost.

Generated messages follow a pattern drawn from a fixed seed and the
sequence number (L{patternMessage}), so that any changed byte, and an echo
of one message passed off as another's, shows.

TCP
===

The echo is a byte stream: after sending a message the client reads until
as many bytes as it sent have come back and compares them, byte by byte,
as they arrive (nothing but the message itself is kept).  Bytes beyond
what was sent, arriving with a message or between messages, put the
stream out of step: the message they arrive with, or the next one, counts
as corrupted.  No echo within C{timeout} seconds ends the run, since the
stream would stay out of step.  TCP has no duplicates and no retries.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import socket
import struct
from array import array
from typing import Callable, Iterable, Iterator

from twisted.internet import defer, error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IHandshakeListener, IReadDescriptor
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.task import deferLater
from zope.interface import implementer

from netservices._common.addresses import joinHostPort
from netservices._common.client import (
    ClientError,
    connectStream,
    connectionFailure,
    resolveDatagramTarget,
)
from netservices._common.eager import setNoDelay

MAGIC = b"NSE1"

#: magic, session, sequence number, try.
HEADER = struct.Struct("!4s8sII")

#: The largest UDP payload over IPv4 (65,535 less the IP and UDP headers).
MAX_DATAGRAM = 65_507

#: The largest message that fits in one datagram with the header.
MAX_UDP_MESSAGE = MAX_DATAGRAM - HEADER.size

#: The largest TCP message the command sends; the client keeps one message
#: in memory at a time.
MAX_TCP_MESSAGE = 16 * 1024 * 1024

#: The tries of a message are remembered as the bits of one 64-bit word.
MAX_TRIES = 64

DEFAULT_COUNT = 5
DEFAULT_SIZE = 64

#: Seeds the pattern of generated messages ("NSE1").
PATTERN_SEED = 0x4E534531

#: What reading standard input asks of it at a time.
READ_SIZE = 65536

#: Receives each event of a run (see L{describeEvent}).
Reporter = Callable[[dict], object]


class EchoError(ClientError):
    """
    An echo run failed; the message says why, in one line.

    @ivar statistics: what was measured before the failure, if the run had
        started.
    """

    def __init__(self, message: str, statistics: EchoStatistics | None = None) -> None:
        super().__init__(message)
        self.statistics = statistics


def encodeDatagram(session: bytes, seq: int, attempt: int, message: bytes) -> bytes:
    """
    @param session: the 8 bytes of this run.
    @param attempt: the try, from 0.
    @return: the datagram carrying try C{attempt} of message C{seq}.
    """
    return HEADER.pack(MAGIC, session, seq, attempt) + message


def decodeDatagram(data: bytes, session: bytes) -> tuple[int, int, bytes]:
    """
    @return: the sequence number, try and message of a datagram of this run.
    @raise ValueError: if C{data} is too short, or its magic or session are
        not ours.
    """
    if len(data) < HEADER.size:
        raise ValueError(f"{len(data)} bytes: shorter than the header")
    magic, theirs, seq, attempt = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError("not an echo of ours")
    if theirs != session:
        raise ValueError("from another session")
    return seq, attempt, data[HEADER.size :]


def patternMessage(seq: int, size: int) -> bytes:
    """
    @return: the generated message C{seq}: C{size} bytes, the same in every
        run, different for each C{seq}.
    """
    return random.Random(PATTERN_SEED * 2**32 + seq).randbytes(size)


def generatedMessages(count: int, size: int) -> Iterator[bytes]:
    """
    @return: the messages of C{--count} and C{--size}, made as they are sent.
    """
    return (patternMessage(seq, size) for seq in range(1, count + 1))


_PENDING, _RECEIVED, _CORRUPTED, _LOST = range(4)


class EchoStatistics:
    """
    What became of the messages of one run, told what was sent and what
    came back; no I/O, no clock.

    @ivar sent: messages sent (not counting retries).
    @ivar received: messages whose first echo was intact.
    @ivar duplicated: echoes of a send that had already been echoed.
    @ivar corrupted: echoes whose bytes differ from what was sent.
    @ivar late: echoes of a message already received, corrupted or lost.
    @ivar retries: tries after the first, over all messages.
    @ivar ignored: datagrams that were no echo of this run.
    """

    def __init__(self) -> None:
        self.sent = self.received = self.duplicated = self.corrupted = 0
        self.late = self.retries = self.ignored = 0
        # Messages whose first echo was corrupted: neither received nor lost.
        self._spoilt = 0
        # Per message, from sequence number 1 (index 0 unused): how it
        # ended, and the tries that were echoed, one bit each.  A few bytes
        # per message, so that a copy arriving any time later is sorted
        # right.
        self._outcomes = bytearray(1)
        self._echoedTries = array("Q", [0])
        self._rtts = 0
        self._rttSum = self._rttSquares = 0.0
        self._rttMin = math.inf
        self._rttMax = 0.0

    def messageSent(self) -> int:
        """
        Count a new message as sent.

        @return: its sequence number, from 1.
        """
        self.sent += 1
        self._outcomes.append(_PENDING)
        self._echoedTries.append(0)
        return self.sent

    def retried(self) -> None:
        """
        Count one more try of the message in flight.
        """
        self.retries += 1

    def gaveUp(self, seq: int) -> None:
        """
        Message C{seq} got no echo from any of its tries: it is lost, even
        if an echo comes later.
        """
        if self._outcomes[seq] == _PENDING:
            self._outcomes[seq] = _LOST

    def ignore(self) -> None:
        """
        Count a datagram that is no echo of this run.
        """
        self.ignored += 1

    def echoed(self, seq: int, attempt: int, intact: bool, rtt: float | None) -> str:
        """
        Sort an echo of try C{attempt} of message C{seq}.

        @param intact: whether its bytes are those sent.
        @param rtt: seconds since that try was sent; needed for the first
            echo of a message still in flight.
        @return: C{"received"} or C{"corrupted"} (the echo that settles the
            message), C{"duplicate"}, C{"late"}, or C{"ignored"} (no such
            message or try was sent).
        """
        if not (0 < seq <= self.sent and 0 <= attempt < MAX_TRIES):
            self.ignore()
            return "ignored"
        bit = 1 << attempt
        if self._echoedTries[seq] & bit:
            self.duplicated += 1
            return "duplicate"
        self._echoedTries[seq] |= bit
        if not intact:
            self.corrupted += 1
        if self._outcomes[seq] != _PENDING:
            self.late += 1
            return "late"
        if not intact:
            self._outcomes[seq] = _CORRUPTED
            self._spoilt += 1
            return "corrupted"
        if rtt is None:
            raise ValueError("the first echo of a message needs its round trip")
        self._outcomes[seq] = _RECEIVED
        self.received += 1
        self._rtts += 1
        self._rttSum += rtt
        self._rttSquares += rtt * rtt
        self._rttMin = min(self._rttMin, rtt)
        self._rttMax = max(self._rttMax, rtt)
        return "received"

    @property
    def lost(self) -> int:
        """
        Messages without any echo (given up, or in flight when the run was
        interrupted).
        """
        return self.sent - self.received - self._spoilt

    @property
    def ok(self) -> bool:
        """
        Whether something was sent and everything came back intact, once.
        """
        return (
            self.sent > 0
            and self.received == self.sent
            and self.duplicated == 0
            and self.corrupted == 0
        )

    def rtt(self) -> tuple[float, float, float, float] | None:
        """
        @return: minimum, average, maximum and mean deviation of the round
            trips of received messages, in seconds, as ping computes them
            (the deviation is C{sqrt(mean(rtt²) - mean(rtt)²)}); L{None}
            before any was received.
        """
        if not self._rtts:
            return None
        mean = self._rttSum / self._rtts
        # Rounding can take the difference of nearly equal values below 0.
        mdev = math.sqrt(max(0.0, self._rttSquares / self._rtts - mean * mean))
        return self._rttMin, mean, self._rttMax, mdev

    def asDict(self) -> dict:
        """
        @return: the counts, and the round trips in milliseconds (C{rtt_ms},
            L{None} before any echo was received).
        """
        rtt = self.rtt()
        return {
            "sent": self.sent,
            "received": self.received,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "corrupted": self.corrupted,
            "late": self.late,
            "retries": self.retries,
            "ignored": self.ignored,
            "rtt_ms": None
            if rtt is None
            else dict(zip(("min", "avg", "max", "mdev"), (_ms(t) for t in rtt))),
            "ok": self.ok,
        }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 6)


def summaryEvent(statistics: EchoStatistics, transport: str, target: str) -> dict:
    """
    @param target: C{HOST:PORT} as the user gave it.
    @return: the last event of a run: its L{EchoStatistics} as a dictionary.
    """
    return {"type": "summary", "transport": transport, "target": target, **statistics.asDict()}


def _echoEvent(
    seq: int,
    size: int,
    source: str,
    rtt: float | None,
    outcome: str,
    intact: bool,
    attempt: int | None = None,
) -> dict:
    event = {
        "type": "echo",
        "seq": seq,
        "bytes": size,
        "from": source,
        "time_ms": None if rtt is None else _ms(rtt),
        "outcome": outcome,
        "intact": intact,
    }
    if attempt is not None:
        event["try"] = attempt + 1
    return event


def formatMilliseconds(ms: float) -> str:
    """
    @return: C{ms} with as many decimals as ping shows: 3 below 1 ms, 2
        below 10, 1 below 100, none above.
    """
    for limit, decimals in ((1, 3), (10, 2), (100, 1)):
        if ms < limit:
            return f"{ms:.{decimals}f}"
    return f"{ms:.0f}"


def _plural(count: int, singular: str, plural: str) -> str:
    return f"{count} {singular if count == 1 else plural}"


def describeEvent(event: dict) -> str:
    """
    @param event: an echo (C{type} C{"echo"}: C{seq}, C{bytes}, C{from},
        C{time_ms}, C{outcome}, C{intact} and, for UDP, C{try} from 1) or a
        message given up (C{"lost"}: C{seq}, C{bytes}, C{from}, C{tries}).
    @return: the event as one line, as ping shows it.
    """
    if event["type"] == "lost":
        return (
            f"no echo of seq={event['seq']} from {event['from']}"
            f" after {_plural(event['tries'], 'try', 'tries')}"
        )
    line = f"{event['bytes']} bytes from {event['from']}: seq={event['seq']}"
    if event.get("try", 1) > 1:
        line += f" try={event['try']}"
    if event["time_ms"] is not None:
        line += f" time={formatMilliseconds(event['time_ms'])} ms"
    marks = []
    if event["outcome"] == "duplicate":
        marks.append("DUP!")
    elif event["outcome"] == "late":
        marks.append("late")
    if not event["intact"]:
        marks.append("corrupted")
    if marks:
        line += f" ({', '.join(marks)})"
    return line


def describeSummary(summary: dict) -> str:
    """
    @param summary: a L{summaryEvent}.
    @return: the summary as ping shows its own: a title, the counts and the
        round trips (lines separated by C{\\n}).
    """
    counts = (
        f"{summary['sent']} sent, {summary['received']} received,"
        f" {summary['lost']} lost, {summary['duplicated']} duplicated,"
        f" {summary['corrupted']} corrupted"
    )
    if summary["transport"] == "udp":
        counts += f", {_plural(summary['retries'], 'retry', 'retries')}"
    for name in ("late", "ignored"):
        if summary[name]:
            counts += f", {summary[name]} {name}"
    lines = [f"--- {summary['target']} {summary['transport']} echo statistics ---", counts]
    rtt = summary["rtt_ms"]
    if rtt is not None:
        values = "/".join(f"{rtt[k]:.3f}" for k in ("min", "avg", "max", "mdev"))
        lines.append(f"rtt min/avg/max/mdev = {values} ms")
    return "\n".join(lines)


@implementer(IReadDescriptor)
class LineReader:
    """
    The lines of a file descriptor (standard input), with their line
    endings, as an asynchronous iterator.

    The reactor watches the descriptor, but only while a line is wanted and
    not yet read, so at most one line and one read are held.  The
    descriptor is left blocking: standard input and output often share one
    open terminal, and making it non-blocking (as
    L{twisted.internet.stdio} does) would make C{print} fail.  A descriptor
    the reactor found readable has data or an end, so reads do not block.
    """

    def __init__(self, reactor, fd: int, maxLength: int, name: str = "standard input") -> None:
        """
        @param maxLength: the longest line accepted, in bytes, line ending
            included.
        """
        self._reactor = reactor
        self._fd = fd
        self._maxLength = maxLength
        self._name = name
        self._buffer = bytearray()
        # How much of the buffer is known to hold no line ending.
        self._scanned = 0
        self._ended = False
        self._lines = 0
        self._waiting: Deferred | None = None

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "LineReader"

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> bytes:
        line = await self._nextLine()
        if line is None:
            raise StopAsyncIteration
        return line

    def _nextLine(self) -> Deferred:
        self._waiting = waiting = Deferred(self._cancel)
        self._deliver()
        if not waiting.called:
            self._reactor.addReader(self)
        return waiting

    def _cancel(self, waiting: Deferred) -> None:
        self._waiting = None
        self._reactor.removeReader(self)

    def _deliver(self) -> None:
        newline = self._buffer.find(b"\n", self._scanned, self._maxLength)
        if newline >= 0:
            line = bytes(self._buffer[: newline + 1])
            del self._buffer[: newline + 1]
            self._scanned = 0
            self._fire(line)
        elif len(self._buffer) > self._maxLength:
            self._fire(
                EchoError(
                    f"line {self._lines + 1} of {self._name} is longer than"
                    f" {self._maxLength:,} bytes"
                )
            )
        elif self._ended:
            line = bytes(self._buffer)
            self._buffer.clear()
            self._fire(line or None)
        else:
            self._scanned = len(self._buffer)

    def _fire(self, result) -> None:
        waiting, self._waiting = self._waiting, None
        self._reactor.removeReader(self)
        if isinstance(result, Exception):
            waiting.errback(result)
        else:
            self._lines += result is not None
            waiting.callback(result)

    def doRead(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            # Someone else made it non-blocking, and someone else read it.
            return
        except OSError as e:
            self._fire(EchoError(f"cannot read {self._name}: {e.strerror}"))
            return
        if data:
            self._buffer += data
        else:
            self._ended = True
        self._deliver()

    def connectionLost(self, reason) -> None:
        # The reactor is shutting down (the run was interrupted already).
        self._ended = True
        if self._waiting is not None:
            self._deliver()


class _Messages:
    """
    An iterable of messages as an asynchronous iterator, so that the clients
    take either.
    """

    def __init__(self, messages: Iterable[bytes]) -> None:
        self._iterator = iter(messages)

    def __aiter__(self) -> _Messages:
        return self

    async def __anext__(self) -> bytes:
        try:
            return next(self._iterator)
        except StopIteration:
            raise StopAsyncIteration


async def _echoEach(
    reactor, messages, interval: float, statistics: EchoStatistics, echoOne
) -> None:
    """
    Call C{echoOne(seq, message)} for each message, one at a time, each
    starting C{interval} seconds after the one before started (or at once,
    if it took longer).

    Cancelling (Ctrl-C) ends the run quietly: what was measured is its
    result, and a message in flight counts as lost.

    @raise EchoError: with the statistics, for any L{ClientError} (from
        C{echoOne} or from reading the messages).
    """
    if not hasattr(messages, "__aiter__"):
        messages = _Messages(messages)
    nextSend = None
    try:
        async for message in messages:
            if nextSend is not None and nextSend > reactor.seconds():
                await deferLater(reactor, nextSend - reactor.seconds())
            nextSend = reactor.seconds() + interval
            await echoOne(statistics.messageSent(), message)
    except CancelledError:
        pass
    except ClientError as e:
        raise EchoError(str(e), statistics) from e


def _ignore(event: dict) -> None:
    pass


@implementer(IHandshakeListener)
class _EchoStream(Protocol):
    """
    Sends one message at a time and compares what comes back with it.

    @ivar ready: fires once messages can be sent: connected, and with TLS,
        once the handshake (with the certificate check) is done, so that the
        first round trip does not include it.
    """

    def __init__(self, tls: bool) -> None:
        self._tls = tls
        self.ready: Deferred = Deferred()
        self._usable = False
        self.lostReason = None
        self._whenLost: list[Deferred] = []
        self._expected = b""
        self._offset = 0
        self._intact = True
        self._outOfStep = False
        self._waiting: Deferred | None = None

    def connectionMade(self) -> None:
        setNoDelay(self.transport)
        if not self._tls:
            self._becomeReady()

    def handshakeCompleted(self) -> None:
        # A certificate that fails verification aborts the connection from
        # inside the handshake, which still reports completion; the loss,
        # with the reason, follows.
        if not self.transport.disconnecting:
            self._becomeReady()

    def _becomeReady(self) -> None:
        self._usable = True
        self.ready.callback(None)

    def send(self, message: bytes) -> Deferred:
        """
        Send C{message}.

        @return: a L{Deferred} firing with whether exactly C{message} came
            back, or failing with the reason the connection was lost.
        """
        if self.lostReason is not None:
            return defer.fail(self.lostReason)
        intact, self._outOfStep = not self._outOfStep, False
        if not message:
            return defer.succeed(intact)
        self._expected, self._offset, self._intact = message, 0, intact
        self._waiting = Deferred()
        self.transport.write(message)
        return self._waiting

    def dataReceived(self, data: bytes) -> None:
        if self._waiting is None:
            self._outOfStep = True
            return
        expected = self._expected
        part = data[: len(expected) - self._offset]
        if len(part) < len(data) or part != expected[self._offset : self._offset + len(part)]:
            self._intact = False
        self._offset += len(part)
        if self._offset == len(expected):
            waiting, self._waiting, self._expected = self._waiting, None, b""
            waiting.callback(self._intact)

    def connectionLost(self, reason) -> None:
        self.lostReason = reason
        if not self.ready.called:
            self.ready.errback(reason)
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.errback(reason)
        for whenLost in self._whenLost:
            whenLost.callback(None)
        self._whenLost = []

    async def hangUp(self, clock, timeout: float) -> None:
        """
        Close the connection: cleanly, but aborted if it is not closed
        within C{timeout} seconds (a TLS peer that does not answer our
        close), and at once if it never became ready (a TLS close waits for
        the handshake to end, which may never happen).
        """
        if self.transport is None or self.lostReason is not None:
            return
        whenLost = Deferred()
        self._whenLost.append(whenLost)
        if not self._usable:
            self.transport.abortConnection()
            await whenLost
            return
        self.transport.loseConnection()
        abort = clock.callLater(timeout, self.transport.abortConnection)
        try:
            await whenLost
        finally:
            if abort.active():
                abort.cancel()


async def echoTCP(
    reactor,
    host: str,
    port: int,
    messages,
    *,
    timeout: float = 5.0,
    interval: float = 1.0,
    tls: bool = False,
    caFile: str | None = None,
    serverName: str | None = None,
    report: Reporter = _ignore,
) -> EchoStatistics:
    """
    Send C{messages} over one connection to a tcp-echo server (see the
    module's documentation).

    @param messages: an iterable or asynchronous iterable of L{bytes}.
    @param timeout: seconds to connect (with TLS, to finish the handshake
        too), and to wait for each echo.
    @param interval: seconds from one send to the next.
    @param serverName: the name to verify the certificate against; C{host}
        by default.
    @param report: called with each echo's event (see L{describeEvent}).
    @return: the statistics of the run, also when it was cancelled.
    @raise ClientError: if the connection fails; L{EchoError}, with the
        statistics, if it fails once messages were sent.
    """
    where = joinHostPort(host, port)
    statistics = EchoStatistics()
    stream = _EchoStream(tls)
    try:
        try:
            await connectStream(
                reactor, host, port, timeout, stream, stream.ready,
                tls, caFile, serverName, EchoError,
            )
        except CancelledError:
            return statistics
        peer = stream.transport.getPeer()
        source = joinHostPort(peer.host, peer.port)

        async def echoOne(seq: int, message: bytes) -> None:
            sentAt = reactor.seconds()
            echo = stream.send(message).addTimeout(timeout, reactor)
            try:
                intact = await echo
            except defer.TimeoutError:
                raise EchoError(f"no echo of seq={seq} from {where} within {timeout:g} s")
            except CancelledError:
                raise
            except (error.ConnectionDone, error.ConnectionLost):
                raise EchoError(f"{where} closed the connection")
            except Exception as e:
                raise EchoError(connectionFailure(e, host, where))
            rtt = reactor.seconds() - sentAt
            outcome = statistics.echoed(seq, 0, intact, rtt)
            report(_echoEvent(seq, len(message), source, rtt, outcome, intact))

        await _echoEach(reactor, messages, interval, statistics, echoOne)
        return statistics
    finally:
        await stream.hangUp(reactor, timeout)


class _EchoDatagrams(DatagramProtocol):
    """
    The UDP port of one run: sends the tries of the message in flight and
    sorts every datagram that comes back into the statistics.

    @ivar refused: an ICMP error said the server's port is closed.
    """

    noisy = False

    def __init__(
        self,
        clock,
        session: bytes,
        statistics: EchoStatistics,
        report: Reporter,
        source: str,
    ) -> None:
        self._clock = clock
        self._session = session
        self._statistics = statistics
        self._report = report
        self._source = source
        self.refused = False
        self.closing = False
        self._seq = 0
        self._message = b""
        self._sentAt: list[float] = []
        self._waiting: Deferred | None = None
        # 8 bytes of hash per message sent, to check the echoes of messages
        # no longer in flight without keeping them.
        self._digests = bytearray()

    def start(self, seq: int, message: bytes) -> None:
        """
        Make C{message} the one in flight, as message C{seq}.
        """
        self._seq, self._message, self._sentAt = seq, message, []
        self._digests += _digest(message)

    def sendTry(self) -> Deferred:
        """
        Send the next try of the message in flight.

        @return: a L{Deferred} firing when the message is settled (received
            or corrupted), or failing with L{error.ConnectionRefusedError}.
        """
        attempt = len(self._sentAt)
        self._waiting = Deferred()
        self._sentAt.append(self._clock.seconds())
        # A refusal found while writing fails the Deferred at once.
        self.transport.write(encodeDatagram(self._session, self._seq, attempt, self._message))
        return self._waiting

    def datagramReceived(self, data: bytes, addr) -> None:
        if self.closing:
            return
        try:
            seq, attempt, message = decodeDatagram(data, self._session)
        except ValueError:
            self._statistics.ignore()
            return
        rtt = None
        if seq == self._seq:
            if attempt >= len(self._sentAt):
                # A try we never sent.
                self._statistics.ignore()
                return
            intact = message == self._message
            rtt = self._clock.seconds() - self._sentAt[attempt]
        else:
            digest = self._digests[(seq - 1) * 8 : seq * 8]
            intact = 0 < seq < self._seq and _digest(message) == digest
        outcome = self._statistics.echoed(seq, attempt, intact, rtt)
        if outcome == "ignored":
            return
        self._report(_echoEvent(seq, len(message), self._source, rtt, outcome, intact, attempt))
        if outcome in ("received", "corrupted") and seq == self._seq:
            self._fire("callback", None)

    def connectionRefused(self) -> None:
        self._refuse()

    def stopProtocol(self) -> None:
        # Twisted's epoll reactor closes a connected UDP port when an ICMP
        # error arrives (EPOLLERR) instead of calling connectionRefused.
        if not self.closing:
            self._refuse()

    def _refuse(self) -> None:
        self.refused = True
        self._fire("errback", error.ConnectionRefusedError())

    def _fire(self, method: str, result) -> None:
        # Synchronously, even from inside the port's doRead: the run may
        # then stop the port, which Twisted closes only later.
        waiting, self._waiting = self._waiting, None
        if waiting is not None and not waiting.called:
            getattr(waiting, method)(result)


def _digest(message: bytes) -> bytes:
    return hashlib.blake2b(message, digest_size=8).digest()


async def echoUDP(
    reactor,
    host: str,
    port: int,
    messages,
    *,
    timeout: float = 1.0,
    retries: int = 2,
    interval: float = 1.0,
    report: Reporter = _ignore,
    session: bytes | None = None,
) -> EchoStatistics:
    """
    Send C{messages} to a udp-echo server from one connected UDP port (only
    the server's datagrams reach it, and ICMP errors are reported), with the
    header of the module's documentation.

    @param messages: an iterable or asynchronous iterable of L{bytes}, each
        at most L{MAX_UDP_MESSAGE} bytes.
    @param timeout: seconds to wait for the echo of each try.
    @param retries: tries after the first, for each message; less than
        L{MAX_TRIES}.
    @param interval: seconds from one message's first send to the next's.
    @param report: called with each echo's event and each message given up
        (see L{describeEvent}).
    @param session: the 8 bytes of this run; random by default.
    @return: the statistics of the run, also when it was cancelled.
    @raise ClientError: if the name does not resolve; L{EchoError}, with the
        statistics, for an unreachable port and other failures.
    """
    if not 0 <= retries < MAX_TRIES:
        raise ValueError(f"retries must be from 0 to {MAX_TRIES - 1}")
    family, ip = await resolveDatagramTarget(host, port)
    where = joinHostPort(host, port)
    source = joinHostPort(ip, port)
    statistics = EchoStatistics()
    echoes = _EchoDatagrams(reactor, session or os.urandom(8), statistics, report, source)
    udpPort = reactor.listenUDP(
        0,
        echoes,
        interface="::" if family == socket.AF_INET6 else "",
        # Twisted reads 8,192 bytes by default and truncates the rest.
        maxPacketSize=65535,
    )
    unreachable = f"{where}: port unreachable (is the server running?)"

    async def echoOne(seq: int, message: bytes) -> None:
        if len(message) > MAX_UDP_MESSAGE:
            raise EchoError(
                f"a message of {len(message):,} bytes does not fit in one datagram"
                f" (at most {MAX_UDP_MESSAGE:,} bytes)"
            )
        echoes.start(seq, message)
        for attempt in range(retries + 1):
            if echoes.refused or not udpPort.connected:
                raise EchoError(unreachable)
            if attempt:
                statistics.retried()
            try:
                await echoes.sendTry().addTimeout(timeout, reactor)
                return
            except defer.TimeoutError:
                continue
            except error.ConnectionRefusedError:
                raise EchoError(unreachable)
            except OSError as e:
                raise EchoError(f"{where}: {e.strerror or e}")
        statistics.gaveUp(seq)
        lost = {"type": "lost", "seq": seq, "bytes": len(message), "from": source}
        report({**lost, "tries": retries + 1})

    try:
        try:
            udpPort.connect(ip, port)
        except OSError as e:
            raise EchoError(f"{where}: {e.strerror or e}")
        await _echoEach(reactor, messages, interval, statistics, echoOne)
        return statistics
    finally:
        echoes.closing = True
        if udpPort.connected:
            await defer.maybeDeferred(udpPort.stopListening)
