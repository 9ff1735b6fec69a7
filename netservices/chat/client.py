# -*- test-case-name: tests.chat.test_client -*-
"""
C{netservices chat-client}: a line client for IRC servers (the chat service
and any other), for people without an IRC client and for scripts.

    netservices chat-client [ircs://|irc://]HOST[:PORT] --nick NICK [options]

Without a scheme it connects with TLS (C{ircs://}, port 6697), verifying
the certificate chain (against the system's trust store, or C{--ca FILE})
and the host name; or, with C{--fingerprint}, accepting exactly the
certificate whose SHA-256 fingerprint is given (as the chat server logs
it).  C{irc://} is plaintext, port 6667.

Three modes:
  - interactive (the default): each line read from standard input (a
    terminal or a pipe) goes to the current room, the last channel joined;
    C{/join}, C{/part}, C{/msg}, C{/me}, C{/nick}, C{/names}, C{/topic},
    C{/away}, C{/quit} and C{/help}.  What arrives is printed with its
    time and sender, every control character escaped (L{printable});
  - C{--send TARGET TEXT...}: join TARGET if it is a channel, send each
    TEXT, make sure the server took them (a C{PING} after them, whose
    C{PONG} comes after any error they drew), quit;
  - C{--listen CHANNEL}: join and print what arrives until interrupted
    (C{--json}: one object per line).

The wire is L{netservices.chat.wire}'s: lines are cut by L{LineFramer},
parsed by L{parseLine} and built by L{encode}, as the server does.
Registration asks for C{CAP LS 302}; with C{--sasl ACCOUNT} it requests
C{sasl} and authenticates with C{PLAIN} (IRCv3 SASL 3.1) before C{CAP END}.

Exit status: 0 when done (for C{--send}: once the server took every
message); 1 when connecting, TLS, registration, authentication, joining or
sending fails, or the server closes the connection first (one line on
standard error); 2 for bad usage.
"""

from __future__ import annotations

import base64
import datetime
import getpass
import hmac
import json
import os
import re
import signal
import sys
import time

from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Protocol
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from netservices._common.addresses import isLoopback, joinHostPort, parseIP, splitHostPort
from netservices._common.client import (
    ClientError,
    InterspersedOptions,
    connectStream,
    tlsOptions,
    untilInterrupted,
)
from netservices._common.listen import positiveFloat
from netservices.chat import numerics
from netservices.chat.tap import CHAT_PORT, CHAT_TLS_PORT
from netservices.chat.wire import (
    MAX_LINE,
    USERLEN,
    EncodingError,
    LineFramer,
    Message,
    encode,
    foldCase,
    parseLine,
    truncateUTF8,
)
from netservices.echo.client import LineReader

#: The longest line read from the server: 512 bytes, plus the 8191 bytes
#: of tags IRCv3 allows in front.
MAX_SERVER_LINE = 8191 + MAX_LINE

#: The longest line read from standard input, in bytes.
MAX_INPUT = 16384

#: Bytes of base64 in one C{AUTHENTICATE} line (IRCv3 SASL 3.1).
SASL_CHUNK = 400

#: Nicks tried after the first one, each with one more C{_}, when it is in
#: use at registration (interactive mode only).
NICK_TRIES = 3

#: Seconds to wait for the server to close the connection after C{QUIT}.
QUIT_TIMEOUT = 5.0

#: Bytes allowed for the C{:nick!user@host } a server puts in front of what
#: we send when it relays it: the host (up to 64 bytes) and user name
#: (L{USERLEN}) we cannot know, plus separators.
_RELAY_HOST = 64

#: Channel prefixes of RFC 2812; a name typed without one gets C{#}.
CHANNEL_PREFIXES = "#&+!"

_NICK = re.compile(r"[^\s,:!@*?#&$\x00-\x1f\x7f][^\s,!@*?\x00-\x1f\x7f]*\Z")

#: mIRC formatting (bold, colours, reset, monospace, reverse, italics,
#: strike-through, underline), dropped from text shown on a terminal.
_FORMATTING = re.compile(
    r"\x03(?:\d{1,2}(?:,\d{1,2})?)?|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
    r"|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)

#: What a terminal could act on: C0 and C1 controls, DEL, line and
#: paragraph separators, and bidirectional overrides and isolates.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

HELP = [
    "text            send text to the current room (//text sends /text)",
    "/join #room [key]   join a room; it becomes the current room",
    "/part [#room] [reason]",
    "/msg NICK|#room text",
    "/me action      an action in the current room",
    "/nick NEW",
    "/names [#room]",
    "/topic [#room] [text]   show or set the topic",
    "/away [message] set (or without a message, clear) away",
    "/quit [message]",
]


def parseServer(text: str) -> tuple[bool, str, int]:
    """
    Parse C{[ircs://|irc://]HOST[:PORT]}: C{ircs://} (the default) is TLS,
    port 6697; C{irc://} plaintext, port 6667.

    @return: C{(tls, host, port)}.
    @raise ValueError: with a message fit for the user.
    """
    scheme, separator, rest = text.partition("://")
    if not separator:
        scheme, rest = "ircs", text
    elif scheme.lower() not in ("irc", "ircs"):
        raise ValueError(f"unknown scheme {scheme}:// in {text!r}: expected ircs:// or irc://")
    tls = scheme.lower() == "ircs"
    if rest.endswith("/"):
        rest = rest[:-1]
    if "/" in rest or "?" in rest or "#" in rest or "@" in rest:
        raise ValueError(f"{text!r}: expected only HOST[:PORT] after the scheme")
    host, port = splitHostPort(rest, CHAT_TLS_PORT if tls else CHAT_PORT)
    return tls, host, port


def parseFingerprint(text: str) -> bytes:
    """
    Parse a SHA-256 fingerprint as the server logs it (C{AB:CD:...}), or
    without colons, in either case.

    @return: the 32 bytes.
    @raise ValueError: if C{text} is not 32 bytes of hex.
    """
    digits = text.strip().replace(":", "")
    if len(digits) != 64 or not all(c in "0123456789abcdefABCDEF" for c in digits):
        raise ValueError(
            f"--fingerprint {text!r}: expected a SHA-256 fingerprint, 64 hex digits"
            " (in pairs separated by ':', or not)"
        )
    return bytes.fromhex(digits)


def formatFingerprint(digest: bytes) -> str:
    """
    @return: a fingerprint as the server logs it: C{AB:CD:...}.
    """
    return digest.hex(":").upper()


@implementer(IOpenSSLClientConnectionCreator)
class PinnedCertificate:
    """
    Client TLS that accepts exactly one server certificate, the one whose
    DER form has the pinned SHA-256 fingerprint, whoever signed it (a
    self-signed one, say) and whatever names it holds; any other
    certificate fails the handshake with a L{ClientError} saying which
    fingerprint the server showed.
    """

    def __init__(self, fingerprint: bytes, hostname: str, where: str) -> None:
        """
        @param hostname: sent in SNI when it is a name, not an address.
        @param where: C{host:port} for the error message.
        """
        self.fingerprint = fingerprint
        self.hostname = hostname
        self.where = where

    def clientConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        """
        @return: a client connection checking the pin.
        """

        def verify(connection, certificate, errno, depth, ok) -> bool:
            if depth:
                # Only the server's own certificate is pinned.
                return True
            seen = certificate.to_cryptography().fingerprint(hashes.SHA256())
            if hmac.compare_digest(seen, self.fingerprint):
                return True
            tlsProtocol.failVerification(
                Failure(
                    ClientError(
                        f"{self.where}: TLS failed: the server's certificate has SHA-256"
                        f" fingerprint {formatFingerprint(seen)}, not the one pinned"
                    )
                )
            )
            return False

        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_verify(SSL.VERIFY_PEER, verify)
        connection = SSL.Connection(context, None)
        connection.set_app_data(tlsProtocol)
        if parseIP(self.hostname) is None:
            connection.set_tlsext_host_name(self.hostname.encode("idna"))
        return connection


def saslPlain(account: str, password: str) -> list[str]:
    """
    @return: the C{AUTHENTICATE} parameters that carry SASL C{PLAIN}
        credentials (C{account NUL account NUL password}, base64): chunks of
        L{SASL_CHUNK} bytes, then C{+} if the last one was full (or there
        was nothing to send).
    """
    payload = base64.b64encode(f"{account}\0{account}\0{password}".encode("utf-8")).decode()
    chunks = [payload[i : i + SASL_CHUNK] for i in range(0, len(payload), SASL_CHUNK)]
    if not chunks or len(chunks[-1]) == SASL_CHUNK:
        chunks.append("+")
    return chunks


def sourceOf(line: bytes) -> str | None:
    """
    @return: the source (C{nick!user@host} or a server name) in front of a
        line from the server, after its tags if any; L{None} if it has
        none.
    """
    message = parseLine(line)
    return message.source if isinstance(message, Message) else None


def nickOf(source: str | None) -> str | None:
    """
    @return: the nick of C{nick!user@host}, or a server name as it is.
    """
    return None if source is None else source.split("!", 1)[0]


def isChannel(name: str) -> bool:
    """
    @return: whether C{name} names a channel rather than a nick.
    """
    return bool(name) and name[0] in CHANNEL_PREFIXES


def printable(text: str) -> str:
    """
    @return: C{text} safe to print on a terminal: mIRC formatting dropped,
        C0 controls and DEL shown in caret notation (ESC as C{^[}), and C1
        controls, line separators and bidirectional overrides as
        C{\\u202e}-style escapes, so that nothing from the server can move
        the cursor, change colours or retitle the window.
    """

    def escape(match: re.Match) -> str:
        code = ord(match.group())
        if code < 0x20:
            return "^" + chr(code + 0x40)
        if code == 0x7F:
            return "^?"
        return f"\\u{code:04x}"

    return _CONTROL.sub(escape, _FORMATTING.sub("", text))


def splitText(text: str, room: int) -> list[str]:
    """
    Cut C{text} into pieces of at most C{room} bytes of UTF-8, at a space
    when there is one in the second half of a piece, else at a character
    boundary.
    """
    pieces = []
    data = text.encode("utf-8")
    while len(data) > room:
        piece = truncateUTF8(data, room)
        space = piece.rfind(b" ")
        if space > room // 2:
            piece = piece[:space]
        pieces.append(piece.decode("utf-8"))
        data = data[len(piece) :].lstrip(b" ")
    if data or not pieces:
        pieces.append(data.decode("utf-8"))
    return pieces


def describeEvent(event: dict, me: str | None, utc: bool = False) -> str:
    """
    @param me: our nick, to tell what we sent from what we received.
    @return: an event (see L{ChatSession.emit}) as one line for people,
        starting with its time, C{HH:MM:SS}; everything the server chose
        made L{printable}.
    """
    clock = time.gmtime if utc else time.localtime
    stamp = time.strftime("%H:%M:%S", clock(event["time"]))
    kind = event["kind"]
    source, target = printable(event["source"] or ""), printable(event["target"] or "")
    text = printable(event["text"] or "")
    if kind in ("message", "action", "notice"):
        if isChannel(event["target"] or ""):
            where = f"{target}:"
        elif me is not None and foldCase(event["source"] or "") == foldCase(me):
            where = f"(to {target})"
        elif kind == "notice":
            where = ""
        else:
            where = "(private)"
        head = {"message": f"<{source}>", "action": f"* {source}", "notice": f"-{source}-"}[kind]
        line = " ".join(part for part in (head, where, text) if part)
    elif kind == "join":
        line = f"--> {source} joined {target}"
    elif kind == "part":
        line = f"<-- {source} left {target}" + (f" ({text})" if text else "")
    elif kind == "quit":
        line = f"<-- {source} quit" + (f" ({text})" if text else "")
    elif kind == "kick":
        line = f"<-- {source} kicked {printable(event['nick'])} from {target}" + (
            f" ({text})" if text else ""
        )
    elif kind == "nick":
        line = f"--- {source} is now known as {text}"
    elif kind == "topic":
        line = f"--- {source} set the topic of {target}: {text}" if source else f"--- topic of {target}: {text}"
    elif kind == "mode":
        line = f"--- {source} set mode {text} on {target}"
    elif kind == "invite":
        line = f"--- {source} invites you to {target}"
    elif kind == "names":
        line = f"--- {target}: {text}"
    elif kind == "ctcp":
        line = f"--- {source} sent CTCP {text}"
    elif kind == "error":
        line = "!!! " + (f"{target}: {text}" if target else text)
    else:
        line = "--- " + (f"{target}: {text}" if target else text)
    return f"{stamp} {line}"


def jsonEvent(event: dict) -> str:
    """
    @return: an event as one JSON object: C{time} (ISO 8601, UTC),
        C{kind}, C{source} (a nick, a server name or null), C{target} (a
        channel, our nick or null), C{text}, and C{nick} for kicks (who
        was kicked).  Text is as the server sent it; non-ASCII characters
        and controls are escaped by JSON itself.
    """
    stamp = datetime.datetime.fromtimestamp(event["time"], datetime.timezone.utc)
    return json.dumps(
        {**event, "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    )


@implementer(IHandshakeListener)
class ChatConnection(Protocol):
    """
    The client's side of one connection to an IRC server: lines framed by
    L{LineFramer}, parsed by L{parseLine} and built by L{encode}; C{PING}
    answered; registration (C{CAP LS 302}, SASL C{PLAIN} if asked, C{NICK},
    C{USER}) driven to C{001}.  After registration every other message goes
    to C{received(source, message)}.

    @ivar nick: our nick (as the server knows it, once registered).
    @ivar ready: fires once connected (with TLS, after the handshake).
    @ivar registered: fires with our nick on C{001}; fails with a
        L{ClientError} if registration or authentication fails.
    @ivar received: called with C{(source, message)} for each message after
        registration (except C{PING}).
    @ivar notify: called with a line for people about registration (a nick
        in use, tried again with another).
    @ivar closing: the reason of the server's C{ERROR}, if it sent one.
    """

    def __init__(
        self,
        nick: str,
        where: str,
        tlsCreator=None,
        sasl: tuple[str, str] | None = None,
        nickTries: int = 0,
    ) -> None:
        """
        @param where: C{host:port}, for messages.
        @param tlsCreator: client TLS to start once connected, if any.
        @param sasl: C{(account, password)} to authenticate with.
        @param nickTries: how many other nicks (C{nick_}, C{nick__}, ...)
            to try when the nick is in use at registration.
        """
        self.nick = nick
        self.where = where
        self.tlsCreator = tlsCreator
        self.sasl = sasl
        self.nickTries = nickTries
        self.ready: Deferred = Deferred()
        self.registered: Deferred = Deferred()
        self.received = lambda source, message: None
        self.notify = lambda text: None
        self.closing: str | None = None
        self.lost = False
        self._framer = LineFramer(MAX_SERVER_LINE)
        self._capabilities: dict[str, str] = {}
        self._mechanisms: str | None = None
        self._authenticated = False
        self._closeWaiters: list[Deferred] = []

    # Connection

    def connectionMade(self) -> None:
        if self.tlsCreator is None:
            self.ready.callback(self)
        else:
            self.transport.startTLS(self.tlsCreator)

    def handshakeCompleted(self) -> None:
        if not self.ready.called:
            self.ready.callback(self)

    def connectionLost(self, reason=None) -> None:
        self.lost = True
        if not self.ready.called:
            self.ready.errback(reason)
        elif not self.registered.called:
            self.registered.errback(self.closedError("during registration"))
        waiters, self._closeWaiters = self._closeWaiters, []
        for waiter in waiters:
            waiter.callback(self.closing)

    def closedError(self, when: str = "") -> ClientError:
        """
        @param when: when it happened, e.g. C{"during registration"}.
        @return: the error that the server closed the connection, with the
            reason of its C{ERROR} if it sent one.
        """
        because = f": {self.closing}" if self.closing else ""
        return ClientError(f"{self.where} closed the connection{' ' if when else ''}{when}{because}")

    def whenClosed(self) -> Deferred:
        """
        @return: a new L{Deferred} firing with the reason of the server's
            C{ERROR} (or L{None}) once the connection is closed.
        """
        waiter: Deferred = Deferred(lambda d: self._closeWaiters.remove(d))
        if self.lost:
            waiter.callback(self.closing)
        else:
            self._closeWaiters.append(waiter)
        return waiter

    def send(self, command: str, *params: str) -> None:
        """
        Send one message (nothing once the connection is lost).

        @raise EncodingError: if it cannot be one line (see L{encode}).
        """
        line = encode(None, command, *params)
        if not self.lost:
            self.transport.write(line)

    def register(self) -> Deferred:
        """
        Start registration.

        @return: L{registered}.
        """
        self.send("CAP", "LS", "302")
        self.send("NICK", self.nick)
        self.send("USER", self.nick[:USERLEN], "0", "*", "netservices chat-client")
        return self.registered

    def dataReceived(self, data: bytes) -> None:
        for line in self._framer.feed(data):
            message = parseLine(line)
            if not isinstance(message, Message):
                continue
            if message.command == "PING":
                self.send("PONG", *(message.params[-1:] or ["?"]))
                continue
            if message.command == "ERROR":
                self.closing = message.params[0] if message.params else "closed"
            if self.registered.called:
                self.received(message.source, message)
            else:
                self._registering(message.source, message)
            if self.lost:
                return

    # Registration

    def _fail(self, text: str) -> None:
        if not self.registered.called:
            self.registered.errback(ClientError(f"{self.where}: {text}"))
        self.transport.loseConnection()

    def _registering(self, source: str | None, message: Message) -> None:
        command, params = message.command, (*message.params, "", "", "")
        if command == "CAP":
            self._cap(params[1].upper(), message.params[2:])
        elif command == "AUTHENTICATE" and params[0] == "+" and self.sasl is not None:
            for chunk in saslPlain(*self.sasl):
                self.send("AUTHENTICATE", chunk)
        elif command == numerics.RPL_SASLMECHS:
            self._mechanisms = params[1]
        elif command == numerics.RPL_SASLSUCCESS:
            self._authenticated = True
            self.send("CAP", "END")
        elif command in _SASL_FAILURES:
            meaning, text = _SASL_FAILURES[command], message.params[-1]
            offered = f" (it offers {self._mechanisms})" if self._mechanisms else ""
            said = f": {text}" if text.lower() != meaning.lower() else ""
            self._fail(f"{meaning}{offered}{said}")
        elif command == numerics.ERR_NICKNAMEINUSE:
            self._nickInUse()
        elif command in (numerics.ERR_ERRONEUSNICKNAME, "436", "437"):
            self._fail(f"nick {self.nick} refused: {message.params[-1]}")
        elif command == numerics.ERR_UNKNOWNCOMMAND and params[1].upper() == "CAP":
            if self.sasl is not None:
                self._fail("the server does not support capabilities, so no SASL")
        elif command == numerics.RPL_WELCOME:
            if self.sasl is not None and not self._authenticated:
                self._fail("registered without SASL authentication; not going on")
                return
            self.nick = params[0] or self.nick
            self.registered.callback(self.nick)
            # The welcome is worth showing too.
            self.received(source, message)

    def _cap(self, subcommand: str, params: tuple[str, ...]) -> None:
        if subcommand == "LS":
            more = len(params) > 1 and params[0] == "*"
            for token in (params[-1] if params else "").split():
                name, _, value = token.partition("=")
                self._capabilities[name] = value
            if more:
                return
            if self.sasl is None:
                self.send("CAP", "END")
            elif "sasl" not in self._capabilities:
                self._fail("the server does not offer SASL (no sasl capability)")
            elif self._capabilities["sasl"] and "PLAIN" not in self._capabilities["sasl"].upper().split(","):
                self._fail(f"the server offers SASL {self._capabilities['sasl']}, not PLAIN")
            else:
                self.send("CAP", "REQ", "sasl")
        elif subcommand == "ACK" and self.sasl is not None and not self._authenticated:
            if "sasl" in (params[-1] if params else "").lower().split():
                self.send("AUTHENTICATE", "PLAIN")
        elif subcommand == "NAK" and self.sasl is not None:
            self._fail("the server refused the sasl capability")

    def _nickInUse(self) -> None:
        if self.nickTries <= 0:
            self._fail(f"nick {self.nick} is in use (choose another --nick)")
            return
        self.nickTries -= 1
        taken, self.nick = self.nick, self.nick + "_"
        self.notify(f"nick {taken} is in use, trying {self.nick}")
        self.send("NICK", self.nick)


#: What each SASL failure numeric means.
_SASL_FAILURES = {
    numerics.ERR_SASLFAIL: "SASL authentication failed",
    numerics.ERR_SASLTOOLONG: "SASL message too long",
    numerics.ERR_SASLABORTED: "SASL authentication aborted",
    numerics.ERR_SASLALREADY: "SASL: already authenticated",
    "902": "SASL: the nick is locked",
}

#: Replies not worth a line: the end of lists, ISUPPORT, times.
_QUIET_REPLIES = frozenset(
    {
        numerics.RPL_MYINFO,
        numerics.RPL_LOCALUSERS,
        numerics.RPL_GLOBALUSERS,
        numerics.RPL_ISUPPORT,
        numerics.RPL_ENDOFNAMES,
        numerics.RPL_TOPICWHOTIME,
        numerics.RPL_CREATIONTIME,
        numerics.RPL_MOTDSTART,
        numerics.RPL_ENDOFMOTD,
        numerics.RPL_ENDOFWHO,
        numerics.RPL_ENDOFWHOIS,
        numerics.RPL_ENDOFBANLIST,
        numerics.RPL_LISTEND,
    }
)


class ChatSession:
    """
    What the user sees and types, on a registered L{ChatConnection}:
    messages turned into events (printed, or read by L{join} and
    L{confirm}), typed lines into commands.

    @ivar channels: the channels we are in or joining (not those we are
        leaving), in the order joined.
    @ivar current: the current room: where typed text goes.
    @ivar quitting: whether we sent C{QUIT}.
    """

    def __init__(self, connection: ChatConnection, clock, output=None, verbose: bool = True) -> None:
        """
        @param clock: gives the time of events (C{seconds()}).
        @param output: called with each event (a dictionary, see L{emit});
            L{None} to print nothing.
        @param verbose: whether replies (welcome, MOTD, names, topics) are
            events too; errors always are.
        """
        self.connection = connection
        self.clock = clock
        self.output = output
        self.verbose = verbose
        self.channels: list[str] = []
        self.current: str | None = None
        self.quitting = False
        self._joining: dict[str, Deferred] = {}
        self._parting: set[str] = set()
        self._pongs: dict[str, Deferred] = {}
        self._errors: list[str] | None = None
        connection.received = self.received
        connection.whenClosed().addCallback(lambda _: self._closed())

    @property
    def me(self) -> str:
        """
        Our nick.
        """
        return self.connection.nick

    def emit(
        self,
        kind: str,
        source: str | None = None,
        target: str | None = None,
        text: str | None = None,
        **more: str,
    ) -> None:
        """
        Give an event to C{output}: a dictionary of C{time} (seconds since
        the epoch), C{kind}, C{source}, C{target}, C{text} and C{more}.
        """
        if self.output is not None:
            event = {"time": self.clock.seconds(), "kind": kind, "source": source,
                     "target": target, "text": text, **more}
            self.output(event)

    def info(self, text: str) -> None:
        """
        Say something of our own (not from the server).
        """
        self.emit("info", text=text)

    def error(self, text: str) -> None:
        """
        Report a local error (nothing was sent).
        """
        self.emit("error", text=text)

    # What arrives

    def received(self, source: str | None, message: Message) -> None:
        """
        Turn one message from the server into an event, and follow our own
        joins, parts and nick changes.
        """
        command = message.command
        p = (*message.params, "", "", "")
        nick = nickOf(source)
        mine = nick is not None and foldCase(nick) == foldCase(self.me)
        if command in ("PRIVMSG", "NOTICE"):
            self._message(command, nick, p[0], message.params[-1] if len(message.params) > 1 else "")
        elif command == "JOIN":
            if mine:
                self._joined(p[0])
            self.emit("join", nick, p[0])
            if mine and self.verbose and self.current == p[0]:
                self.info(f"now talking in {p[0]}")
        elif command == "PART":
            self.emit("part", nick, p[0], p[1] or None)
            if mine:
                self._parting.discard(foldCase(p[0]))
                self._left(p[0])
        elif command == "KICK":
            self.emit("kick", nick, p[0], p[2] or None, nick=p[1])
            if foldCase(p[1]) == foldCase(self.me):
                self._left(p[0])
        elif command == "QUIT":
            self.emit("quit", nick, None, p[0] or None)
        elif command == "NICK":
            if mine:
                self.connection.nick = p[0]
            self.emit("nick", nick, None, p[0])
        elif command == "TOPIC":
            self.emit("topic", nick, p[0], p[1])
        elif command == "MODE":
            self.emit("mode", nick, p[0], " ".join(message.params[1:]))
        elif command == "INVITE":
            self.emit("invite", nick, p[1])
        elif command == "PONG":
            _settle(self._pongs.pop(message.params[-1] if message.params else "", None), None)
        elif command == "ERROR":
            # The server's goodbye is no error when we asked for it.
            self.emit("info" if self.quitting else "error", nick, None, p[0])
        elif command.isdigit():
            self._numeric(command, message.params[1:])

    def _message(self, command: str, nick: str | None, target: str, text: str) -> None:
        kind = "message" if command == "PRIVMSG" else "notice"
        if text.startswith("\x01"):
            body = text[1:-1] if text.endswith("\x01") else text[1:]
            verb, _, rest = body.partition(" ")
            if verb.upper() == "ACTION":
                kind, text = "action", rest
            elif command == "PRIVMSG":
                kind, text = "ctcp", body
            else:
                text = body
        self.emit(kind, nick, target, text)

    def _numeric(self, code: str, params: tuple[str, ...]) -> None:
        target = params[0] if len(params) > 1 else None
        text = params[-1] if params else ""
        if "400" <= code < "600" and code != numerics.ERR_NOMOTD:
            self.emit("error", None, target, text)
            if self._errors is not None:
                self._errors.append(f"{target}: {text}" if target else text)
            self._failJoin(target, text)
            return
        if not self.verbose or code in _QUIET_REPLIES:
            return
        if code == numerics.RPL_NAMREPLY and len(params) >= 3:
            self.emit("names", None, params[1], params[2])
        elif code == numerics.RPL_TOPIC and len(params) >= 2:
            self.emit("topic", None, params[0], params[1])
        elif code == numerics.RPL_AWAY and len(params) >= 2:
            self.emit("info", None, params[0], f"is away: {params[1]}")
        elif len(params) > 1 and isChannel(params[0]):
            self.emit("info", None, params[0], " ".join(params[1:]))
        else:
            self.emit("info", None, None, " ".join(params))

    def _closed(self) -> None:
        error = self.connection.closedError()
        waiting = [*self._joining.values(), *self._pongs.values()]
        self._joining, self._pongs = {}, {}
        for each in waiting:
            _settle(each, Failure(error))

    def _find(self, channel: str) -> str | None:
        """
        @return: C{channel} as spelt in L{channels}, if it is there.
        """
        for known in self.channels:
            if foldCase(known) == foldCase(channel):
                return known
        return None

    def _joined(self, channel: str) -> None:
        """
        The server says we joined C{channel}, whether we asked or not
        (unless we have typed C{/part} for it since).
        """
        _settle(self._joining.pop(foldCase(channel), None), channel)
        if foldCase(channel) in self._parting:
            return
        known = self._find(channel)
        if known is None:
            self.channels.append(channel)
        else:
            self.channels[self.channels.index(known)] = channel
        if self.current is None or foldCase(self.current) == foldCase(channel):
            # The server's spelling; a room chosen since stays current.
            self.current = channel

    def _left(self, channel: str) -> None:
        """
        We left C{channel}, are leaving it, or could not join it: if it was
        the current room, the last room joined before it is.
        """
        self.channels = [c for c in self.channels if foldCase(c) != foldCase(channel)]
        if self.current is not None and foldCase(self.current) == foldCase(channel):
            self.current = self.channels[-1] if self.channels else None
            if self.verbose:
                self.info(f"now talking in {self.current}" if self.current else "not in any room")

    def _failJoin(self, channel: str | None, text: str) -> None:
        if channel is None or foldCase(channel) not in self._joining:
            return
        error = ClientError(f"cannot join {channel}: {text}")
        _settle(self._joining.pop(foldCase(channel)), Failure(error))
        self._left(channel)

    # What we do

    def join(self, channel: str, key: str | None = None) -> Deferred:
        """
        Join C{channel}.

        @return: a L{Deferred} firing once the server says we joined, or
            failing with a L{ClientError} saying why not.
        """
        waiting: Deferred = Deferred()
        self._joining[foldCase(channel)] = waiting
        self.connection.send("JOIN", *([channel, key] if key else [channel]))
        return waiting

    def say(self, target: str, text: str, action: bool = False) -> None:
        """
        Send C{text} to C{target}, in as many messages as it takes for the
        server to relay each whole, and show it as sent.

        @raise EncodingError: if C{target} cannot be sent.
        """
        wrap = 9 if action else 0  # \x01ACTION ...\x01
        head = len(encode(None, "PRIVMSG", target, "")) - 2
        relayed = len(self.me) + 1 + USERLEN + 1 + _RELAY_HOST + 2
        for piece in splitText(text, MAX_LINE - 2 - head - relayed - wrap):
            self.connection.send("PRIVMSG", target, f"\x01ACTION {piece}\x01" if action else piece)
            self.emit("action" if action else "message", self.me, target, piece)

    def confirm(self) -> Deferred:
        """
        Send a C{PING} after what was sent; the server answers every line
        in order, so its C{PONG} comes after any error those lines drew.

        @return: a L{Deferred} firing with the errors (each a line) that
            came before the C{PONG}.
        """
        token = f"netservices-{len(self._pongs)}-{int(self.clock.seconds() * 1000)}"
        waiting: Deferred = Deferred()
        self._pongs[token] = waiting
        self._errors = errors = []
        self.connection.send("PING", token)

        def done(_):
            self._errors = None
            return errors

        return waiting.addCallback(done)

    def quit(self, reason: str | None = None) -> None:
        """
        Send C{QUIT} (once).
        """
        if not self.quitting:
            self.quitting = True
            self.connection.send("QUIT", *([reason] if reason else []))

    # What is typed

    def typed(self, line: str) -> None:
        """
        Act on one typed line: a command, or text for the current room.
        """
        line = line.rstrip("\r\n")
        if not line.strip():
            return
        try:
            if line.startswith("/") and not line.startswith("//"):
                name, _, rest = line[1:].partition(" ")
                command = getattr(self, f"command_{name.lower()}", None)
                if command is None or not name.isalpha():
                    self.error(f"unknown command /{name} (see /help)")
                else:
                    command(rest.strip())
            elif self.current is None:
                self.error("no current room: /join #room first, or /msg NICK text")
            else:
                self.say(self.current, line[1:] if line.startswith("//") else line)
        except EncodingError as e:
            self.error(f"not sent: {e}")

    def _room(self, words: list[str]) -> str | None:
        """
        @return: the channel C{words} start with (taken from them), else the
            current room; L{None}, with an error said, if there is neither.
        """
        if words and isChannel(words[0]):
            return words.pop(0)
        if self.current is None:
            self.error("no current room: name one")
        return self.current

    def command_help(self, rest: str) -> None:
        """
        C{/help}.
        """
        for line in HELP:
            self.info(line)

    def command_join(self, rest: str) -> None:
        """
        C{/join #room [key]}: join, or make it the current room if we are
        in it already.  It is the current room at once, so that what is
        typed next goes there, as C{/part} makes the room before it current
        at once (if joining fails, the room before it is current again).
        """
        words = rest.split()
        if not words or len(words) > 2 or "," in words[0]:
            self.error("usage: /join #room [key]")
            return
        channel = words[0] if isChannel(words[0]) else "#" + words[0]
        known = self._find(channel)
        if known is not None:
            self.current = known
            self.info(f"now talking in {known}")
            return
        self.join(channel, *words[1:]).addErrback(lambda f: f.trap(ClientError))
        self.channels.append(channel)
        self.current = channel

    def command_part(self, rest: str) -> None:
        """
        C{/part [#room] [reason]}.
        """
        words = rest.split(" ", 1) if rest else []
        channel = self._room(words)
        if channel is not None:
            reason = " ".join(words).strip()
            self.connection.send("PART", *([channel, reason] if reason else [channel]))
            self._parting.add(foldCase(channel))
            self._left(channel)

    def command_msg(self, rest: str) -> None:
        """
        C{/msg NICK|#room text}.
        """
        target, _, text = rest.partition(" ")
        if not target or not text.strip():
            self.error("usage: /msg NICK|#room text")
            return
        self.say(target, text)

    def command_me(self, rest: str) -> None:
        """
        C{/me action}: a CTCP ACTION in the current room.
        """
        if not rest:
            self.error("usage: /me action")
        elif self.current is None:
            self.error("no current room: /join #room first")
        else:
            self.say(self.current, rest, action=True)

    def command_nick(self, rest: str) -> None:
        """
        C{/nick NEW}.
        """
        if not rest or " " in rest:
            self.error("usage: /nick NEW")
            return
        self.connection.send("NICK", rest)

    def command_names(self, rest: str) -> None:
        """
        C{/names [#room]}.
        """
        channel = self._room(rest.split())
        if channel is not None:
            self.connection.send("NAMES", channel)

    def command_topic(self, rest: str) -> None:
        """
        C{/topic [#room] [text]}: show the topic, or set it.
        """
        words = rest.split(" ", 1) if rest else []
        channel = self._room(words)
        if channel is not None:
            text = " ".join(words).strip()
            self.connection.send("TOPIC", *([channel, text] if text else [channel]))

    def command_away(self, rest: str) -> None:
        """
        C{/away [message]}: away with a message, back without one.
        """
        self.connection.send("AWAY", *([rest] if rest else []))

    def command_quit(self, rest: str) -> None:
        """
        C{/quit [message]}.
        """
        self.quit(rest or None)


class ChatClientOptions(InterspersedOptions):
    """
    C{netservices chat-client [ircs://|irc://]HOST[:PORT] --nick NICK}.
    """

    synopsis = "[ircs://|irc://]HOST[:PORT] --nick NICK [options] [TEXT...]"
    longdesc = (
        "An IRC client for the terminal and for scripts.  Without a scheme it"
        f" connects with TLS (ircs://, port {CHAT_TLS_PORT}), verifying the"
        " certificate (the system's trust store, or --ca) and the host name,"
        f" or pinning it with --fingerprint; irc:// is plaintext (port {CHAT_PORT})."
        "  Interactive by default: typed lines go to the current room (the last"
        " /join'ed), /help lists the commands.  --send TARGET TEXT... sends and"
        " quits; --listen CHANNEL prints what arrives until interrupted.  Exit"
        " status: 0 when done, 1 when connecting, registering, authenticating,"
        " joining or sending fails (one line on stderr), 2 for bad usage."
    )
    optFlags = [
        ["json", None, "Print one JSON object per event (with --listen, or interactively)."],
        ["utc", None, "Print times in UTC, not local time."],
    ]
    optParameters = [
        ["nick", "n", None, "Your nick (required)."],
        ["sasl", None, None, "Log in to ACCOUNT with SASL PLAIN; the password from a prompt or --password-file."],
        ["password-file", None, None, "Read the --sasl password from the first line of this file."],
        ["ca", None, None, "PEM file of the CA (or self-signed certificate) to trust; default: the system's trust store."],
        ["fingerprint", None, None, "Accept exactly the certificate with this SHA-256 fingerprint (AB:CD:... as the server logs it, or 64 hex digits)."],
        ["server-name", None, None, "Name the certificate must match (default: HOST)."],
        ["send", None, None, "Send each TEXT argument (each line of it) to this channel or nick, then quit."],
        ["key", None, None, "The channel key for --send and --listen."],
        ["timeout", None, 30.0, "Seconds to connect and register.", positiveFloat],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, channel: str) -> None:
        """Join this channel and print what arrives until interrupted (repeatable)."""
        if not isChannel(channel):
            raise usage.UsageError(f"--listen {channel!r}: expected a channel (#room)")
        self["listen"].append(channel)

    def parseArgs(self, server: str | None = None, *texts: str) -> None:
        if server is None:
            raise usage.UsageError("expected [ircs://|irc://]HOST[:PORT]")
        try:
            self["tls"], self["host"], self["port"] = parseServer(server)
        except ValueError as e:
            raise usage.UsageError(str(e))
        self["texts"] = [line for text in texts for line in text.splitlines() if line.strip()]
        self["textArgs"] = texts

    def postOptions(self) -> None:
        nick = self["nick"]
        if nick is None:
            raise usage.UsageError("--nick NICK is required")
        if not _NICK.match(nick):
            raise usage.UsageError(f"--nick {nick!r} is not a nick (no spaces, no ,!@*?, not starting with # : & $)")
        if self["ca"] is not None and self["fingerprint"] is not None:
            raise usage.UsageError("--ca and --fingerprint: choose one")
        if not self["tls"] and (self["ca"] or self["fingerprint"] or self["server-name"]):
            raise usage.UsageError("--ca, --fingerprint and --server-name are for TLS (ircs://)")
        if self["fingerprint"] is not None:
            try:
                self["pin"] = parseFingerprint(self["fingerprint"])
            except ValueError as e:
                raise usage.UsageError(str(e))
        self._checkMode()
        self._checkSASL()

    def _checkMode(self) -> None:
        send, listen = self["send"], self["listen"]
        if send is not None and listen:
            raise usage.UsageError("--send and --listen: choose one")
        if send is not None:
            if not send or " " in send or "," in send:
                raise usage.UsageError(f"--send {send!r}: expected one channel or nick")
            if not self["texts"]:
                raise usage.UsageError("--send needs the TEXT to send")
            if self["json"]:
                raise usage.UsageError("--json is for --listen and interactive use, not --send")
        elif self["textArgs"]:
            raise usage.UsageError("TEXT arguments go with --send")
        if self["key"] is not None and not (listen or (send and isChannel(send))):
            raise usage.UsageError("--key goes with --send or --listen to a channel")

    def _checkSASL(self) -> None:
        if self["sasl"] is None:
            if self["password-file"] is not None:
                raise usage.UsageError("--password-file goes with --sasl")
            return
        if not self["sasl"] or " " in self["sasl"]:
            raise usage.UsageError(f"--sasl {self['sasl']!r}: expected an account name")
        if self["password-file"] is None and not sys.stdin.isatty():
            raise usage.UsageError(
                "--sasl: standard input is not a terminal to ask for the password; give --password-file"
            )
        host = self["host"]
        loopback = host == "localhost" or isLoopback(host)
        if not self["tls"] and not loopback:
            raise usage.UsageError("--sasl over irc:// would send the password in clear: use ircs://")

    def password(self) -> str | None:
        """
        @return: the C{--sasl} password: the first line of
            C{--password-file}, or typed at a prompt on the terminal.
        @raise ClientError: if there is none.
        """
        if self["sasl"] is None:
            return None
        if self["password-file"] is not None:
            try:
                with open(self["password-file"], encoding="utf-8") as f:
                    password = f.readline().rstrip("\r\n")
            except OSError as e:
                raise ClientError(f"cannot read {self['password-file']}: {e.strerror}")
            except UnicodeDecodeError:
                raise ClientError(f"{self['password-file']} is not UTF-8 text")
        else:
            # Ctrl-C at the prompt interrupts it (the reactor's handler
            # would only stop the reactor once the line was read).
            previous = signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                password = getpass.getpass(f"password for {self['sasl']}: ")
            except (KeyboardInterrupt, EOFError):
                raise ClientError("no password given")
            finally:
                signal.signal(signal.SIGINT, previous)
        if not password:
            raise ClientError("empty password")
        return password

    def tlsCreator(self, where: str):
        """
        @return: the client TLS to use, or L{None} for plaintext.
        """
        if not self["tls"]:
            return None
        if self["fingerprint"] is not None:
            return PinnedCertificate(self["pin"], self["server-name"] or self["host"], where)
        return tlsOptions(self["server-name"] or self["host"], self["ca"])

    def mode(self) -> str:
        """
        @return: C{"send"}, C{"listen"} or C{"interactive"}.
        """
        if self["send"] is not None:
            return "send"
        return "listen" if self["listen"] else "interactive"

    def print(self, session: ChatSession, event: dict) -> None:
        """
        Print an event, as text or JSON.
        """
        if self["json"]:
            line = jsonEvent(event)
        else:
            line = describeEvent(event, session.me, self["utc"])
        try:
            print(line, flush=True)
        except BrokenPipeError:
            # Whoever read the output has gone (| head): leave, quietly.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            session.quit()

    async def run(self, reactor) -> int:
        """
        Connect, register, and do what the mode says; Ctrl-C (or SIGTERM)
        quits cleanly.

        @return: the exit status.
        """
        # Here, not at the top: netservices.cli imports this module.
        return await untilInterrupted(reactor, ChatClient(reactor, self).run())


class ChatClient:
    """
    One run of C{netservices chat-client}.
    """

    def __init__(self, reactor, options: ChatClientOptions) -> None:
        self.reactor = reactor
        self.options = options
        self.where = joinHostPort(options["host"], options["port"])
        self.sent = False

    async def run(self) -> int:
        """
        @return: the exit status.
        @raise ClientError: when something fails.
        """
        options, mode = self.options, self.options.mode()
        password = options.password()
        sasl = None if password is None else (options["sasl"], password)
        connection = ChatConnection(
            options["nick"],
            self.where,
            options.tlsCreator(self.where),
            sasl,
            NICK_TRIES if mode == "interactive" else 0,
        )
        output = None if mode == "send" else (lambda event: options.print(session, event))
        session = ChatSession(connection, self.reactor, output, mode == "interactive")
        connection.notify = session.info
        try:
            await connectStream(
                self.reactor, options["host"], options["port"], options["timeout"],
                connection, connection.ready,
            )
            registering = connection.register()
            registering.addTimeout(options["timeout"], self.reactor)
            try:
                await registering
            except DeferredTimeoutError:
                raise ClientError(f"{self.where}: not registered within {options['timeout']:g} s")
        except BaseException as e:
            if connection.transport is not None and not connection.lost:
                connection.transport.abortConnection()
            if isinstance(e, CancelledError):
                raise ClientError("interrupted before registration")
            if options["tls"] and "certificate verify failed" in str(e):
                raise ClientError(
                    f"{e} (a self-signed server? --fingerprint as it logs it, or --ca FILE)"
                )
            raise
        try:
            return await getattr(self, mode)(session)
        except CancelledError:
            # Interrupted: leave cleanly.
            session.quit()
            await self.closed(session)
            if mode == "send" and not self.sent:
                raise ClientError("interrupted before every message was sent")
            return 0

    async def closed(self, session: ChatSession) -> str | None:
        """
        Wait for the server to close the connection (after our C{QUIT});
        close it if it does not within L{QUIT_TIMEOUT}.

        @return: the reason of the server's C{ERROR}, if any.
        """
        waiting = session.connection.whenClosed()
        waiting.addTimeout(QUIT_TIMEOUT, self.reactor)
        try:
            return await waiting
        except DeferredTimeoutError:
            session.connection.transport.abortConnection()
            return None

    async def ended(self, session: ChatSession) -> int:
        """
        Wait for the end of the connection.

        @return: 0 if we had quit.
        @raise ClientError: if the server closed it first.
        """
        await session.connection.whenClosed()
        if session.quitting:
            return 0
        raise session.connection.closedError()

    async def send(self, session: ChatSession) -> int:
        """
        C{--send TARGET TEXT...}.
        """
        options = self.options
        target = options["send"]
        if isChannel(target):
            await self.joined(session, target)
        try:
            for text in options["texts"]:
                session.say(target, text)
        except EncodingError as e:
            raise ClientError(f"cannot send to {target!r}: {e}")
        errors = await self.confirmed(session)
        if errors:
            raise ClientError(f"not sent: {errors[0]}")
        self.sent = True
        session.quit()
        await self.closed(session)
        return 0

    async def joined(self, session: ChatSession, channel: str) -> None:
        """
        Join C{channel} (with C{--key}) and wait until we are in.

        @raise ClientError: if we cannot join, or the connection ends.
        """
        try:
            joining = session.join(channel, self.options["key"])
        except EncodingError as e:
            raise ClientError(f"cannot join {channel!r}: {e}")
        await joining

    async def confirmed(self, session: ChatSession) -> list[str]:
        """
        @return: the errors drawn by what was sent, once the server has
            answered a C{PING} sent after it.
        """
        return await session.confirm()

    async def listen(self, session: ChatSession) -> int:
        """
        C{--listen CHANNEL}: print what arrives until interrupted.
        """
        for channel in self.options["listen"]:
            await self.joined(session, channel)
        return await self.ended(session)

    async def interactive(self, session: ChatSession) -> int:
        """
        Each line of standard input is typed; at its end, quit.
        """
        session.info("type /help for the commands")
        reading = Deferred.fromCoroutine(self.typing(session))
        try:
            return await self.ended(session)
        finally:
            reading.cancel()

    async def typing(self, session: ChatSession) -> None:
        """
        Read standard input to its end, then quit.
        """
        try:
            async for line in LineReader(self.reactor, 0, MAX_INPUT):
                session.typed(line.decode("utf-8", "replace"))
                if session.quitting:
                    return
            session.quit()
        except CancelledError:
            pass
        except ClientError as e:
            session.error(str(e))
            session.quit()


def _settle(waiting: Deferred | None, result) -> None:
    """
    Fire C{waiting} with C{result} (a L{Failure} fails it), unless there is
    nothing to fire or it fired already (it was cancelled, say).
    """
    if waiting is None or waiting.called:
        return
    if isinstance(result, Failure):
        waiting.errback(result)
    else:
        waiting.callback(result)
