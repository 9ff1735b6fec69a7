# -*- test-case-name: tests.chat.test_ircv3 -*-
"""
IRCv3 for the chat server: which capabilities change the bytes a client
gets, relayed events with their tag variants, server-time stamps, message
ids and channel history.

A relayed message is encoded once per I{variant}, not once per member:
each user has a small bit mask (L{User.tagMask}) of the capabilities that
change the bytes it gets (L{TIME}, L{TAGS}, L{ACCOUNT}, L{EXTJOIN}); a
L{Relayed} event builds the bytes of each mask it is asked for once and
gives the same bytes object to every member with that mask.  Members
without such capabilities get the plain line, as before IRCv3; a channel
where nobody has any (L{Channel.capable} is 0) takes the plain path
without looking at masks at all.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from typing import Callable, Iterable

from netservices.chat.wire import encodeTags

#: Capability bits that change a relayed line's bytes.
TIME = 1  # server-time: a time tag
TAGS = 2  # message-tags: client tags and msgid
ACCOUNT = 4  # account-tag: the sender's account
EXTJOIN = 8  # extended-join: JOIN with account and real name

_MASK_OF = {
    "server-time": TIME,
    "message-tags": TAGS,
    "account-tag": ACCOUNT,
    "extended-join": EXTJOIN,
}

#: Capabilities the chat server offers besides C{cap-notify} and those of
#: accounts (C{sasl}, C{sts}).
CAPABILITIES = (
    "account-notify",
    "account-tag",
    "away-notify",
    "batch",
    "draft/chathistory",
    "echo-message",
    "extended-join",
    "invite-notify",
    "labeled-response",
    "message-tags",
    "multi-prefix",
    "server-time",
    "setname",
    "userhost-in-names",
)


def tagMask(capabilities: Iterable[str]) -> int:
    """
    @return: the bits of the capabilities that change relayed bytes.
    """
    mask = 0
    for name in capabilities:
        mask |= _MASK_OF.get(name, 0)
    return mask


def formatTime(seconds: float) -> str:
    """
    @return: a server-time stamp: C{2026-11-25T12:00:00.000Z} (UTC,
        milliseconds).
    """
    whole = int(seconds)
    millis = int(round((seconds - whole) * 1000))
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def parseTime(text: str) -> float | None:
    """
    @return: the POSIX time of a server-time stamp, or L{None} if C{text}
        is not one.
    """
    import calendar

    if len(text) != 24 or text[-1] != "Z" or text[19] != ".":
        return None
    try:
        stamp = time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")
        millis = int(text[20:23])
    except ValueError:
        return None
    return calendar.timegm(stamp) + millis / 1000


class MessageIds:
    """
    Unique message ids: a prefix (random per server start unless given)
    and a serial number in hex.  L{next} is cheap; the text is made only
    when an id is read (L{name}).
    """

    __slots__ = ("prefix", "next")

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = os.urandom(6).hex() if prefix is None else prefix
        self.next: Callable[[], int] = itertools.count(1).__next__

    def name(self, serial: int) -> str:
        return f"{self.prefix}{serial:x}"

    def __call__(self) -> str:
        return self.name(self.next())


class Relayed:
    """
    One relayed event and its bytes per capability mask.

    @ivar line: the plain line (no tags).
    @ivar time: when it happened (POSIX time).
    @ivar msgid: its message id, or L{None}; with C{ids}, a serial number
        is taken from it at once and made text the first time it is read
        (most messages are never seen with their id).
    @ivar account: the sender's account, or L{None}.
    @ivar clientTags: the client-only tags the sender attached.
    @ivar extended: the C{extended-join} form of a JOIN line, or L{None}.
    """

    __slots__ = ("line", "time", "_msgid", "_ids", "_serial", "account", "clientTags", "extended",
                 "_relevant", "_variants")

    def __init__(
        self,
        line: bytes,
        time: float,
        msgid: str | None = None,
        account: str | None = None,
        clientTags: tuple[tuple[str, str], ...] = (),
        extended: bytes | None = None,
        ids: MessageIds | None = None,
    ) -> None:
        self.line = line
        self.time = time
        self._msgid = msgid
        self._ids = ids
        self._serial = 0 if ids is None else ids.next()
        self.account = account
        self.clientTags = clientTags
        self.extended = extended
        # Made on the first bytesFor: most events (those in channels where
        # nobody has tag capabilities) never need them.
        self._relevant = 0
        self._variants: dict[int, bytes] | None = None

    @property
    def msgid(self) -> str | None:
        if self._msgid is None and self._ids is not None:
            self._msgid = self._ids.name(self._serial)
        return self._msgid

    def tags(self, mask: int) -> list[tuple[str, str]]:
        """
        @return: the tags a client with C{mask} gets.
        """
        tags: list[tuple[str, str]] = []
        if mask & TIME:
            tags.append(("time", formatTime(self.time)))
        if mask & TAGS and self.msgid is not None:
            tags.append(("msgid", self.msgid))
        if mask & ACCOUNT and self.account is not None:
            tags.append(("account", self.account))
        if mask & TAGS:
            tags.extend(self.clientTags)
        return tags

    def bytesFor(self, mask: int) -> bytes:
        """
        @return: the line as a client with capability bits C{mask} gets
            it, the same bytes object for every such client.
        """
        variants = self._variants
        if variants is None:
            relevant = TIME
            if self._msgid is not None or self._ids is not None or self.clientTags:
                relevant |= TAGS
            if self.account is not None:
                relevant |= ACCOUNT
            if self.extended is not None:
                relevant |= EXTJOIN
            self._relevant = relevant
            variants = self._variants = {0: self.line}
        mask &= self._relevant
        variant = variants.get(mask)
        if variant is None:
            line = self.extended if mask & EXTJOIN else self.line
            variant = variants[mask] = encodeTags(self.tags(mask)) + line
        return variant


def addTags(line: bytes, tags: list[tuple[str, str]]) -> bytes:
    """
    @return: C{line} (which may already have tags) with C{tags} put first.
    """
    section = encodeTags(tags)
    if not section:
        return line
    if line[:1] == b"@":
        return section[:-1] + b";" + line[1:]
    return section + line


class History:
    """
    A channel's recent C{PRIVMSG}s and C{NOTICE}s, the oldest first, at
    most C{size} of them.
    """

    __slots__ = ("entries",)

    def __init__(self, size: int, entries: Iterable[Relayed] = ()) -> None:
        self.entries: deque[Relayed] = deque(entries, maxlen=size)

    def add(self, event: Relayed) -> None:
        self.entries.append(event)

    def latest(self, limit: int) -> list[Relayed]:
        """
        @return: the last C{limit} entries, oldest first.
        """
        if limit <= 0:
            return []
        entries = list(self.entries)
        return entries[-limit:]

    def _bounds(self, entries: list[Relayed], reference) -> tuple[int, int] | None:
        """
        @param reference: C{("msgid", id)} or C{("timestamp", seconds)}.
        @return: C{(low, high)}: the entries before the reference are
            C{entries[:low]}, those after it C{entries[high:]}; L{None}
            for a message id not in the history.
        """
        kind, value = reference
        if kind == "msgid":
            for index, entry in enumerate(entries):
                if entry.msgid == value:
                    return index, index + 1
            return None
        low = next((i for i, e in enumerate(entries) if e.time >= value), len(entries))
        high = next((i for i, e in enumerate(entries) if e.time > value), len(entries))
        return low, high

    def query(self, subcommand: str, references: list, limit: int) -> list[Relayed] | None:
        """
        Answer a C{CHATHISTORY} query (IRCv3 draft/chathistory).

        @param subcommand: C{LATEST}, C{BEFORE}, C{AFTER}, C{AROUND} or
            C{BETWEEN}.
        @param references: one reference (two for C{BETWEEN}); L{None}
            for the C{*} of C{LATEST}.
        @return: at most C{limit} entries, oldest first; L{None} when a
            message id is unknown.
        """
        entries = list(self.entries)
        if subcommand == "LATEST" and references[0] is None:
            return entries[-limit:] if limit > 0 else []
        bounds = [self._bounds(entries, reference) for reference in references]
        if None in bounds:
            return None
        low, high = bounds[0]
        if subcommand == "LATEST":
            found = entries[high:][-limit:]
        elif subcommand == "BEFORE":
            found = entries[max(0, low - limit) : low]
        elif subcommand == "AFTER":
            found = entries[high : high + limit]
        elif subcommand == "AROUND":
            start = max(0, low - limit // 2)
            found = entries[start : start + limit]
        else:
            otherLow, otherHigh = bounds[1]
            if low <= otherLow:
                found = entries[high:otherLow][:limit]
            else:
                found = entries[otherHigh:low][-limit:]
        return found if limit > 0 else []
