# -*- test-case-name: tests.threaded.test_wire -*-
"""
The line protocol of the threaded service.

Every line is UTF-8 text ended by LF (a CR before it is ignored).  A request::

    ID HANDLER [ARG ...]

C{ID} is 1 to 64 characters out of C{A-Z a-z 0-9 _ . : -}, chosen by the
client; C{HANDLER} is a handler name (a letter or C{_}, then up to 63 of
C{A-Z a-z 0-9 _ . -}); the arguments are separated by single spaces.  A
reply::

    ID OK TEXT
    ID ERROR REASON [DETAIL]
    ID BUSY REASON
    ID TIMEOUT

C{TEXT} and C{DETAIL} run to the end of the line.  In arguments, C{%},
spaces and control characters are written C{%XX} (percent-encoded UTF-8); in
C{TEXT} and C{DETAIL}, C{%} and control characters are (spaces stay as
they are).  C{REASON} is a fixed token (L{REASONS}).  A line that cannot be
parsed far enough to know its id is answered with the id C{*}, which no
request can have.

L{parseRequest} and L{parseReply} are total: they return a value or raise
L{WireError} (a C{ValueError}) with a message fit for the peer, whatever
the bytes.  L{LineSplitter} splits a byte stream into lines of at most
C{maxLength} bytes and reports longer ones once, without keeping them.
"""

from __future__ import annotations

import re
from typing import Iterator
from urllib.parse import unquote_to_bytes

import attrs

#: Reply kinds.
OK, ERROR, BUSY, TIMEOUT = "OK", "ERROR", "BUSY", "TIMEOUT"
KINDS = (OK, ERROR, BUSY, TIMEOUT)

#: The fixed reasons of ERROR and BUSY replies.
REASONS = {
    ERROR: (
        "bad-request",  # the line is not a request
        "line-too-long",  # longer than the server's --max-line
        "unknown-handler",  # no handler of that name
        "bad-arguments",  # the handler does not take these arguments
        "duplicate-id",  # a request with this id is still in flight
        "failed",  # the handler raised an exception (DETAIL: which)
        "result-too-long",  # the handler's result does not fit on a line
    ),
    BUSY: (
        "queue-full",  # every thread busy and --queue requests waiting
        "client-limit",  # this connection has --max-in-flight requests in flight
        "stopping",  # the service is shutting down
    ),
}

#: The id of replies to lines whose id could not be read.
NO_ID = "*"

#: The default longest line, in bytes, without its line ending.
MAX_LINE = 65536

_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}\Z")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class WireError(ValueError):
    """
    A line is not valid; the message says why, in one line.

    @ivar id: the id of the request, if it could be read, else L{NO_ID}.
    """

    def __init__(self, message: str, id: str = NO_ID) -> None:
        super().__init__(message)
        self.id = id


def isValidID(text: str) -> bool:
    """
    @return: whether C{text} can be a request id.
    """
    return bool(_ID.match(text))


def isValidName(text: str) -> bool:
    """
    @return: whether C{text} can be a handler name.
    """
    return bool(_NAME.match(text))


def _quote(text: str, keepSpaces: bool) -> str:
    out = []
    for char in text:
        code = ord(char)
        if char == "%" or code < 0x20 or code == 0x7F or (char == " " and not keepSpaces):
            out.append(f"%{code:02X}")
        else:
            out.append(char)
    return "".join(out)


def quoteArgument(text: str) -> str:
    """
    @return: C{text} as an argument on the wire: C{%}, spaces and control
        characters as C{%XX}.
    """
    return _quote(text, keepSpaces=False)


def quoteText(text: str) -> str:
    """
    @return: C{text} as the rest of a reply line: C{%} and control
        characters as C{%XX}, spaces as they are.
    """
    return _quote(text, keepSpaces=True)


def unquote(text: str) -> str:
    """
    Undo L{quoteArgument} or L{quoteText}.

    @raise WireError: for a C{%} not followed by two hex digits, or escapes
        that are not UTF-8.
    """
    if "%" not in text:
        return text
    if _ESCAPE.search(text):
        raise WireError("a % must be followed by two hex digits")
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("percent-escapes that are not UTF-8")


@attrs.frozen
class Request:
    """
    A parsed request.
    """

    id: str
    handler: str
    args: tuple[str, ...] = ()


@attrs.frozen
class Reply:
    """
    A parsed or to be formatted reply.

    @ivar kind: one of L{KINDS}.
    @ivar text: for OK, the result; for ERROR and BUSY, the reason, and for
        ERROR maybe a space and the detail; empty for TIMEOUT.
    """

    id: str
    kind: str
    text: str = ""

    @property
    def reason(self) -> str:
        """
        The reason of an ERROR or BUSY reply (empty for others).
        """
        return self.text.partition(" ")[0] if self.kind in (ERROR, BUSY) else ""


def _decodeLine(line: bytes) -> str:
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("the line is not UTF-8")


def parseRequest(line: bytes) -> Request:
    """
    Parse a request line (without its LF).

    @raise WireError: if it is not a valid request; its C{id} is the
        request's if that much could be read.
    """
    text = _decodeLine(line)
    words = text.split(" ")
    if not text.strip():
        raise WireError("empty line: expected ID HANDLER [ARG ...]")
    if not isValidID(words[0]):
        raise WireError(
            "expected ID HANDLER [ARG ...]; an ID is 1-64 of A-Z a-z 0-9 _ . : -"
        )
    id = words[0]
    if len(words) < 2 or not words[1]:
        raise WireError("expected ID HANDLER [ARG ...]: no HANDLER", id)
    if not isValidName(words[1]):
        raise WireError(f"{words[1][:64]!r} is not a handler name", id)
    try:
        args = tuple(unquote(word) for word in words[2:])
    except WireError as e:
        raise WireError(str(e), id)
    return Request(id, words[1], args)


def formatRequest(request: Request) -> bytes:
    """
    @return: the line (with its LF) of C{request}.
    """
    words = [request.id, request.handler, *(quoteArgument(a) for a in request.args)]
    return (" ".join(words) + "\n").encode("utf-8")


def formatReply(reply: Reply) -> bytes:
    """
    @return: the line (with its LF) of C{reply}.
    """
    if reply.kind == TIMEOUT or not reply.text:
        return f"{reply.id} {reply.kind}\n".encode("utf-8")
    return f"{reply.id} {reply.kind} {quoteText(reply.text)}\n".encode("utf-8")


def parseReply(line: bytes) -> Reply:
    """
    Parse a reply line (without its LF).

    @raise WireError: if it is not a valid reply.
    """
    text = _decodeLine(line)
    id, _, rest = text.partition(" ")
    if not (id == NO_ID or isValidID(id)):
        raise WireError(f"not a reply: {text[:80]!r}")
    kind, _, body = rest.partition(" ")
    if kind not in KINDS:
        raise WireError(f"not a reply kind: {kind[:20]!r}")
    return Reply(id, kind, unquote(body))


class LineSplitter:
    """
    Splits a byte stream into lines of at most C{maxLength} bytes (not
    counting the LF).  A longer line is reported once, as L{TOO_LONG}, as
    soon as it is known to be too long, and its bytes up to its LF are
    dropped: the memory held is at most about C{maxLength} plus one read.
    """

    #: What L{feed} yields for a line that was too long.
    TOO_LONG = None

    def __init__(self, maxLength: int = MAX_LINE) -> None:
        self.maxLength = maxLength
        self._buffer = b""
        self._discarding = False

    def feed(self, data: bytes) -> Iterator[bytes | None]:
        """
        Add C{data}; yield each complete line (without LF), or L{TOO_LONG}.
        """
        buffer = self._buffer + data
        self._buffer = b""
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            if self._discarding:
                self._discarding = False
            elif end - start > self.maxLength + (buffer[end - 1 : end] == b"\r"):
                yield self.TOO_LONG
            else:
                yield buffer[start:end]
            start = end + 1
        rest = buffer[start:]
        if self._discarding:
            return
        if len(rest) > self.maxLength + 1:
            self._discarding = True
            yield self.TOO_LONG
            return
        self._buffer = rest
