"""
Tests for L{netservices.threaded.wire}.
"""

from __future__ import annotations

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from netservices.threaded.wire import (
    BUSY,
    ERROR,
    NO_ID,
    OK,
    TIMEOUT,
    LineSplitter,
    Reply,
    Request,
    WireError,
    formatReply,
    formatRequest,
    parseReply,
    parseRequest,
    quoteArgument,
    quoteText,
    unquote,
)


class RequestTests(SynchronousTestCase):
    """
    Requests: C{ID HANDLER [ARG ...]}.
    """

    def test_parse(self) -> None:
        """
        The id, the handler and the arguments are read; a CR before the LF
        is ignored.
        """
        self.assertEqual(
            parseRequest(b"a.1 sleep 0.5\r"), Request("a.1", "sleep", ("0.5",))
        )
        self.assertEqual(parseRequest(b"7 stats"), Request("7", "stats", ()))

    def test_escapes(self) -> None:
        """
        Percent-escapes in arguments are decoded as UTF-8: spaces, newlines,
        C{%} and any character can be sent.
        """
        request = parseRequest(b"1 echo a%20b c%0Ad 100%25 %C3%A9")
        self.assertEqual(request.args, ("a b", "c\nd", "100%", "\u00e9"))

    def test_roundTrip(self) -> None:
        """
        L{formatRequest} writes what L{parseRequest} reads back.
        """
        request = Request("x", "echo", ("a b", "", "%", "\t\n", "\u00e9\U0001f600"))
        self.assertEqual(parseRequest(formatRequest(request)[:-1]), request)

    def test_badRequests(self) -> None:
        """
        Lines that are not requests raise L{WireError} with a message, and
        the request's id when it could be read (else L{NO_ID}).
        """
        cases = [
            (b"", NO_ID),
            (b"   ", NO_ID),
            (b"bad*id echo", NO_ID),
            (b"x" * 65 + b" echo", NO_ID),
            (b"\xff\xfe echo", NO_ID),
            (b"1", "1"),
            (b"1 ", "1"),
            (b"1 9handler", "1"),
            (b"1 echo %zz", "1"),
            (b"1 echo %ff", "1"),
            (b"1 echo 50%", "1"),
        ]
        for line, id in cases:
            with self.assertRaises(WireError, msg=line) as caught:
                parseRequest(line)
            self.assertEqual(caught.exception.id, id, line)
            self.assertTrue(str(caught.exception), line)

    @settings(max_examples=100, derandomize=True)
    @given(st.binary(max_size=200))
    def test_total(self, line: bytes) -> None:
        """
        Whatever the bytes, L{parseRequest} returns a request or raises
        L{WireError}, nothing else.
        """
        try:
            parseRequest(line)
        except WireError:
            pass

    @settings(max_examples=100, derandomize=True)
    @given(st.lists(st.text(max_size=20), max_size=5))
    def test_anyArguments(self, args: list[str]) -> None:
        """
        Any text arguments (without lone surrogates) survive the trip.
        """
        args = [a for a in args if not any(0xD800 <= ord(c) <= 0xDFFF for c in a)]
        request = Request("1", "echo", tuple(args))
        self.assertEqual(parseRequest(formatRequest(request)[:-1]), request)


class ReplyTests(SynchronousTestCase):
    """
    Replies: C{ID OK TEXT}, C{ID ERROR REASON [DETAIL]}, C{ID BUSY REASON},
    C{ID TIMEOUT}.
    """

    def test_format(self) -> None:
        """
        Each kind is one line; text keeps its spaces and escapes C{%} and
        control characters.
        """
        self.assertEqual(formatReply(Reply("1", OK, "a b%\n")), b"1 OK a b%25%0A\n")
        self.assertEqual(formatReply(Reply("2", OK, "")), b"2 OK\n")
        self.assertEqual(
            formatReply(Reply("3", ERROR, "unknown-handler x")), b"3 ERROR unknown-handler x\n"
        )
        self.assertEqual(formatReply(Reply("4", BUSY, "queue-full")), b"4 BUSY queue-full\n")
        self.assertEqual(formatReply(Reply("5", TIMEOUT)), b"5 TIMEOUT\n")
        self.assertEqual(formatReply(Reply(NO_ID, ERROR, "bad-request x")), b"* ERROR bad-request x\n")

    def test_roundTrip(self) -> None:
        """
        L{parseReply} reads what L{formatReply} writes, and knows the
        reason of ERROR and BUSY replies.
        """
        for reply in [
            Reply("1", OK, "slept 0.5"),
            Reply("2", ERROR, "failed ValueError: x"),
            Reply("3", BUSY, "client-limit"),
            Reply("4", TIMEOUT),
            Reply(NO_ID, ERROR, "line-too-long"),
        ]:
            parsed = parseReply(formatReply(reply)[:-1])
            self.assertEqual(parsed, reply)
        self.assertEqual(parseReply(b"2 ERROR failed ValueError: x").reason, "failed")
        self.assertEqual(parseReply(b"1 OK x y").reason, "")

    def test_badReplies(self) -> None:
        """
        Lines that are not replies raise L{WireError}.
        """
        for line in [b"", b"1", b"1 MAYBE", b"bad*id OK", b"1 OK %zz", b"\xff OK"]:
            self.assertRaises(WireError, parseReply, line)

    def test_quoting(self) -> None:
        """
        Arguments escape spaces, text does not; both escape C{%} and control
        characters, and L{unquote} undoes both.
        """
        self.assertEqual(quoteArgument("a b%\x7f"), "a%20b%25%7F")
        self.assertEqual(quoteText("a b%\r"), "a b%25%0D")
        self.assertEqual(unquote("a%20b%25%7F"), "a b%\x7f")


class LineSplitterTests(SynchronousTestCase):
    """
    L{LineSplitter} splits a stream into bounded lines.
    """

    def test_split(self) -> None:
        """
        Lines come out whole however the bytes are cut, without their LF.
        """
        stream = b"1 echo a\n2 echo b\r\n\n3 stats\n"
        for cut in range(len(stream) + 1):
            splitter = LineSplitter(100)
            lines = list(splitter.feed(stream[:cut])) + list(splitter.feed(stream[cut:]))
            self.assertEqual(lines, [b"1 echo a", b"2 echo b\r", b"", b"3 stats"], cut)

    def test_exactLimit(self) -> None:
        """
        A line of exactly C{maxLength} bytes (with or without CR) passes; one
        byte more is too long.
        """
        splitter = LineSplitter(10)
        self.assertEqual(list(splitter.feed(b"x" * 10 + b"\n")), [b"x" * 10])
        self.assertEqual(list(splitter.feed(b"x" * 10 + b"\r\n")), [b"x" * 10 + b"\r"])
        self.assertEqual(list(splitter.feed(b"x" * 11 + b"\n")), [LineSplitter.TOO_LONG])

    def test_tooLongReportedOnceAndDropped(self) -> None:
        """
        A long line is reported once, as soon as it is too long, its bytes
        are not kept, and the line after it is read normally.
        """
        splitter = LineSplitter(10)
        self.assertEqual(list(splitter.feed(b"y" * 20)), [LineSplitter.TOO_LONG])
        self.assertEqual(list(splitter.feed(b"y" * 10000)), [])
        self.assertEqual(splitter._buffer, b"")
        self.assertEqual(list(splitter.feed(b"yyy\nok\n")), [b"ok"])
