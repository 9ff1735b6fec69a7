# -*- test-case-name: tests.chat.test_protocol -*-
"""
One IRC client connection: framing, registration, commands, flood control,
send queue and keep-alive.  What users and channels are lives in the chat
service (L{netservices.chat.interfaces.IChatService}); this module turns
lines into calls on it and its answers into numerics.

The IRCv3 commands (TAGMSG, SETNAME, CHATHISTORY, MONITOR) and labeled
responses are in L{netservices.chat.extensions}, the capability and
account commands in L{netservices.chat.login}.

Limits, all in L{ConnectionSettings}:
 - lines of at most 512 bytes, plus a tag section of at most 4094 bytes
   (IRCv3 message-tags; longer ones get 417 and are dropped);
 - flood control by fake lag: a burst of lines is handled at once, then a
   steady rate; lines beyond it wait in the receive queue, and a client
   whose receive queue passes C{recvq} bytes is disconnected with
   C{Excess Flood};
 - a send queue: when the client does not read and the transport's own
   buffer is full, lines wait in the connection's queue, and a client whose
   queue passes C{sendq} bytes is disconnected with C{SendQ exceeded}:
   nobody waits for a slow reader;
 - registration must finish within C{registrationTimeout}; a client silent
   for C{pingInterval} is sent a PING and disconnected if nothing comes in
   C{pongTimeout}.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import attrs
from twisted.internet.interfaces import (
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netservices import __version__
from netservices._common.eager import setNoDelay
from netservices._common.logs import RefusalLog
from netservices._common.ratelimit import TokenBucket
from netservices.chat import numerics
from netservices.chat.extensions import ExtensionCommands, isupportExtensions
from netservices.chat.interfaces import IChatClient
from netservices.chat.login import AccountCommands, AccountSettings, NeedMoreParams
from netservices.chat.service import (
    CHANNEL_MODES,
    ChatError,
    ChatService,
    ModeChange,
    User,
    modeParams,
    takesArgument,
)
from netservices.chat.wire import (
    AWAYLEN,
    CHANNELLEN,
    CHANTYPES,
    KICKLEN,
    MAX_CLIENT_TAGS,
    MAX_LINE,
    NICKLEN,
    TOO_LONG,
    TOPICLEN,
    USERLEN,
    EncodingError,
    LineFramer,
    Refusal,
    cleanUsername,
    echoParam,
    encode,
    foldCase,
    maskPattern,
    parseLine,
    truncateText,
)


@attrs.frozen
class ConnectionSettings:
    """
    Limits of each client connection (see the module docstring).

    @ivar floodRate: lines per second after the burst; 0 turns flood
        control off.
    """

    registrationTimeout: float = 30.0
    tlsHandshakeTimeout: float = 10.0
    pingInterval: float = 120.0
    pongTimeout: float = 20.0
    recvq: int = 8192
    sendq: int = 262144
    floodBurst: int = 10
    floodRate: float = 2.0
    closeTimeout: float = 10.0


@attrs.frozen
class ServerInfo:
    """
    What the server tells clients about itself.

    @ivar motd: the message of the day, one entry per line, or L{None} for
        none (422).
    """

    name: str
    network: str = "netservices"
    created: str = ""
    motd: tuple[str, ...] | None = None

    @property
    def version(self) -> str:
        return f"netservices-{__version__}"


def isupportTokens(info: ServerInfo, service: ChatService) -> list[str]:
    """
    @return: the ISUPPORT (005) tokens describing this server.
    """
    limits = service.limits
    return [
        f"AWAYLEN={AWAYLEN}",
        "CASEMAPPING=ascii",
        f"CHANLIMIT=#:{limits.maxChannels}",
        "CHANMODES=b,k,l,imnst",
        f"CHANNELLEN={CHANNELLEN}",
        f"CHANTYPES={CHANTYPES}",
        "ELIST=",
        f"KICKLEN={KICKLEN}",
        f"MAXLIST=b:{limits.maxBans}",
        f"MAXTARGETS={limits.maxTargets}",
        "MODES=4",
        f"NETWORK={info.network}",
        f"NICKLEN={NICKLEN}",
        "PREFIX=(ov)@+",
        f"TARGMAX=PRIVMSG:{limits.maxTargets},NOTICE:{limits.maxTargets},JOIN:,PART:,KICK:4,WHOIS:1,NAMES:,LIST:",
        f"TOPICLEN={TOPICLEN}",
        f"USERLEN={USERLEN}",
        *isupportExtensions(service),
    ]


#: Commands accepted before registration.
BEFORE_REGISTRATION = frozenset(
    {"CAP", "AUTHENTICATE", "PASS", "NICK", "USER", "PING", "PONG", "QUIT", "REGISTER"}
)

#: Parameter-taking modes per MODE command (ISUPPORT MODES).
MODES_PER_COMMAND = 4


@implementer(IChatClient, IPushProducer, IHandshakeListener)
class ChatConnection(AccountCommands, ExtensionCommands, Protocol):
    """
    One client connection.  It is its transport's streaming producer: when
    the transport's buffer is full (the client is not reading), lines wait
    in L{_queue}, bounded by C{sendq}.

    @ivar user: the user of this connection in the chat service.
    @ivar lastReceived: when data last came from the client.
    @ivar pingSent: when the server's PING went out, L{None} if none is
        pending.
    """

    factory: ChatFactory

    #: Relayed messages are given to this connection (see
    #: L{netservices.chat.service.Channel.receivers}).
    receives = True

    # Thousands of connections at once: what each one holds is kept in
    # slots (the instance dict keeps only what Protocol itself sets).
    __slots__ = (
        "user", "connectedAt", "lastReceived", "pingSent", "framer", "bucket",
        "_closingSince", "_quitReason", "_capNegotiating", "_username",
        "_realname", "_drainCall", "_lagged", "_laggedBytes", "_out", "_queue",
        "_queued", "_handshaking", "capabilities", "_cap302", "_sasl",
        "_authenticating", "_password", "nickDeadline", "_lineTags",
        "_batches",
    )

    @property
    def clock(self) -> IReactorTime:
        return self.factory.clock

    @property
    def service(self) -> ChatService:
        return self.factory.service

    @property
    def settings(self) -> ConnectionSettings:
        return self.factory.settings

    def connectionMade(self) -> None:
        setNoDelay(self.transport)
        peer = self.transport.getPeer()
        host = getattr(peer, "host", None) or "localhost"
        self.begin(host, ISSLTransport.providedBy(self.transport))
        self.transport.registerProducer(self, True)
        self.factory.connections.add(self)

    def begin(self, host: str, secure: bool) -> None:
        """
        Set up a new connection from C{host} (over TLS if C{secure}) and
        its user in the chat service.
        """
        factory = self.factory
        self.user = factory.service.connect(self, host, secure)
        now = factory.clock.seconds()
        self.connectedAt = self.lastReceived = now
        self.pingSent = self._closingSince = self._quitReason = None
        self._capNegotiating = False
        self._username = None
        self._realname = ""
        self._drainCall = None
        self._handshaking = self.user.secure
        self.capabilities: frozenset[str] = frozenset()
        self._cap302 = False
        self._sasl: tuple[str, str] | None = None
        self._authenticating = False
        self._password: str | None = None
        self.nickDeadline: float | None = None
        self._lineTags: tuple[tuple[str, str], ...] = ()
        self._batches = 0
        self.framer = LineFramer(MAX_LINE, MAX_CLIENT_TAGS)
        rate = factory.settings.floodRate
        self.bucket = TokenBucket(rate, factory.settings.floodBurst, now) if rate > 0 else None
        # Lines waiting for flood control; made only when some must wait.
        self._lagged: deque[bytes] | None = None
        self._laggedBytes = 0
        # Lines for this client since the last flush (see ChatFactory.flush).
        self._out: list[bytes] | None = None
        # Lines waiting while the transport is paused, and their bytes:
        # what the send queue limit applies to.
        self._queue: list[bytes] | None = None
        self._queued = 0

    # Input

    def dataReceived(self, data: bytes) -> None:
        if self._closingSince is not None:
            return
        try:
            factory = self.factory
            now = self.lastReceived = factory.clock.seconds()
            self.pingSent = None
            lines = self.framer.feed(data)
            counts = factory.counts
            counts["bytesReceived"] += len(data)
            counts["linesReceived"] += len(lines)
            bucket = self.bucket
            for index, line in enumerate(lines):
                if bucket is not None and (
                    self._lagged is not None or not bucket.take(now)
                ):
                    self._lag(lines[index:])
                    return
                self._handleLine(line)
                if self._closingSince is not None:
                    return
        except Exception:
            self.factory.log.failure("chat connection failed on input")
            self.disconnect("Internal error")

    def _lag(self, lines: list[bytes]) -> None:
        """
        Hold lines beyond the flood budget until it allows them.
        """
        if self._lagged is None:
            self._lagged = deque()
        self._lagged.extend(lines)
        self._laggedBytes += sum(len(line) + 2 for line in lines)
        self._drain()

    def _drain(self) -> None:
        """
        Handle the waiting lines the flood budget allows; schedule the
        rest; disconnect if too much is waiting.
        """
        self._drainCall = None
        bucket, lagged = self.bucket, self._lagged
        while lagged and self._closingSince is None:
            if not bucket.take(self.factory.clock.seconds()):
                break
            line = lagged.popleft()
            self._laggedBytes -= len(line) + 2
            self._handleLine(line)
        if self._closingSince is not None:
            return
        if not lagged:
            self._lagged = None
            return
        if self._laggedBytes + self.framer.buffered > self.settings.recvq:
            self.refuse("excess-flood")
            self.disconnect("Excess Flood")
            return
        delay = max(0.0, (1.0 - bucket.tokens) / bucket.rate)
        self._drainCall = self.clock.callLater(delay, self._drainLater)

    def _drainLater(self) -> None:
        try:
            self._drain()
        except Exception:
            self.factory.log.failure("chat connection failed on input")
            self.disconnect("Internal error")

    def _handleLine(self, line: bytes) -> None:
        if line is TOO_LONG or not line:
            self.refuse("line-too-long")
            self.sendNumeric(numerics.ERR_INPUTTOOLONG, "Input line was too long")
            return
        message = parseLine(line)
        if isinstance(message, Refusal):
            self.refuse(message.reason)
            return
        self._lineTags = tags = message.tags
        if tags and "labeled-response" in self.capabilities:
            label = message.tag("label")
            if label and len(label.encode("utf-8")) <= 64:
                self.labelled(label, self._dispatch, message)
                return
        self._dispatch(message)

    def _dispatch(self, message) -> None:
        """
        Run the handler of one parsed message.
        """
        command = message.command
        if not self.user.registered and command not in BEFORE_REGISTRATION:
            if hasattr(self, "irc_" + command):
                self.sendNumeric(numerics.ERR_NOTREGISTERED, "You have not registered")
            else:
                self.sendNumeric(numerics.ERR_UNKNOWNCOMMAND, command, "Unknown command")
            return
        handler: Callable | None = getattr(self, "irc_" + command, None)
        if handler is None:
            self.sendNumeric(numerics.ERR_UNKNOWNCOMMAND, command, "Unknown command")
            return
        try:
            handler(message.params)
        except ChatError as e:
            self.sendNumeric(e.numeric, *e.params)
        except NeedMoreParams:
            self.sendNumeric(numerics.ERR_NEEDMOREPARAMS, command, "Not enough parameters")
        except Exception:
            # A bug must cost one command, not the connection or the server.
            self.factory.log.failure("chat command {command} failed", command=command)
            self.sendNumeric(numerics.ERR_UNKNOWNERROR, command, "Internal error")

    def refuse(self, reason: str) -> None:
        """
        Count and log (rate-limited) something refused from this client.
        """
        self.factory.refusals.refuse(reason, self.user.host, nick=self.user.nick)

    # Output

    def deliver(self, line: bytes) -> None:
        # Lines are collected and written once per reactor turn (one
        # system call per client however many messages the turn relayed
        # to it), or held while the transport is paused.
        queue = self._queue
        if queue is None:
            out = self._out
            if out is None:
                self._out = [line]
                self.factory.markDirty(self)
            else:
                out.append(line)
            return
        if self._closingSince is not None:
            return
        queue.append(line)
        self._queued += len(line)
        self._checkSendQueue()

    def _checkSendQueue(self) -> None:
        if self._queued > self.factory.settings.sendq:
            self.refuse("sendq-exceeded")
            self.disconnect("SendQ exceeded", abort=True)

    def flush(self) -> None:
        """
        Write the lines collected since the last flush.
        """
        out = self._out
        if out is None:
            return
        self._out = None
        if self._closingSince is not None:
            return
        if self._queue is not None:
            self._queue[:0] = out
            self._queued += sum(len(line) for line in out)
            self._checkSendQueue()
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        self.factory.counts["bytesSent"] += len(data)
        self.transport.write(data)

    def pauseProducing(self) -> None:
        if self._queue is None:
            self._queue = []

    def resumeProducing(self) -> None:
        queue, self._queue, self._queued = self._queue, None, 0
        if self._closingSince is not None:
            return
        if queue:
            self.transport.writeSequence(queue)

    def stopProducing(self) -> None:
        pass

    def send(self, command: str, *params: str, source: str | None = None) -> None:
        """
        Send one message from the server (or C{source}).
        """
        self.deliver(encode(source or self.service.serverName, command, *params))

    def sendNumeric(self, numeric: str, *params: str) -> None:
        """
        Send a numeric reply addressed to this user.  Middle parameters
        that echo a name a client sent and cannot be sent as they are
        (given as a last parameter with spaces or a leading C{:}, or too
        long for the line) are cut or replaced: see L{echoParam}.
        """
        server, nick = self.service.serverName, self.user.nick or "*"
        try:
            line = encode(server, numeric, nick, *params)
        except EncodingError:
            middle = [echoParam(param) for param in params[:-1]]
            line = encode(server, numeric, nick, *middle, *params[-1:])
        self.deliver(line)

    # Closing

    def disconnect(self, reason: str, abort: bool = False) -> None:
        """
        Close the connection with an C{ERROR} line; peers are told at once
        (a QUIT with C{reason}) and the nick is free again.

        @param abort: drop what is still queued instead of sending it
            first (the client is not reading).
        """
        if self._closingSince is not None:
            return
        self._closingSince = self.clock.seconds()
        self._leave(reason)
        out, self._out = self._out, None
        if abort:
            self._queue = None
            self.transport.abortConnection()
            return
        queue, self._queue = (out or []) + (self._queue or []), None
        # Twisted's TLS transport only closes once its producer is
        # unregistered: without this a TLS client stayed connected until
        # closeTimeout and was then aborted.
        self.transport.unregisterProducer()
        if queue:
            self.transport.writeSequence(queue)
        self.transport.write(
            encode(None, "ERROR", f"Closing Link: {self.user.host} ({reason})")
        )
        self.transport.loseConnection()

    def drain(self) -> None:
        """
        Say goodbye: the server is stopping.
        """
        self.disconnect("Server shutting down")

    def _leave(self, reason: str) -> None:
        if self._quitReason is None:
            self._quitReason = reason
            self.service.quit(self.user, reason)

    def connectionLost(self, reason: Failure = None) -> None:
        self.factory.connections.discard(self)
        if self._drainCall is not None and self._drainCall.active():
            self._drainCall.cancel()
        self._drainCall = None
        self._lagged = self._queue = self._out = None
        self._leave("Connection closed")

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is done: its timeout no longer applies.
        """
        self._handshaking = False

    def checkTimers(self, now: float) -> None:
        """
        Enforce the TLS handshake and registration timeouts, the
        keep-alive, nick ownership and the time allowed to close; called
        about once a second by the factory.
        """
        if self._closingSince is not None:
            if now - self._closingSince >= self.settings.closeTimeout:
                self.transport.abortConnection()
            return
        settings = self.settings
        if self._handshaking and now - self.connectedAt >= settings.tlsHandshakeTimeout:
            self.refuse("tls-handshake-timeout")
            self._closingSince = now
            self._leave("TLS handshake timed out")
            self.transport.abortConnection()
            return
        if self.nickDeadline is not None and now >= self.nickDeadline:
            self.renameToGuest()
        if not self.user.registered:
            if now - self.connectedAt >= settings.registrationTimeout:
                self.refuse("registration-timeout")
                self.disconnect("Registration timed out")
        elif self.pingSent is not None:
            if now - self.pingSent >= settings.pongTimeout:
                self.refuse("ping-timeout")
                self.disconnect(f"Ping timeout: {int(now - self.lastReceived)} seconds")
        elif now - self.lastReceived >= settings.pingInterval:
            self.pingSent = now
            self.deliver(encode(None, "PING", self.service.serverName))

    # Registration

    def irc_NICK(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            self.sendNumeric(numerics.ERR_NONICKNAMEGIVEN, "No nickname given")
            return
        nick = params[0]
        try:
            self.service.setNick(self.user, nick)
        except ChatError as e:
            self.sendNumeric(e.numeric, truncateText(nick, NICKLEN + 10), *e.params[1:])
            return
        if self.user.registered:
            self.nickDeadline = None
            self.checkNickOwner()
        self._tryRegister()

    def irc_USER(self, params: tuple[str, ...]) -> None:
        if self.user.registered or self._username is not None:
            self.sendNumeric(numerics.ERR_ALREADYREGISTRED, "You may not reregister")
            return
        if len(params) < 4 or not params[0]:
            raise NeedMoreParams()
        # No ident lookup: '~' says the user name is the client's claim.
        self._username = "~" + (cleanUsername(params[0]) or "user")[: USERLEN - 1]
        self._realname = truncateText(params[3], 100)
        self._tryRegister()

    def _tryRegister(self) -> None:
        user = self.user
        if user.registered or user.nick is None or self._username is None:
            return
        if self._capNegotiating or self._authenticating or self._closingSince is not None:
            return
        if self._password is not None and user.account is None:
            self._passwordLogin()
            if self._authenticating or self._closingSince is not None:
                return
        if self.factory.accounts.requireAuth and user.account is None:
            self.refuse("not-logged-in")
            self.disconnect("This server needs you to log in (SASL or PASS)")
            return
        self.completeRegistration()

    def completeRegistration(self) -> None:
        """
        Registration is complete: register the user and welcome it.
        """
        self.service.register(self.user, self._username, self._realname)
        self._welcome()
        self.checkNickOwner()

    def _welcome(self) -> None:
        info, user = self.factory.info, self.user
        self.sendNumeric(
            numerics.RPL_WELCOME,
            f"Welcome to the {info.network} IRC Network {user.prefix}",
        )
        self.sendNumeric(
            numerics.RPL_YOURHOST,
            f"Your host is {info.name}, running version {info.version}",
        )
        self.sendNumeric(numerics.RPL_CREATED, f"This server was created {info.created}")
        self.sendNumeric(
            numerics.RPL_MYINFO, info.name, info.version, "iow", "biklmnostv", "bklov"
        )
        tokens = isupportTokens(info, self.service)
        for start in range(0, len(tokens), 12):
            self.sendNumeric(
                numerics.RPL_ISUPPORT,
                *tokens[start : start + 12],
                "are supported by this server",
            )
        self.irc_LUSERS(())
        self.irc_MOTD(())

    def irc_LUSERS(self, params: tuple[str, ...]) -> None:
        service = self.service
        users, invisible = service.registeredCount, service.invisibleCount
        self.sendNumeric(
            numerics.RPL_LUSERCLIENT,
            f"There are {users - invisible} users and {invisible} invisible on 1 servers",
        )
        self.sendNumeric(numerics.RPL_LUSEROP, "0", "operator(s) online")
        if service.unregisteredCount:
            self.sendNumeric(
                numerics.RPL_LUSERUNKNOWN, str(service.unregisteredCount),
                "unknown connection(s)",
            )
        self.sendNumeric(
            numerics.RPL_LUSERCHANNELS, str(len(service.channels)), "channels formed"
        )
        self.sendNumeric(numerics.RPL_LUSERME, f"I have {users} clients and 0 servers")
        self.sendNumeric(
            numerics.RPL_LOCALUSERS, str(users), str(users),
            f"Current local users {users}, max {users}",
        )
        self.sendNumeric(
            numerics.RPL_GLOBALUSERS, str(users), str(users),
            f"Current global users {users}, max {users}",
        )

    def irc_MOTD(self, params: tuple[str, ...]) -> None:
        info = self.factory.info
        if info.motd is None:
            self.sendNumeric(numerics.ERR_NOMOTD, "MOTD File is missing")
            return
        self.sendNumeric(numerics.RPL_MOTDSTART, f"- {info.name} Message of the day - ")
        for line in info.motd:
            self.sendNumeric(numerics.RPL_MOTD, f"- {line}")
        self.sendNumeric(numerics.RPL_ENDOFMOTD, "End of /MOTD command.")

    # Connection upkeep

    def irc_PING(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            self.sendNumeric(numerics.ERR_NOORIGIN, "No origin specified")
            return
        name = self.service.serverName
        self.send("PONG", name, params[0])

    def irc_PONG(self, params: tuple[str, ...]) -> None:
        """
        Nothing to do: any line from the client counts as alive.
        """

    def irc_QUIT(self, params: tuple[str, ...]) -> None:
        reason = params[0] if params and params[0] else ""
        self.disconnect(truncateText(f"Quit: {reason}", KICKLEN) if reason else "Client Quit")

    # Channels

    def irc_JOIN(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            raise NeedMoreParams()
        if params[0] == "0":
            self.service.partAll(self.user)
            return
        names = params[0].split(",")
        keys = params[1].split(",") if len(params) > 1 else []
        for index, name in enumerate(names):
            if not name:
                continue
            key = keys[index] if index < len(keys) and keys[index] else None
            try:
                channel = self.service.join(self.user, name, key)
            except ChatError as e:
                self.sendNumeric(e.numeric, *e.params)
                continue
            if channel is None:
                continue
            if channel.topic:
                self._sendTopic(channel)
            self._sendNames(channel)
            self.replayHistory(channel)

    def irc_PART(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            raise NeedMoreParams()
        reason = truncateText(params[1], KICKLEN) if len(params) > 1 and params[1] else None
        for name in params[0].split(","):
            if name:
                self._each(self.service.part, self.user, name, reason)

    def _each(self, function: Callable, *args) -> None:
        try:
            function(*args)
        except ChatError as e:
            self.sendNumeric(e.numeric, *e.params)

    def irc_NAMES(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            self.sendNumeric(numerics.RPL_ENDOFNAMES, "*", "End of /NAMES list")
            return
        for name in params[0].split(","):
            channel = self.service.findChannel(name) if name else None
            if channel is not None and self.service.channelVisible(self.user, channel):
                self._sendNames(channel)
            elif name:
                self.sendNumeric(numerics.RPL_ENDOFNAMES, name, "End of /NAMES list")

    def _sendNames(self, channel) -> None:
        user = self.user
        member = user in channel.members
        symbol = "@" if "s" in channel.modes else "="
        every = "multi-prefix" in self.capabilities
        full = "userhost-in-names" in self.capabilities
        names = [
            channel.prefixOf(other, every) + (other.prefix if full else other.nick)
            for other in channel.members
            if member or not other.invisible
        ]
        head = len(
            encode(self.service.serverName, numerics.RPL_NAMREPLY, user.nick, symbol, channel.name, "x y")
        ) - 3
        room = MAX_LINE - 2 - head
        chunk: list[str] = []
        size = 0
        for name in names:
            if chunk and size + 1 + len(name) > room:
                self.sendNumeric(numerics.RPL_NAMREPLY, symbol, channel.name, " ".join(chunk))
                chunk, size = [], 0
            size += len(name) + (1 if chunk else 0)
            chunk.append(name)
        if chunk:
            self.sendNumeric(numerics.RPL_NAMREPLY, symbol, channel.name, " ".join(chunk))
        self.sendNumeric(numerics.RPL_ENDOFNAMES, channel.name, "End of /NAMES list")

    def _sendTopic(self, channel) -> None:
        self.sendNumeric(numerics.RPL_TOPIC, channel.name, channel.topic)
        self.sendNumeric(
            numerics.RPL_TOPICWHOTIME, channel.name, channel.topicSetter,
            str(channel.topicTime),
        )

    def irc_TOPIC(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            raise NeedMoreParams()
        name = params[0]
        if len(params) > 1:
            self.service.setTopic(self.user, name, params[1])
            return
        channel = self.service.findChannel(name)
        if channel is None:
            raise ChatError(numerics.ERR_NOSUCHCHANNEL, name, "No such channel")
        if not self.service.channelVisible(self.user, channel):
            raise ChatError(numerics.ERR_NOTONCHANNEL, channel.name, "You're not on that channel")
        if channel.topic:
            self._sendTopic(channel)
        else:
            self.sendNumeric(numerics.RPL_NOTOPIC, channel.name, "No topic is set")

    def irc_LIST(self, params: tuple[str, ...]) -> None:
        service, user = self.service, self.user
        if params and params[0] and params[0][0] in CHANTYPES:
            found = (service.findChannel(name) for name in params[0].split(","))
            channels = [channel for channel in found if channel is not None]
        else:
            channels = list(service.allChannels())
        self.sendNumeric(numerics.RPL_LISTSTART, "Channel", "Users  Name")
        for channel in channels:
            if service.channelVisible(user, channel):
                self.sendNumeric(
                    numerics.RPL_LIST, channel.name, str(len(channel.members)), channel.topic
                )
        self.sendNumeric(numerics.RPL_LISTEND, "End of /LIST")

    def irc_KICK(self, params: tuple[str, ...]) -> None:
        if len(params) < 2 or not params[0] or not params[1]:
            raise NeedMoreParams()
        reason = params[2] if len(params) > 2 and params[2] else self.user.nick
        for nick in params[1].split(",")[:4]:
            if nick:
                self._each(self.service.kick, self.user, params[0], nick, reason)

    def irc_INVITE(self, params: tuple[str, ...]) -> None:
        if len(params) < 2 or not params[0] or not params[1]:
            raise NeedMoreParams()
        self.service.invite(self.user, params[0], params[1])
        target = self.service.findUser(params[0])
        channel = self.service.findChannel(params[1])
        self.sendNumeric(numerics.RPL_INVITING, target.nick, channel.name)
        if target.away is not None:
            self.sendNumeric(numerics.RPL_AWAY, target.nick, target.away)

    def irc_MODE(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            raise NeedMoreParams()
        target = params[0]
        if target[0] in CHANTYPES:
            self._channelMode(target, params[1:])
        else:
            self._userMode(target, params[1:])

    def _channelMode(self, name: str, params: tuple[str, ...]) -> None:
        service, user = self.service, self.user
        channel = service.findChannel(name)
        if channel is None:
            raise ChatError(numerics.ERR_NOSUCHCHANNEL, name, "No such channel")
        if not params or not params[0]:
            self.sendNumeric(
                numerics.RPL_CHANNELMODEIS, channel.name,
                *channel.modeString(user in channel.members),
            )
            self.sendNumeric(numerics.RPL_CREATIONTIME, channel.name, str(channel.created))
            return
        arguments = list(params[1:])
        changes: list[ModeChange] = []
        listBans = False
        sign = "+"
        unknown: list[str] = []
        for mode in params[0]:
            if mode in "+-":
                sign = mode
                continue
            if mode not in CHANNEL_MODES:
                if mode not in unknown:
                    unknown.append(mode)
                continue
            argument = None
            if takesArgument(sign, mode):
                if arguments:
                    argument = arguments.pop(0)
                elif mode == "b":
                    listBans = True
                    continue
                elif not (mode == "k" and sign == "-"):
                    self.sendNumeric(
                        numerics.ERR_INVALIDMODEPARAM, channel.name, mode, "*",
                        "You must specify a parameter for this mode",
                    )
                    continue
            if sum(c.argument is not None for c in changes) >= MODES_PER_COMMAND and argument:
                continue
            changes.append(ModeChange(sign, mode, argument))
        for mode in unknown:
            self.sendNumeric(numerics.ERR_UNKNOWNMODE, truncateText(mode, 4), "is an unknown mode char to me")
        if listBans:
            for mask in channel.bans:
                self.sendNumeric(numerics.RPL_BANLIST, channel.name, mask)
            self.sendNumeric(numerics.RPL_ENDOFBANLIST, channel.name, "End of channel ban list")
        if changes:
            _, errors = service.changeChannelModes(user, channel.name, changes)
            for error in errors:
                self.sendNumeric(error.numeric, *error.params)

    def _userMode(self, nick: str, params: tuple[str, ...]) -> None:
        user = self.user
        if foldCase(nick) != user.folded:
            if self.service.findUser(nick) is None:
                raise ChatError(numerics.ERR_NOSUCHNICK, nick, "No such nick/channel")
            raise ChatError(numerics.ERR_USERSDONTMATCH, "Can't change mode for other users")
        if not params or not params[0]:
            modes = "".join(
                letter for letter, on in (("i", user.invisible), ("o", user.oper), ("w", user.wallops)) if on
            )
            self.sendNumeric(numerics.RPL_UMODEIS, "+" + modes)
            return
        sign, unknown = "+", False
        wanted = {"i": user.invisible, "o": user.oper, "w": user.wallops}
        for mode in params[0]:
            if mode in "+-":
                sign = mode
            elif mode in "iw" or (mode == "o" and sign == "-"):
                # +o only through OPER.
                wanted[mode] = sign == "+"
            elif mode != "o":
                unknown = True
        changes = []
        if wanted["i"] != user.invisible:
            self.service.setInvisible(user, wanted["i"])
            changes.append(("+" if wanted["i"] else "-") + "i")
        if wanted["w"] != user.wallops:
            user.wallops = wanted["w"]
            changes.append(("+" if wanted["w"] else "-") + "w")
        if wanted["o"] != user.oper:
            user.oper = False
            changes.append("-o")
        if changes:
            self.send("MODE", user.nick, modeParams(
                [ModeChange(change[0], change[1]) for change in changes]
            )[0], source=user.nick)
        if unknown:
            self.sendNumeric(numerics.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")

    # Messages

    def irc_PRIVMSG(self, params: tuple[str, ...]) -> None:
        self._message("PRIVMSG", params)

    def irc_NOTICE(self, params: tuple[str, ...]) -> None:
        self._message("NOTICE", params)

    def _message(self, command: str, params: tuple[str, ...]) -> None:
        # No error is ever sent back for a NOTICE (modern IRC), so that two
        # automatons cannot loop.
        quiet = command == "NOTICE"
        if not params or not params[0]:
            if not quiet:
                self.sendNumeric(numerics.ERR_NORECIPIENT, f"No recipient given ({command})")
            return
        if len(params) < 2 or not params[1]:
            if not quiet:
                self.sendNumeric(numerics.ERR_NOTEXTTOSEND, "No text to send")
            return
        text = params[1]
        targets = list(dict.fromkeys(t for t in params[0].split(",") if t))
        limit = self.service.limits.maxTargets
        for target in targets[:limit]:
            try:
                recipient = self.service.sendMessage(
                    self.user, command, target, text,
                    self.clientTags() if self._lineTags else (),
                )
            except ChatError as e:
                if not quiet:
                    self.sendNumeric(e.numeric, *e.params)
                continue
            if recipient is not None and recipient.away is not None and not quiet:
                self.sendNumeric(numerics.RPL_AWAY, recipient.nick, recipient.away)
        if not quiet:
            for target in targets[limit:]:
                self.sendNumeric(
                    numerics.ERR_TOOMANYTARGETS, truncateText(target, 64) or "*",
                    "Too many recipients",
                )

    # Users

    def irc_AWAY(self, params: tuple[str, ...]) -> None:
        message = params[0] if params else ""
        self.service.setAway(self.user, message or None)
        if message:
            self.sendNumeric(numerics.RPL_NOWAWAY, "You have been marked as being away")
        else:
            self.sendNumeric(numerics.RPL_UNAWAY, "You are no longer marked as being away")

    def irc_ISON(self, params: tuple[str, ...]) -> None:
        if not params:
            raise NeedMoreParams()
        found = []
        for nick in " ".join(params).split()[:64]:
            user = self.service.findUser(nick)
            if user is not None and user.nick not in found:
                found.append(user.nick)
        self.sendNumeric(numerics.RPL_ISON, " ".join(found))

    def irc_USERHOST(self, params: tuple[str, ...]) -> None:
        if not params:
            raise NeedMoreParams()
        replies = []
        for nick in params[:5]:
            user = self.service.findUser(nick)
            if user is not None:
                state = "-" if user.away is not None else "+"
                replies.append(f"{user.nick}={state}{user.username}@{user.host}")
        self.sendNumeric(numerics.RPL_USERHOST, " ".join(replies))

    def irc_WHO(self, params: tuple[str, ...]) -> None:
        service, me = self.service, self.user
        mask = params[0] if params and params[0] else "*"
        replies: list[tuple[str, User]] = []
        if mask[0] in CHANTYPES:
            channel = service.findChannel(mask)
            if channel is not None and service.channelVisible(me, channel):
                member = me in channel.members
                replies = [
                    (channel.name, other)
                    for other in channel.members
                    if member or not other.invisible
                ]
        else:
            exact = service.findUser(mask)
            if exact is not None:
                replies = [("*", exact)]
            else:
                pattern = maskPattern(mask if mask not in ("0",) else "*")
                for other in service.allUsers():
                    if len(replies) >= 100:
                        break
                    if service.canSee(me, other) and (
                        pattern.match(other.folded) or pattern.match(other.foldedPrefix)
                    ):
                        replies.append(("*", other))
        fields = token = None
        if len(params) > 1 and params[1][:1] == "%":
            # WHOX: the fields asked for, in their fixed order, and a token.
            fields, _, token = params[1][1:].partition(",")
            if not (token.isascii() and token.isdigit() and len(token) <= 3):
                token = "0"
        every = "multi-prefix" in self.capabilities
        for where, other in replies:
            status = "G" if other.away is not None else "H"
            if other.oper:
                status += "*"
            channel = service.findChannel(where) if where != "*" else None
            if channel is not None:
                status += channel.prefixOf(other, every)
            if fields is None:
                self.sendNumeric(
                    numerics.RPL_WHOREPLY, where, other.username, other.host,
                    service.serverName, other.nick, status, f"0 {other.realname}",
                )
                continue
            values = {
                "t": token, "c": where, "u": other.username, "i": other.host,
                "h": other.host, "s": service.serverName, "n": other.nick,
                "f": status, "d": "0",
                "l": str(max(0, int(self.clock.seconds() - other.lastSpoke))),
                "a": other.account or "0", "o": "n/a", "r": other.realname,
            }
            self.sendNumeric(
                numerics.RPL_WHOSPCRPL, *(values[f] for f in "tcuihsnfdlaor" if f in fields)
            )
        self.sendNumeric(numerics.RPL_ENDOFWHO, truncateText(mask, 64), "End of WHO list")

    def irc_WHOIS(self, params: tuple[str, ...]) -> None:
        if not params or not params[0]:
            self.sendNumeric(numerics.ERR_NONICKNAMEGIVEN, "No nickname given")
            return
        nick = (params[1] if len(params) > 1 else params[0]).split(",")[0]
        service, me = self.service, self.user
        user = service.findUser(nick)
        if user is None:
            self.sendNumeric(numerics.ERR_NOSUCHNICK, truncateText(nick, 64) or "*", "No such nick/channel")
            self.sendNumeric(numerics.RPL_ENDOFWHOIS, truncateText(nick, 64) or "*", "End of /WHOIS list")
            return
        self.sendNumeric(
            numerics.RPL_WHOISUSER, user.nick, user.username, user.host, "*", user.realname
        )
        channels = [
            channel.prefixOf(user, "multi-prefix" in self.capabilities) + channel.name
            for channel in user.channels.values()
            if service.channelVisible(me, channel)
        ]
        if channels:
            self.sendNumeric(numerics.RPL_WHOISCHANNELS, user.nick, " ".join(channels))
        self.sendNumeric(
            numerics.RPL_WHOISSERVER, user.nick, service.serverName, "netservices chat"
        )
        if user.away is not None:
            self.sendNumeric(numerics.RPL_AWAY, user.nick, user.away)
        if user.oper:
            self.sendNumeric(numerics.RPL_WHOISOPERATOR, user.nick, "is an IRC operator")
        if user.account is not None:
            self.sendNumeric(numerics.RPL_WHOISACCOUNT, user.nick, user.account, "is logged in as")
        if user.secure:
            self.sendNumeric(numerics.RPL_WHOISSECURE, user.nick, "is using a secure connection")
        idle = int(self.clock.seconds() - user.lastSpoke)
        self.sendNumeric(
            numerics.RPL_WHOISIDLE, user.nick, str(max(0, idle)), str(int(user.signon)),
            "seconds idle, signon time",
        )
        self.sendNumeric(numerics.RPL_ENDOFWHOIS, user.nick, "End of /WHOIS list")


class ChatFactory(Factory):
    """
    Makes L{ChatConnection}s for one chat service and checks their timers
    once a second (one timer for all connections, not one each).

    @ivar connections: the open connections.
    @ivar counts: bytes and lines received, bytes sent in batches (lines
        written straight to a closing connection are not counted).
    """

    protocol = ChatConnection
    noisy = False
    tick = 1.0

    def __init__(
        self,
        service: ChatService,
        info: ServerInfo,
        clock: IReactorTime,
        settings: ConnectionSettings = ConnectionSettings(),
        log: Logger | None = None,
        refusals: RefusalLog | None = None,
        accounts: AccountSettings = AccountSettings(),
    ) -> None:
        self.service = service
        self.accounts = accounts
        self._guests = 0
        self.info = info
        self.clock = clock
        self.settings = settings
        self.log = log or Logger(namespace="netservices.chat")
        self.refusals = refusals or RefusalLog(self.log, clock, "input")
        self.connections: set[ChatConnection] = set()
        self.counts = {"bytesReceived": 0, "linesReceived": 0, "bytesSent": 0}
        self._timers: LoopingCall | None = None
        self._dirty: list[ChatConnection] = []
        self._flushCall = None

    def startFactory(self) -> None:
        timers = self._timers = LoopingCall(self.checkTimers)
        timers.clock = self.clock
        timers.start(self.tick, now=False)

    def stopFactory(self) -> None:
        if self._timers is not None and self._timers.running:
            self._timers.stop()
        self._timers = None

    def nextGuestNumber(self) -> int:
        """
        @return: the number of the next guest nick (C{Guest1}, C{Guest2}...).
        """
        self._guests += 1
        return self._guests

    def markDirty(self, connection: ChatConnection) -> None:
        """
        Have C{connection}'s collected lines written at the end of this
        reactor turn.
        """
        self._dirty.append(connection)
        if self._flushCall is None:
            # A zero delay runs first thing in the next turn, after every
            # event of this one: the batch is as large as it can be and no
            # later than it must be.
            self._flushCall = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        """
        Write what every connection collected in this turn.
        """
        self._flushCall = None
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            try:
                connection.flush()
            except Exception:
                self.log.failure("chat flush failed")

    def checkTimers(self) -> None:
        """
        Check every connection's timers.
        """
        now = self.clock.seconds()
        for connection in list(self.connections):
            try:
                connection.checkTimers(now)
            except Exception:
                self.log.failure("chat timer check failed")
