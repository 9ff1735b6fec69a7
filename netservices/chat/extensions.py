# -*- test-case-name: tests.chat.test_ircv3 -*-
"""
The IRCv3 commands of a chat connection: C{TAGMSG}, C{SETNAME},
C{CHATHISTORY}, C{MONITOR}, history replay on join, batches and labeled
responses (IRCv3 C{labeled-response}: every reply to a command sent with
a C{label} tag carries it, several replies in a C{labeled-response}
batch, none an C{ACK}).

Limits: a label is at most 64 bytes (a longer one is ignored); a
C{CHATHISTORY} answer at most L{MAX_CHATHISTORY} messages; a replay on
join at most L{REPLAY_ON_JOIN}; a monitor list at most
L{netservices.chat.service.ChatLimits.monitor} nicks.
"""

from __future__ import annotations

from typing import Callable

from netservices.chat import numerics
from netservices.chat.login import NeedMoreParams
from netservices.chat.service import ChatError
from netservices.chat.ircv3 import TIME, Relayed, addTags, parseTime
from netservices.chat.wire import MAX_LINE, echoParam, encode, validChannel

#: Most messages one C{CHATHISTORY} command returns (ISUPPORT CHATHISTORY).
MAX_CHATHISTORY = 100

#: Messages replayed to a client that joins (with batch and server-time).
REPLAY_ON_JOIN = 20

#: Longest real name (ISUPPORT NAMELEN), for C{USER} and C{SETNAME}.
NAMELEN = 100


def isupportExtensions(service) -> list[str]:
    """
    @return: the ISUPPORT tokens of the IRCv3 commands.
    """
    return [
        f"CHATHISTORY={MAX_CHATHISTORY}",
        f"MONITOR={service.limits.monitor}",
        "MSGREFTYPES=msgid,timestamp",
        f"NAMELEN={NAMELEN}",
        "WHOX",
    ]


class ExtensionCommands:
    """
    A mixin of L{netservices.chat.protocol.ChatConnection}: the IRCv3
    commands, batches and labeled responses.
    """

    __slots__ = ()

    # Tags, batches and labels

    def clientTags(self) -> tuple[tuple[str, str], ...]:
        """
        @return: the client-only tags (C{+name}) of the line being
            handled, if this client enabled C{message-tags}.
        """
        tags = self._lineTags
        if not tags or "message-tags" not in self.capabilities:
            return ()
        return tuple((key, value) for key, value in tags if key[:1] == "+")

    def newBatch(self) -> str:
        """
        @return: a batch reference unused on this connection.
        """
        self._batches += 1
        return str(self._batches)

    def sendBatch(self, kind: str, params: tuple[str, ...], lines: list[bytes], tags=()) -> None:
        """
        Send C{lines} in a batch of type C{kind} (IRCv3 batch); C{tags}
        go on the opening C{BATCH}.
        """
        reference = self.newBatch()
        server = self.service.serverName
        self.deliver(encode(server, "BATCH", "+" + reference, kind, *params, tags=list(tags)))
        tag = [("batch", reference)]
        for line in lines:
            self.deliver(addTags(line, tag))
        self.deliver(encode(server, "BATCH", "-" + reference))

    def labelled(self, label: str, handler: Callable, *args) -> None:
        """
        Run C{handler}, collecting what it sends this client, and send it
        with C{label}: one line with the tag, several in a batch, none as
        C{ACK}.
        """
        collected: list[bytes] = []
        # Shadows the class's deliver for this command only: every other
        # connection's deliveries, and this one's otherwise, cost nothing.
        self.deliver = collected.append
        try:
            handler(*args)
        finally:
            del self.deliver
        tag = [("label", label)]
        if not collected:
            self.deliver(encode(self.service.serverName, "ACK", tags=tag))
        elif len(collected) == 1:
            self.deliver(addTags(collected[0], tag))
        else:
            self.sendBatch("labeled-response", (), collected, tag)

    # TAGMSG and SETNAME

    def irc_TAGMSG(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            self.sendNumeric(numerics.ERR_NORECIPIENT, "No recipient given (TAGMSG)")
            return
        tags = self.clientTags()
        limit = self.service.limits.maxTargets
        targets = list(dict.fromkeys(t for t in params[0].split(",") if t))
        for target in targets[:limit]:
            try:
                self.service.sendMessage(self.user, "TAGMSG", target, None, tags)
            except ChatError as e:
                self.sendNumeric(e.numeric, *e.params)

    def irc_SETNAME(self, params: tuple[str, ...]) -> None:
        realname = params[0] if params else ""
        if not realname or len(realname.encode("utf-8")) > NAMELEN:
            self.send("FAIL", "SETNAME", "INVALID_REALNAME", "Realname is not valid")
            return
        self.service.setRealname(self.user, realname)

    # History

    def replayHistory(self, channel) -> None:
        """
        Send a client that just joined C{channel} its recent messages, in
        a C{chathistory} batch with their original time and msgid, if it
        enabled C{batch} and C{server-time}.
        """
        capabilities = self.capabilities
        if channel.history is None or "batch" not in capabilities:
            return
        if "server-time" not in capabilities or "draft/chathistory" in capabilities:
            # A chathistory client asks for what it wants.
            return
        entries = channel.history.query("LATEST", [None], REPLAY_ON_JOIN)
        if entries:
            self._sendHistory(channel.name, entries)

    def _sendHistory(self, target: str, entries: list[Relayed]) -> None:
        # Original times always (the point of a replay); msgid and client
        # tags only to clients that enabled message-tags.
        mask = self.user.tagMask | TIME
        self.sendBatch("chathistory", (target,), [entry.bytesFor(mask) for entry in entries])

    def irc_CHATHISTORY(self, params: tuple[str, ...]) -> None:
        if "draft/chathistory" not in self.capabilities:
            self.sendNumeric(numerics.ERR_UNKNOWNCOMMAND, "CHATHISTORY", "Unknown command")
            return
        subcommand = params[0].upper() if params else ""
        count = 4 if subcommand == "BETWEEN" else 3
        if subcommand not in ("LATEST", "BEFORE", "AFTER", "AROUND", "BETWEEN"):
            self.send(
                "FAIL", "CHATHISTORY", "INVALID_PARAMS", echoParam(subcommand),
                "Unknown subcommand",
            )
            return
        if len(params) < count + 1:
            self.send("FAIL", "CHATHISTORY", "NEED_MORE_PARAMS", subcommand, "Missing parameters")
            return
        target, limitText = params[1], params[count]
        references = [_reference(text, subcommand == "LATEST") for text in params[2:count]]
        if any(r is False for r in references) or not (limitText.isascii() and limitText.isdigit()):
            self.send("FAIL", "CHATHISTORY", "INVALID_PARAMS", subcommand, "Invalid parameters")
            return
        limit = min(int(limitText), MAX_CHATHISTORY)
        channel = self.service.findChannel(target) if validChannel(target) else None
        if channel is None or self.user not in channel.members:
            if target[:1] != "#" and self.service.findUser(target) is not None:
                # No private history is kept.
                self.sendBatch("chathistory", (echoParam(target),), [])
                return
            self.send(
                "FAIL", "CHATHISTORY", "INVALID_TARGET", subcommand, echoParam(target),
                "Messages could not be retrieved",
            )
            return
        entries = []
        if channel.history is not None:
            entries = channel.history.query(subcommand, references, limit)
        if entries is None:
            self.send(
                "FAIL", "CHATHISTORY", "MESSAGE_ERROR", subcommand, echoParam(target),
                "Messages could not be retrieved",
            )
            return
        self._sendHistory(channel.name, entries)

    # MONITOR

    def irc_MONITOR(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            raise NeedMoreParams()
        action = params[0]
        service, user = self.service, self.user
        nicks = [n for n in (params[1] if len(params) > 1 else "").split(",") if n]
        if action == "+":
            if not nicks:
                raise NeedMoreParams()
            online, offline, refused = service.monitorAdd(user, nicks)
            self._sendList(numerics.RPL_MONONLINE, online)
            self._sendList(numerics.RPL_MONOFFLINE, offline)
            if refused:
                self.sendNumeric(
                    numerics.ERR_MONLISTFULL, str(service.limits.monitor),
                    ",".join(refused)[:400], "Monitor list is full.",
                )
        elif action == "-":
            if not nicks:
                raise NeedMoreParams()
            service.monitorRemove(user, nicks)
        elif action in ("C", "c"):
            service.monitorClear(user)
        elif action in ("L", "l"):
            self._sendList(numerics.RPL_MONLIST, list((user.monitoring or {}).values()))
            self.sendNumeric(numerics.RPL_ENDOFMONLIST, "End of MONITOR list")
        elif action in ("S", "s"):
            online, offline = [], []
            for nick in (user.monitoring or {}).values():
                found = service.findUser(nick)
                if found is not None:
                    online.append(found.prefix)
                else:
                    offline.append(nick)
            self._sendList(numerics.RPL_MONONLINE, online)
            self._sendList(numerics.RPL_MONOFFLINE, offline)

    def _sendList(self, numeric: str, items: list[str]) -> None:
        """
        Send C{items} comma-separated in as few C{numeric} lines as fit.
        """
        room = MAX_LINE - 2 - len(
            encode(self.service.serverName, numeric, self.user.nick or "*", "x")
        ) + 1
        chunk = ""
        for item in items:
            if chunk and len(chunk) + 1 + len(item.encode("utf-8")) > room:
                self.sendNumeric(numeric, chunk)
                chunk = ""
            chunk = f"{chunk},{item}" if chunk else item
        if chunk:
            self.sendNumeric(numeric, chunk)


def _reference(text: str, star: bool):
    """
    @return: a history reference: C{("msgid", id)},
        C{("timestamp", seconds)}, L{None} for C{*} where allowed, or
        C{False} for anything else.
    """
    if text == "*" and star:
        return None
    kind, _, value = text.partition("=")
    if kind == "msgid" and value:
        return ("msgid", value)
    if kind == "timestamp":
        seconds = parseTime(value)
        if seconds is not None:
            return ("timestamp", seconds)
    return False
