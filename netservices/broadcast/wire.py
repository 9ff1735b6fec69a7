# -*- test-case-name: tests.broadcast.test_wire -*-
"""
The broadcast peers' message format, and its total parser.

Every datagram starts with a fixed 36-byte header, in network byte order::

    magic     4  b"NSBC"
    version   1  1
    kind      1  0 hello, 1 bye, 2 data, 3 here (a unicast answer to hello)
    flags     1  bit 0: a 32-byte HMAC-SHA256 tag ends the datagram
    reserved  1  0
    max-age   4  seconds the sender may be considered present without
                 hearing from it again
    peer      8  random id of the sending peer (new for every run)
    sequence  8  0, 1, 2... per peer, over all kinds
    sent      8  send time, nanoseconds since the epoch

then the payload (UTF-8 text for data, empty otherwise), then the tag if
flag bit 0 is set: HMAC-SHA256 over everything before it, with the key of
C{--key-file}.

L{parse} never raises anything but L{WireError}, whose C{reason} is a short
token a receiver counts: anything on the network may arrive.
"""

from __future__ import annotations

import struct

import attrs

from netservices._common.authentication import (
    FLAG_HMAC,
    TAG_SIZE,
    SequenceWindow,
    WireError,
    checkTag,
    newId,
    headerFlags,
    readKey,
    seal,
)

MAGIC = b"NSBC"
VERSION = 1

HELLO, BYE, DATA, HERE = 0, 1, 2, 3
KINDS = {HELLO: "hello", BYE: "bye", DATA: "data", HERE: "here"}


HEADER = struct.Struct("!4sBBBxIQQQ")

#: The default cap on a datagram's size, tag included (fits any link's MTU).
DEFAULT_MAX_SIZE = 1200

#: Largest max-age a message may carry (a day).
MAX_AGE_LIMIT = 86400

#: With a key, messages whose send time is further than this from ours (in
#: seconds) are refused as C{stale}: a replay window is per run of a peer,
#: and this bounds replays from earlier runs.
MAX_CLOCK_SKEW = 60.0


@attrs.frozen
class Message:
    """
    One parsed message.

    @ivar maxAge: seconds the sender may be considered present.
    @ivar authenticated: whether a tag was present and checked.
    """

    kind: int
    peer: int
    sequence: int
    sent: int
    maxAge: int
    payload: bytes = b""
    authenticated: bool = False

    @property
    def text(self) -> str:
        """
        The payload as text (checked to be UTF-8 by L{parse}).
        """
        return self.payload.decode("utf-8")


def encode(
    kind: int,
    peer: int,
    sequence: int,
    sent: int,
    maxAge: int,
    payload: bytes = b"",
    key: bytes | None = None,
) -> bytes:
    """
    @return: one datagram.
    """
    header = HEADER.pack(MAGIC, VERSION, kind, headerFlags(key), maxAge, peer, sequence, sent)
    return seal(header + payload, key)


def overhead(key: bytes | None) -> int:
    """
    @return: the bytes a datagram has besides its payload.
    """
    return HEADER.size + (TAG_SIZE if key is not None else 0)


def parse(data: bytes, key: bytes | None = None) -> Message:
    """
    Parse a datagram.  With a C{key}, only datagrams with a valid tag are
    accepted; without, a tag is removed unchecked.

    @raise WireError: for anything else.
    """
    if len(data) < HEADER.size or data[:4] != MAGIC:
        raise WireError("foreign")
    _, version, kind, flags, maxAge, peer, sequence, sent = HEADER.unpack_from(data)
    if version != VERSION or kind not in KINDS or flags & ~FLAG_HMAC:
        raise WireError("version")
    body, authenticated = checkTag(data, flags, key, HEADER.size)
    payload = body[HEADER.size :]
    if kind != DATA and payload:
        raise WireError("version")
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("bad-text")
    return Message(kind, peer, sequence, sent, min(maxAge, MAX_AGE_LIMIT), payload, authenticated)


class Codec:
    """
    Encodes and parses with a key (or none); when keyed, refuses replays
    (a L{SequenceWindow} per peer) and messages sent more than
    L{MAX_CLOCK_SKEW} seconds from now.
    """

    def __init__(self, key: bytes | None = None, maxStreams: int = 4096) -> None:
        self.key = key
        self.window = SequenceWindow(maxStreams=maxStreams) if key is not None else None

    def encode(self, *args, **kwargs) -> bytes:
        """
        L{encode} with this codec's key.
        """
        return encode(*args, key=self.key, **kwargs)

    def parse(self, data: bytes, now: float) -> Message:
        """
        L{parse} with this codec's key, then the time and replay checks.

        @param now: the time, in seconds since the epoch.
        @raise WireError: see L{parse}; C{stale}, C{replayed}.
        """
        message = parse(data, self.key)
        if self.window is not None:
            if abs(message.sent / 1e9 - now) > MAX_CLOCK_SKEW:
                raise WireError("stale")
            if not self.window.acceptSequence(message.peer, message.sequence):
                raise WireError("replayed")
        return message


__all__ = [
    "BYE", "DATA", "HELLO", "HERE", "KINDS", "Codec", "Message", "WireError",
    "encode", "parse", "newId", "readKey", "overhead",
]
