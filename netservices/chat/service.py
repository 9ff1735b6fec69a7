# -*- test-case-name: tests.chat.test_service -*-
"""
The chat service: users, nicks, channels, membership and modes, with no
sockets.  Connections call it through L{IChatService}; it answers through
each user's L{IChatClient}.

A relayed message is encoded once and the same bytes are given to every
recipient; members whose IRCv3 capabilities change the bytes (tags,
extended-join) get the same bytes per variant (L{netservices.chat.ircv3}).
Every action in a channel is checked by
L{netservices.chat.authz.authorize} when it happens.  The service also
sends the IRCv3 notifications (away-notify, account-notify,
invite-notify, setname, echo-message) and keeps each channel's recent
history.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable, Iterator

import attrs
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from netservices.chat import numerics
from netservices.chat.authz import Action, Denied, authorize, isChannelOperator
from netservices.chat.directory import MemoryDirectory
from netservices.chat.interfaces import IChatClient, IChatService
from netservices.chat.ircv3 import TAGS, History, MessageIds, Relayed, tagMask
from netservices.chat.store import ChannelRecord, HistoryEntry
from netservices.chat.wire import (
    AWAYLEN,
    KICKLEN,
    TOPICLEN,
    encode,
    foldCase,
    maskPattern,
    normalizeMask,
    truncateText,
    validChannel,
    validNick,
)


class ChatError(Exception):
    """
    A refused command: the numeric, its parameters after the user's nick,
    and the text.
    """

    def __init__(self, numeric: str, *params: str) -> None:
        super().__init__(numeric, *params)
        self.numeric = numeric
        self.params = params

    @classmethod
    def denied(cls, denial: Denied, name: str) -> ChatError:
        return cls(denial.numeric, name, denial.text)


@attrs.frozen
class ChatLimits:
    """
    Per-user and per-channel bounds of the chat service.

    @ivar maxChannels: channels one user may be in.
    @ivar maxBans: entries in one channel's ban list.
    @ivar maxInvites: pending invitations remembered per channel (the
        oldest are forgotten first).
    @ivar maxTargets: targets of one C{PRIVMSG}/C{NOTICE}.
    @ivar history: C{PRIVMSG}s and C{NOTICE}s each channel keeps (0: no
        history).
    @ivar monitor: nicks one user may C{MONITOR}.
    """

    maxChannels: int = 50
    maxBans: int = 100
    maxInvites: int = 100
    maxTargets: int = 4
    history: int = 100
    monitor: int = 100


class User:
    """
    One connected user.

    @ivar nick: the nick as chosen; L{None} until one is claimed.
    @ivar folded: the nick under the case mapping.
    @ivar prefix: C{nick!user@host}, built by the server.
    @ivar channels: the channels the user is in, by folded name.
    @ivar invisible: user mode C{+i}.
    @ivar away: the away message, or L{None}.
    @ivar account: the account the user logged in to, or L{None}.
    @ivar oper: user mode C{+o}: an IRC operator.
    @ivar wallops: user mode C{+w}: receives WALLOPS.
    @ivar caps: the IRCv3 capabilities the client enabled.
    @ivar monitoring: the nicks the user C{MONITOR}s, as given, by folded
        nick; L{None} for none.
    @ivar tagMask: the bits of C{caps} that change relayed bytes
        (L{netservices.chat.ircv3.tagMask}).
    """

    # One per connection, thousands at once: no instance dict.
    __slots__ = (
        "client", "host", "secure", "signon", "lastSpoke", "channels",
        "registered", "invisible", "away", "nick", "folded", "username",
        "realname", "prefix", "_foldedPrefix", "account", "oper", "wallops",
        "caps", "tagMask", "monitoring",
    )

    def __init__(self, client: IChatClient, host: str, secure: bool, now: float) -> None:
        self.client = client
        # A host starting with ':' (IPv6 '::1') would end a message's
        # middle parameters, as servers have long known.
        self.host = "0" + host if host.startswith(":") else host
        self.secure = secure
        self.signon = now
        self.lastSpoke = now
        self.channels: dict[str, Channel] = {}
        self.registered = False
        self.invisible = False
        self.away: str | None = None
        self.nick: str | None = None
        self.folded: str | None = None
        self.username = "*"
        self.realname = ""
        self.prefix = ""
        self._foldedPrefix = ""
        self.account: str | None = None
        self.oper = False
        self.wallops = False
        self.caps: frozenset[str] = frozenset()
        self.tagMask = 0
        self.monitoring: dict[str, str] | None = None

    def _rebuildPrefix(self) -> None:
        self.prefix = f"{self.nick}!{self.username}@{self.host}"
        self._foldedPrefix = foldCase(self.prefix)

    @property
    def foldedPrefix(self) -> str:
        """
        @return: the prefix under the case mapping, which bans match.
        """
        return self._foldedPrefix

    def __repr__(self) -> str:
        return f"<User {self.nick!r}>"


class Channel:
    """
    One channel.

    @ivar members: each member's status: C{""}, C{"o"}, C{"v"} or C{"ov"}.
    @ivar modes: the flag modes set (C{i m n s t}).
    @ivar bans: ban masks with their compiled patterns, in order set.
    @ivar invited: folded nicks invited while C{+i} matters.
    @ivar record: for a registered channel, its stored record (founder,
        operators), kept in step with the channel.
    @ivar capable: how many members have a non-zero C{tagMask} (0: every
        member gets the plain line).
    @ivar receivers: the members whose connections are on this server, in
        order (all of them but in a cluster, where the users of other
        nodes get relayed messages from their own node).
    @ivar history: the recent messages, or L{None} when none are kept.
    """

    topic = ""
    topicSetter = ""
    topicTime = 0
    key: str | None = None
    limit: int | None = None
    record: ChannelRecord | None = None

    def __init__(self, name: str, created: float) -> None:
        self.name = name
        self.folded = foldCase(name)
        self.created = int(created)
        self.members: dict[User, str] = {}
        self.receivers: dict[User, None] = {}
        self.modes: set[str] = {"n", "t"}
        self.bans: dict[str, object] = {}
        self.invited: OrderedDict[str, None] = OrderedDict()
        self.capable = 0
        self.history: History | None = None

    def addMember(self, user: User, status: str) -> None:
        """
        Make C{user} a member with C{status}.
        """
        self.members[user] = status
        if user.client.receives:
            self.receivers[user] = None

    def isBanned(self, user: User) -> bool:
        """
        @return: whether a ban mask matches C{user}'s current prefix.
        """
        folded = user.foldedPrefix
        return any(pattern.match(folded) for pattern in self.bans.values())

    def prefixOf(self, user: User, every: bool = False) -> str:
        """
        @param every: all prefixes (IRCv3 multi-prefix), highest first.
        @return: the highest membership prefix of a member (C{@}, C{+} or
            nothing).
        """
        status = self.members.get(user, "")
        if every:
            return ("@" if "o" in status else "") + ("+" if "v" in status else "")
        return "@" if "o" in status else "+" if "v" in status else ""

    def modeString(self, showSecrets: bool) -> tuple[str, ...]:
        """
        @return: the modes as C{MODE} parameters; key and limit values only
            when C{showSecrets}.
        """
        flags = "+" + "".join(sorted(self.modes))
        params: list[str] = []
        if self.key is not None:
            flags += "k"
            params.append(self.key if showSecrets else "*")
        if self.limit is not None:
            flags += "l"
            if showSecrets:
                params.append(str(self.limit))
        return (flags, *params)

    def __repr__(self) -> str:
        return f"<Channel {self.name!r}>"


@attrs.frozen
class ModeChange:
    """
    One channel mode change: C{sign} C{+} or C{-}, the mode letter, and its
    argument if it takes one.
    """

    sign: str
    mode: str
    argument: str | None = None


#: Channel modes and which take an argument when set (+) and unset (-).
LIST_MODES = "b"
MEMBER_MODES = "ov"
FLAG_MODES = "imnst"
CHANNEL_MODES = MEMBER_MODES + LIST_MODES + "kl" + FLAG_MODES


def takesArgument(sign: str, mode: str) -> bool:
    """
    @return: whether channel mode C{mode} takes an argument with C{sign}.
    """
    return mode in MEMBER_MODES + LIST_MODES + "k" or (mode == "l" and sign == "+")


@implementer(IChatService)
class ChatService:
    """
    All users and channels of one server.

    @ivar users: every user with a nick (registered or not), by folded
        nick.
    @ivar channels: every channel by folded name; a channel exists while
        it has members.
    @ivar counts: messages relayed and deliveries made, for logs.
    """

    def __init__(
        self,
        serverName: str,
        clock: IReactorTime,
        limits: ChatLimits = ChatLimits(),
        directory: MemoryDirectory | None = None,
    ) -> None:
        """
        @param directory: accounts and registered channels (none by
            default).
        """
        self.serverName = serverName
        self.clock = clock
        self.limits = limits
        self.directory = directory if directory is not None else MemoryDirectory()
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.registeredCount = 0
        self.unregisteredCount = 0
        self.invisibleCount = 0
        self.counts = {"messages": 0, "deliveries": 0}
        self.msgids = MessageIds()
        # MONITOR: the users watching each folded nick.
        self.watchers: dict[str, set[User]] = {}

    # Users

    def connect(self, client: IChatClient, host: str, secure: bool) -> User:
        self.unregisteredCount += 1
        return User(client, host, secure, self.clock.seconds())

    def setNick(self, user: User, nick: str) -> None:
        if not validNick(nick):
            raise ChatError(numerics.ERR_ERRONEUSNICKNAME, nick, "Erroneous nickname")
        folded = foldCase(nick)
        holder = self.users.get(folded)
        if holder is not None and holder is not user:
            raise ChatError(numerics.ERR_NICKNAMEINUSE, nick, "Nickname is already in use")
        if nick == user.nick:
            return
        old = user.prefix
        if user.folded is not None and user.folded != folded:
            del self.users[user.folded]
        self.users[folded] = user
        oldNick, oldFolded = user.nick, user.folded
        user.nick, user.folded = nick, folded
        if not user.registered:
            return
        user._rebuildPrefix()
        if oldFolded != folded:
            self._presence(oldNick, oldFolded, None)
            self._presence(nick, folded, user)
        peers = self._peersOf(user)
        peers.add(user)
        self._toUsers(peers, encode(old, "NICK", nick))

    def register(self, user: User, username: str, realname: str) -> None:
        if user.registered or user.nick is None:
            return
        user.username, user.realname = username, realname
        user.registered = True
        user._rebuildPrefix()
        self.unregisteredCount -= 1
        self.registeredCount += 1
        self._presence(user.nick, user.folded, user)

    def quit(self, user: User, reason: str) -> None:
        if user.registered:
            self._toUsers(self._peersOf(user), encode(user.prefix, "QUIT", reason))
            for channel in list(user.channels.values()):
                self._removeMember(channel, user)
            self.registeredCount -= 1
            if user.invisible:
                self.invisibleCount -= 1
        else:
            self.unregisteredCount -= 1
        wasRegistered = user.registered
        if user.folded is not None and self.users.get(user.folded) is user:
            del self.users[user.folded]
        user.registered = False
        if wasRegistered:
            self._presence(user.nick, user.folded, None)
        self.monitorClear(user)
        user.folded = None

    def setAway(self, user: User, message: str | None) -> None:
        user.away = truncateText(message, AWAYLEN) if message else None
        if user.registered:
            params = (user.away,) if user.away is not None else ()
            self._toUsers(
                self._peersOf(user), encode(user.prefix, "AWAY", *params), "away-notify"
            )

    def setCapabilities(self, user: User, capabilities: frozenset[str]) -> None:
        """
        Note the IRCv3 capabilities C{user}'s client enabled.
        """
        old = user.tagMask
        user.caps = capabilities
        new = user.tagMask = tagMask(capabilities)
        if bool(old) != bool(new):
            for channel in user.channels.values():
                channel.capable += 1 if new else -1

    def setRealname(self, user: User, realname: str) -> None:
        """
        Change C{user}'s real name (IRCv3 setname), telling those who
        share a channel and the user itself, if they enabled C{setname}.
        """
        user.realname = realname
        peers = self._peersOf(user)
        peers.add(user)
        self._toUsers(peers, encode(user.prefix, "SETNAME", realname), "setname")

    def _toUsers(self, users: Iterable[User], line: bytes, capability: str | None = None) -> None:
        """
        Give C{line} to C{users} (only those that enabled C{capability},
        if given), with the tags each one asked for.
        """
        event = None
        for other in users:
            if capability is not None and capability not in other.caps:
                continue
            mask = other.tagMask
            if mask:
                if event is None:
                    event = Relayed(line, self.clock.seconds())
                other.client.deliver(event.bytesFor(mask))
            else:
                other.client.deliver(line)

    def setInvisible(self, user: User, invisible: bool) -> None:
        """
        Set or clear user mode C{+i}.
        """
        if invisible != user.invisible:
            user.invisible = invisible
            self.invisibleCount += 1 if invisible else -1

    def findUser(self, nick: str) -> User | None:
        user = self.users.get(foldCase(nick))
        return user if user is not None and user.registered else None

    def allUsers(self) -> Iterator[User]:
        return (user for user in self.users.values() if user.registered)

    def _peersOf(self, user: User) -> set[User]:
        """
        @return: everybody who shares a channel with C{user}, once each,
            without C{user}.
        """
        peers: set[User] = set()
        for channel in user.channels.values():
            peers.update(channel.members)
        peers.discard(user)
        return peers

    def canSee(self, viewer: User, user: User) -> bool:
        """
        @return: whether C{viewer} may see C{user} in lists (C{+i} users
            only by those sharing a channel).
        """
        if not user.invisible or viewer is user:
            return True
        return any(viewer in channel.members for channel in user.channels.values())

    def channelVisible(self, viewer: User, channel: Channel) -> bool:
        """
        @return: whether C{viewer} may see C{channel} exists (C{+s} only
            members).
        """
        return "s" not in channel.modes or viewer in channel.members

    # MONITOR

    def _presence(self, nick: str, folded: str, user: User | None) -> None:
        """
        Tell those who monitor C{nick} that it is now online as C{user}
        (730) or offline (L{None}: 731).
        """
        watchers = self.watchers.get(folded)
        if not watchers:
            return
        for watcher in list(watchers):
            if watcher is user:
                continue
            if user is None:
                line = encode(self.serverName, numerics.RPL_MONOFFLINE, watcher.nick, nick)
            else:
                line = encode(self.serverName, numerics.RPL_MONONLINE, watcher.nick, user.prefix)
            watcher.client.deliver(line)

    def monitorAdd(self, user: User, nicks: list[str]) -> tuple[list[str], list[str], list[str]]:
        """
        Add nicks to C{user}'s monitor list, as far as it has room.

        @return: the online prefixes, the offline nicks, and the nicks
            refused because the list is full.
        """
        monitoring = user.monitoring
        if monitoring is None:
            monitoring = user.monitoring = {}
        online, offline, refused = [], [], []
        for nick in nicks:
            if not validNick(nick):
                continue
            folded = foldCase(nick)
            if folded not in monitoring:
                if len(monitoring) >= self.limits.monitor:
                    refused.append(nick)
                    continue
                monitoring[folded] = nick
                self.watchers.setdefault(folded, set()).add(user)
            found = self.findUser(nick)
            if found is not None:
                online.append(found.prefix)
            else:
                offline.append(nick)
        return online, offline, refused

    def monitorRemove(self, user: User, nicks: list[str]) -> None:
        monitoring = user.monitoring or {}
        for nick in nicks:
            folded = foldCase(nick)
            if monitoring.pop(folded, None) is not None:
                watchers = self.watchers.get(folded)
                if watchers is not None:
                    watchers.discard(user)
                    if not watchers:
                        del self.watchers[folded]

    def monitorClear(self, user: User) -> None:
        if user.monitoring:
            self.monitorRemove(user, list(user.monitoring.values()))
        user.monitoring = None

    # Channels

    def findChannel(self, name: str) -> Channel | None:
        return self.channels.get(foldCase(name))

    def allChannels(self) -> Iterable[Channel]:
        return self.channels.values()

    def _existingChannel(self, name: str) -> Channel:
        channel = self.findChannel(name)
        if channel is None:
            raise ChatError(numerics.ERR_NOSUCHCHANNEL, name, "No such channel")
        return channel

    def join(self, user: User, name: str, key: str | None) -> Channel | None:
        """
        @return: the channel joined, or L{None} if C{user} was already in it.
        """
        if not validChannel(name):
            raise ChatError(numerics.ERR_NOSUCHCHANNEL, name, "No such channel")
        channel = self.findChannel(name)
        if channel is not None and user in channel.members:
            return None
        if len(user.channels) >= self.limits.maxChannels:
            raise ChatError(
                numerics.ERR_TOOMANYCHANNELS, name, "You have joined too many channels"
            )
        if channel is None:
            record = self.directory.channelRecord(name)
            if record is None:
                channel = Channel(name, self.clock.seconds())
            else:
                channel = self._restore(record)
                denial = authorize(Action.JOIN, user, channel, key)
                if denial is not None:
                    raise ChatError.denied(denial, channel.name)
            self.channels[channel.folded] = channel
            status = "o" if record is None else ""
        else:
            denial = authorize(Action.JOIN, user, channel, key)
            if denial is not None:
                raise ChatError.denied(denial, channel.name)
            status = ""
        if channel.record is not None and isChannelOperator(channel.record, user.account):
            # Founders and operators of a registered channel get their
            # status back when they join logged in; nobody else gets '@'
            # for being first.
            status = "o"
        channel.invited.pop(user.folded, None)
        channel.addMember(user, status)
        user.channels[channel.folded] = channel
        if user.tagMask:
            channel.capable += 1
        if channel.history is None and self.limits.history > 0:
            channel.history = History(self.limits.history)
        line = encode(user.prefix, "JOIN", channel.name)
        event = None
        if channel.capable:
            extended = encode(user.prefix, "JOIN", channel.name, user.account or "*", user.realname)
            event = Relayed(line, self.clock.seconds(), extended=extended)
        self._relay(channel, line, None, event)
        if user.away is not None:
            self._toUsers(
                (m for m in channel.members if m is not user),
                encode(user.prefix, "AWAY", user.away), "away-notify",
            )
        return channel

    def _restore(self, record: ChannelRecord) -> Channel:
        """
        @return: a registered channel as its record left it.
        """
        channel = Channel(record.name, self.clock.seconds())
        channel.record = record
        channel.modes = set(record.modes)
        channel.key, channel.limit = record.key, record.limit
        channel.topic, channel.topicSetter = record.topic, record.topicSetter
        channel.topicTime = record.topicTime
        for mask in record.bans[: self.limits.maxBans]:
            channel.bans[mask] = maskPattern(mask)
        if self.limits.history > 0:
            channel.history = History(self.limits.history, (
                Relayed(e.line, e.time, e.msgid, e.account, e.tags)
                for e in self.directory.channelHistory(record.name)
            ))
        return channel

    def _save(self, channel: Channel) -> None:
        """
        Store a registered channel's modes, key, limit, topic, bans and
        operators.
        """
        if channel.record is None:
            return
        channel.record = attrs.evolve(
            channel.record,
            modes="".join(sorted(channel.modes)),
            key=channel.key,
            limit=channel.limit,
            topic=channel.topic,
            topicSetter=channel.topicSetter,
            topicTime=channel.topicTime,
            bans=tuple(channel.bans),
        )
        self.directory.saveChannel(channel.record)

    def login(self, user: User, account: str) -> None:
        """
        Note that C{user} logged in to C{account}; those who share a
        channel, and the user, are told if they enabled
        C{account-notify}.
        """
        user.account = account
        if user.registered:
            peers = self._peersOf(user)
            peers.add(user)
            self._toUsers(peers, encode(user.prefix, "ACCOUNT", account), "account-notify")

    def part(self, user: User, name: str, reason: str | None) -> None:
        channel = self._existingChannel(name)
        if user not in channel.members:
            raise ChatError.denied(
                Denied(numerics.ERR_NOTONCHANNEL, "You're not on that channel"),
                channel.name,
            )
        params = (channel.name, reason) if reason else (channel.name,)
        self._relay(channel, encode(user.prefix, "PART", *params), None)
        self._removeMember(channel, user)

    def partAll(self, user: User) -> None:
        for channel in list(user.channels.values()):
            self.part(user, channel.name, None)

    def _removeMember(self, channel: Channel, user: User) -> None:
        del channel.members[user]
        channel.receivers.pop(user, None)
        del user.channels[channel.folded]
        if user.tagMask:
            channel.capable -= 1
        if not channel.members:
            del self.channels[channel.folded]

    def _relay(
        self,
        channel: Channel,
        line: bytes,
        skip: User | None,
        event: Relayed | None = None,
        requires: int = 0,
    ) -> None:
        """
        Give the same encoded line to every member but C{skip}; members
        with IRCv3 tag capabilities get C{event}'s bytes for their mask
        (one bytes object per mask).

        @param requires: capability bits a member must have to get the
            event at all (L{TAGS} for C{TAGMSG}).
        """
        delivered = 0
        # A copy: a delivery can end a member's connection (its send queue
        # overflows), which removes it from the channel.
        members = list(channel.receivers)
        if not channel.capable and not requires:
            for member in members:
                if member is not skip:
                    member.client.deliver(line)
                    delivered += 1
        else:
            if event is None:
                event = Relayed(line, self.clock.seconds())
            for member in members:
                if member is not skip:
                    mask = member.tagMask
                    if mask & requires != requires:
                        continue
                    member.client.deliver(event.bytesFor(mask) if mask else line)
                    delivered += 1
        self.counts["deliveries"] += delivered

    def sendMessage(
        self,
        user: User,
        command: str,
        target: str,
        text: str | None,
        tags: tuple[tuple[str, str], ...] = (),
    ) -> User | None:
        """
        Relay a C{PRIVMSG}, C{NOTICE} or (with C{text} L{None}) C{TAGMSG},
        with the sender's client-only C{tags}, to a channel or a nick; the
        sender gets it back if it enabled C{echo-message}.  Channel
        C{PRIVMSG}s and C{NOTICE}s go into the channel's history.

        @return: the recipient when C{target} is a nick, so that the sender
            can be told it is away.
        """
        now = self.clock.seconds()
        text = () if text is None else (text,)
        requires = TAGS if command == "TAGMSG" else 0
        echo = "echo-message" in user.caps
        if target[:1] == "#":
            channel = self._existingChannel(target)
            denial = authorize(Action.SPEAK, user, channel)
            if denial is not None:
                raise ChatError.denied(denial, channel.name)
            self.counts["messages"] += 1
            user.lastSpoke = now
            line = encode(user.prefix, command, channel.name, *text)
            event = Relayed(line, now, None, user.account, tags, ids=self.msgids)
            self._relay(channel, line, None if echo else user, event, requires)
            if not requires and channel.history is not None:
                channel.history.add(event)
                if channel.record is not None:
                    self.directory.saveHistory(channel.name, HistoryEntry(
                        now, event.msgid, line, user.account, tags
                    ), self.limits.history)
            return None
        recipient = self.findUser(target)
        if recipient is None:
            raise ChatError(numerics.ERR_NOSUCHNICK, target, "No such nick/channel")
        self.counts["messages"] += 1
        user.lastSpoke = now
        line = encode(user.prefix, command, recipient.nick, *text)
        if not (recipient.tagMask or echo or requires):
            self.counts["deliveries"] += 1
            recipient.client.deliver(line)
            return recipient
        event = Relayed(line, now, None, user.account, tags, ids=self.msgids)
        for other in (recipient, user) if echo else (recipient,):
            if other.tagMask & requires == requires:
                self.counts["deliveries"] += 1
                other.client.deliver(event.bytesFor(other.tagMask))
        return recipient

    def setTopic(self, user: User, name: str, topic: str) -> None:
        channel = self._existingChannel(name)
        denial = authorize(Action.SET_TOPIC, user, channel)
        if denial is not None:
            raise ChatError.denied(denial, channel.name)
        channel.topic = truncateText(topic, TOPICLEN)
        channel.topicSetter = user.prefix
        channel.topicTime = int(self.clock.seconds())
        self._relay(channel, encode(user.prefix, "TOPIC", channel.name, channel.topic), None)
        self._save(channel)

    def kick(self, user: User, name: str, nick: str, reason: str) -> None:
        channel = self._existingChannel(name)
        denial = authorize(Action.KICK, user, channel)
        if denial is not None:
            raise ChatError.denied(denial, channel.name)
        target = self.findUser(nick)
        if target is None or target not in channel.members:
            raise ChatError(
                numerics.ERR_USERNOTINCHANNEL, nick, channel.name,
                "They aren't on that channel",
            )
        line = encode(user.prefix, "KICK", channel.name, target.nick, truncateText(reason, KICKLEN))
        self._relay(channel, line, None)
        self._removeMember(channel, target)

    def invite(self, user: User, nick: str, name: str) -> None:
        target = self.findUser(nick)
        if target is None:
            raise ChatError(numerics.ERR_NOSUCHNICK, nick, "No such nick/channel")
        channel = self._existingChannel(name)
        denial = authorize(Action.INVITE, user, channel)
        if denial is not None:
            raise ChatError.denied(denial, channel.name)
        if target in channel.members:
            raise ChatError(
                numerics.ERR_USERONCHANNEL, target.nick, channel.name, "is already on channel"
            )
        channel.invited[target.folded] = None
        channel.invited.move_to_end(target.folded)
        while len(channel.invited) > self.limits.maxInvites:
            channel.invited.popitem(last=False)
        line = encode(user.prefix, "INVITE", target.nick, channel.name)
        self._toUsers((target,), line)
        self._toUsers(
            (m for m in channel.members if m is not user), line, "invite-notify"
        )

    def changeChannelModes(
        self, user: User, name: str, changes: list[ModeChange]
    ) -> tuple[list[ModeChange], list[ChatError]]:
        """
        Apply mode changes in order; the members are told of those applied
        in one C{MODE} line.

        @return: the changes applied and the errors for those refused.
        """
        channel = self._existingChannel(name)
        denial = authorize(Action.CHANGE_MODE, user, channel)
        if denial is not None:
            raise ChatError.denied(denial, channel.name)
        applied: list[ModeChange] = []
        errors: list[ChatError] = []
        for change in changes:
            try:
                done = self._applyMode(channel, change)
            except ChatError as e:
                errors.append(e)
                continue
            if done is not None:
                applied.append(done)
        if applied:
            self._relay(channel, encode(user.prefix, "MODE", channel.name, *modeParams(applied)), None)
            self._save(channel)
        return applied, errors

    def _applyMode(self, channel: Channel, change: ModeChange) -> ModeChange | None:
        sign, mode, argument = change.sign, change.mode, change.argument
        adding = sign == "+"
        if mode in FLAG_MODES:
            if adding == (mode in channel.modes):
                return None
            (channel.modes.add if adding else channel.modes.discard)(mode)
            return ModeChange(sign, mode)
        if mode in MEMBER_MODES:
            target = self.findUser(argument or "")
            if target is None:
                raise ChatError(numerics.ERR_NOSUCHNICK, argument or "*", "No such nick/channel")
            status = channel.members.get(target)
            if status is None:
                raise ChatError(
                    numerics.ERR_USERNOTINCHANNEL, target.nick, channel.name,
                    "They aren't on that channel",
                )
            if adding == (mode in status):
                return None
            channel.members[target] = (
                "".join(sorted(status + mode)) if adding else status.replace(mode, "")
            )
            if mode == "o" and channel.record is not None and target.account is not None:
                channel.record = withOperator(channel.record, target.account, adding)
            return ModeChange(sign, mode, target.nick)
        if mode == "b":
            mask = normalizeMask(argument or "")
            if not adding:
                for existing in channel.bans:
                    if foldCase(existing) == foldCase(mask):
                        del channel.bans[existing]
                        return ModeChange(sign, mode, existing)
                return None
            if any(foldCase(existing) == foldCase(mask) for existing in channel.bans):
                return None
            if len(channel.bans) >= self.limits.maxBans:
                raise ChatError(numerics.ERR_BANLISTFULL, channel.name, "b", "Channel ban list is full")
            channel.bans[mask] = maskPattern(mask)
            return ModeChange(sign, mode, mask)
        if mode == "k":
            if not adding:
                if channel.key is None:
                    return None
                channel.key = None
                return ModeChange(sign, mode, "*")
            if not argument or not validKey(argument):
                raise ChatError(numerics.ERR_INVALIDKEY, channel.name, "Key is not well-formed")
            channel.key = argument
            return ModeChange(sign, mode, argument)
        if mode == "l":
            if not adding:
                if channel.limit is None:
                    return None
                channel.limit = None
                return ModeChange(sign, mode)
            if not (argument and argument.isascii() and argument.isdigit() and 0 < int(argument) < 1_000_000):
                raise ChatError(
                    numerics.ERR_INVALIDMODEPARAM, channel.name, "l", argument or "*",
                    "Invalid limit: a number from 1 to 999999",
                )
            channel.limit = int(argument)
            return ModeChange(sign, mode, argument)
        raise ChatError(numerics.ERR_UNKNOWNMODE, mode, "is an unknown mode char to me")


def withOperator(record: ChannelRecord, account: str, operator: bool) -> ChannelRecord:
    """
    @return: C{record} with C{account} added to or removed from its
        operators (the founder always stays one).
    """
    folded = foldCase(account)
    others = tuple(name for name in record.operators if foldCase(name) != folded)
    if operator and folded != foldCase(record.founder):
        others += (account,)
    return attrs.evolve(record, operators=others)


def validKey(key: str) -> bool:
    """
    @return: whether C{key} can be a channel key: 1 to 23 printable
        characters, no spaces or commas.
    """
    return 0 < len(key) <= 23 and all(
        0x20 < ord(c) != 0x7F and c not in ",:" for c in key
    ) and "\ufffd" not in key


def modeParams(changes: list[ModeChange]) -> tuple[str, ...]:
    """
    @return: mode changes as C{MODE} parameters: C{("+ov-b", "a", "b", "m!*@*")}.
    """
    flags, arguments, sign = "", [], ""
    for change in changes:
        if change.sign != sign:
            sign = change.sign
            flags += sign
        flags += change.mode
        if change.argument is not None:
            arguments.append(change.argument)
    return (flags, *arguments)
