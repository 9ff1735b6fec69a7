# -*- test-case-name: tests._common.test_authentication -*-
"""
What the datagram services share to authenticate their messages: random
sender ids, keys from C{--key-file}, HMAC-SHA256 tags and a sliding
sequence window (as IPsec's) that refuses replays - or, without a key,
suppresses duplicates - with bounded memory.

Used by L{netservices.multicast.wire} and L{netservices.broadcast.wire}.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from typing import Hashable

from twisted.python import usage

#: Bytes of an HMAC-SHA256 tag.
TAG_SIZE = 32

#: How far back (in sequence numbers) a window reaches by default.
REPLAY_WINDOW = 1024


def newId() -> int:
    """
    @return: a random 64-bit id.
    """
    return int.from_bytes(os.urandom(8), "big")


def readKey(path: str) -> bytes:
    """
    @return: the key in file C{path} (surrounding whitespace removed).
    @raise ValueError: if it is shorter than 16 bytes.
    """
    with open(path, "rb") as f:
        key = f.read().strip()
    if len(key) < 16:
        raise ValueError(f"{path}: a key needs at least 16 bytes")
    return key


#: The header flag that says a tag ends the datagram.
FLAG_HMAC = 1


class WireError(Exception):
    """
    A datagram that is not ours, or not acceptable.

    @ivar reason: why, in one word: C{foreign}, C{version},
        C{unauthenticated}, C{forged}, C{replayed}, ...
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def seal(body: bytes, key: bytes | None) -> bytes:
    """
    @return: C{body} followed by its tag under C{key}; C{body} itself when
        there is no key.
    """
    return body if key is None else body + tag(key, body)


def headerFlags(key: bytes | None) -> int:
    """
    @return: the header flags of a datagram sent with C{key} (or none).
    """
    return FLAG_HMAC if key is not None else 0


def checkTag(
    data: bytes, flags: int, key: bytes | None, headerSize: int
) -> tuple[bytes, bool]:
    """
    Check the tag of a received datagram whose header had C{flags}.  With a
    C{key}, only datagrams with a valid tag are accepted; without, a tag is
    removed unchecked.

    @return: the datagram without its tag, and whether it was authenticated.
    @raise WireError: C{foreign}, C{forged} or C{unauthenticated}.
    """
    if flags & FLAG_HMAC:
        if len(data) < headerSize + TAG_SIZE:
            raise WireError("foreign")
        body, received = data[:-TAG_SIZE], data[-TAG_SIZE:]
        if key is None:
            return body, False
        if not tagIsValid(key, body, received):
            raise WireError("forged")
        return body, True
    if key is not None:
        raise WireError("unauthenticated")
    return data, False


def keyOption(path: str | None) -> bytes | None:
    """
    Read the key of a C{--key-file} option, if one was given.

    @raise usage.UsageError: with a one-line reason if it cannot be used.
    """
    if not path:
        return None
    try:
        return readKey(path)
    except OSError as e:
        raise usage.UsageError(f"--key-file: {e.strerror}: {path}")
    except ValueError as e:
        raise usage.UsageError(f"--key-file: {e}")


def tag(key: bytes, body: bytes) -> bytes:
    """
    @return: the HMAC-SHA256 of C{body} under C{key}.
    """
    return hmac.new(key, body, hashlib.sha256).digest()


def tagIsValid(key: bytes, body: bytes, received: bytes) -> bool:
    """
    @return: whether C{received} is C{body}'s tag, compared in constant time.
    """
    return hmac.compare_digest(received, tag(key, body))


class SequenceWindow:
    """
    Per stream (any hashable key), the highest sequence number seen and a
    bitmap of the C{size} below it: L{accept} is true once per sequence
    number, and false for anything older than the window.  At most
    C{maxStreams} streams are remembered; the least recently used is
    forgotten first.
    """

    def __init__(self, size: int = REPLAY_WINDOW, maxStreams: int = 4096) -> None:
        self.size = size
        self.maxStreams = maxStreams
        self._streams: OrderedDict[Hashable, tuple[int, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._streams)

    def forget(self, stream: Hashable) -> None:
        """
        Forget C{stream} (say, a peer that said goodbye).
        """
        self._streams.pop(stream, None)

    def acceptSequence(self, stream: Hashable, seq: int) -> bool:
        """
        @return: whether C{seq} is new in C{stream}; it is then recorded.
        """
        state = self._streams.get(stream)
        if state is None:
            while len(self._streams) >= self.maxStreams:
                self._streams.popitem(last=False)
            self._streams[stream] = (seq, 1)
            return True
        self._streams.move_to_end(stream)
        highest, bitmap = state
        if seq > highest:
            shift = seq - highest
            bitmap = ((bitmap << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            self._streams[stream] = (seq, bitmap)
            return True
        back = highest - seq
        if back >= self.size or bitmap >> back & 1:
            return False
        self._streams[stream] = (highest, bitmap | 1 << back)
        return True


__all__ = ["TAG_SIZE", "REPLAY_WINDOW", "newId", "readKey", "tag", "tagIsValid", "SequenceWindow"]
