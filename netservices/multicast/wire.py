# -*- test-case-name: tests.multicast.test_wire -*-
"""
The multicast tools' datagram format, and its total parser.

Every datagram starts with a fixed 40-byte header, in network byte order::

    magic     4  b"NSMC"
    version   1  1
    kind      1  0 data, 1 final, 2 probe, 3 reply
    flags     1  bit 0: a 32-byte HMAC-SHA256 tag ends the datagram
    reserved  1  0
    sender    8  random id of the sending process
    session   8  random id of this run
    sequence  8  0, 1, 2... (final: the number of data datagrams sent;
                 probe and reply: the probe's number)
    sent      8  send time, nanoseconds since the epoch (reply: the probe's)

then any payload, then the tag if flag bit 0 is set: HMAC-SHA256 over
everything before it, with the key of C{--key-file}.

L{parse} never raises anything but L{WireError}, whose C{reason} is a
short token a receiver counts: anything on the network may arrive.
"""

from __future__ import annotations

import struct

import attrs

from netservices._common.authentication import (
    TAG_SIZE,
    SequenceWindow,
    WireError,
    checkTag,
    newId,
    headerFlags,
    readKey,
    seal,
)

#: Names the tools use through this module.
__all__ = ["WireError", "newId", "readKey", "TAG_SIZE", "HEADER", "Codec", "encode", "parse"]

MAGIC = b"NSMC"
VERSION = 1

DATA, FINAL, PROBE, REPLY = 0, 1, 2, 3
KINDS = {DATA: "data", FINAL: "final", PROBE: "probe", REPLY: "reply"}


HEADER = struct.Struct("!4sBBBxQQQQ")

#: The longest UDP payload over IPv4.
MAX_DATAGRAM = 65507


@attrs.frozen
class Message:
    """
    One parsed datagram.

    @ivar authenticated: whether a tag was present and checked.
    """

    kind: int
    sender: int
    session: int
    sequence: int
    sent: int
    payload: bytes = b""
    authenticated: bool = False


def encode(
    kind: int,
    sender: int,
    session: int,
    sequence: int,
    sent: int,
    payload: bytes = b"",
    key: bytes | None = None,
    size: int = 0,
) -> bytes:
    """
    @param size: pad the payload with zeros so the whole datagram has at
        least this many bytes.
    @return: one datagram.
    """
    header = HEADER.pack(MAGIC, VERSION, kind, headerFlags(key), sender, session, sequence, sent)
    missing = size - len(header) - len(payload) - (TAG_SIZE if key is not None else 0)
    if missing > 0:
        payload += b"\0" * missing
    return seal(header + payload, key)


def parse(data: bytes, key: bytes | None = None) -> Message:
    """
    Parse a datagram.  With a C{key}, only datagrams with a valid tag are
    accepted; without, a tag is removed unchecked.

    @raise WireError: for anything else.
    """
    if len(data) < HEADER.size or data[:4] != MAGIC:
        raise WireError("foreign")
    magic, version, kind, flags, sender, session, sequence, sent = HEADER.unpack_from(data)
    if version != VERSION or kind not in KINDS:
        raise WireError("version")
    body, authenticated = checkTag(data, flags, key, HEADER.size)
    return Message(kind, sender, session, sequence, sent, body[HEADER.size :], authenticated)


class ReplayWindow(SequenceWindow):
    """
    Refuses authenticated datagrams seen before: a L{SequenceWindow} per
    (sender, session, kind), as IPsec does.  Older ones are refused too.
    """

    def accept(self, message: Message) -> bool:
        """
        @return: whether C{message} is new; it is then recorded.
        """
        return self.acceptSequence(
            (message.sender, message.session, message.kind), message.sequence
        )


class Codec:
    """
    Parses with a key (or none) and, when keyed, a L{ReplayWindow}.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key
        self.window = ReplayWindow() if key is not None else None

    def encode(self, *args, **kwargs) -> bytes:
        """
        L{encode} with this codec's key.
        """
        return encode(*args, key=self.key, **kwargs)

    def parse(self, data: bytes) -> Message:
        """
        L{parse} with this codec's key, then the replay check.

        @raise WireError: see L{parse}; C{replayed}.
        """
        message = parse(data, self.key)
        # Final records are sent several times and only ever repeat the
        # same count: copies are harmless, so they are not replay-checked.
        if (
            self.window is not None
            and message.kind != FINAL
            and not self.window.accept(message)
        ):
            raise WireError("replayed")
        return message
