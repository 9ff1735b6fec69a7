# -*- test-case-name: tests.chat.test_cluster -*-
"""
Several chat server processes acting as one server: a replicated state
machine over a shared, ordered log (L{netservices.chat.redislog} keeps it
in Redis).

Every node holds the whole chat state: every user and channel of the
cluster.  What changes that state goes through the log, and every node
applies the log's entries in the log's order with the same code, so that
every node computes the same result: the checks a single server makes
(nick collisions, bans, keys, limits, invitations, operator status, +m)
hold cluster-wide, and two clients racing for one nick on two nodes get
one winner, the first in the log.

What goes in the log is the input of each user, not its effects:

 - C{L}: a line of a replicated command (L{REPLICATED}), after the
   origin node's flood control.  Each node runs it through the normal
   connection code: on the user's own node (the origin) the replies go to
   the client; on every other node the user is a L{ShadowConnection},
   whose output goes nowhere.  Relayed messages reach each recipient from
   the recipient's own node, once.
 - C{C} (connect), C{Q} (quit), and what only the origin node can decide
   because it needs its secrets or timers: C{A} (logged in, after the
   origin checked the password), C{R} (registration complete), C{O}
   (operator), C{G} (renamed to a guest nick when a nick's grace period
   ran out).
 - C{X}: the registered channels' records, as the node with the lowest
   name read them from the store (changes made with C{chat-admin}).
 - C{U} (a node started) and C{D} (a node stopped heartbeating): a dead
   node's users quit everywhere with a netsplit reason, at one point in
   the log.

Commands that change nothing (C{WHO}, C{WHOIS}, C{NAMES}, C{LIST},
C{PING}...) and those that involve credentials (C{AUTHENTICATE}, C{PASS},
C{OPER}, C{REGISTER}) run on the origin node only, in order with the
user's replicated commands: a connection's lines wait in its pipeline
until those before them have come back from the log.

Timestamps come from the entry (L{LogClock}), message ids from the entry's
id: nothing a node computes depends on when it applies an entry.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections import OrderedDict, deque
from typing import Callable

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from netservices.chat import numerics
from netservices.chat.directory import MemoryDirectory
from netservices.chat.ircv3 import History, MessageIds, Relayed
from netservices.chat.protocol import ChatConnection, ChatFactory
from netservices.chat.service import Channel, ChatError
from netservices.chat.store import channelRecordFromFields
from netservices.chat.wire import TOO_LONG, Message, foldCase, maskPattern, parseLine

#: The version of L{ClusterReplica.snapshot}'s format.
SNAPSHOT_VERSION = 1

#: Commands whose lines go through the log: everything that changes users,
#: channels or what a connection has negotiated.
REPLICATED = frozenset({
    "NICK", "USER", "CAP", "JOIN", "PART", "PRIVMSG", "NOTICE", "TAGMSG",
    "MODE", "TOPIC", "KICK", "INVITE", "AWAY", "SETNAME", "MONITOR", "KILL",
    "WALLOPS",
})

#: Lines one connection may have waiting in its pipeline before the server
#: stops reading from it (it resumes at half).
PIPELINE_LIMIT = 64


class ClusterUnavailable(Exception):
    """
    The log cannot take entries now (Redis is unreachable, or this node is
    still joining the cluster).
    """


@attrs.frozen
class Entry:
    """
    One log entry.

    @ivar kind: one letter (see the module docstring).
    @ivar uid: the user (C{INSTANCE.N}) or, for C{U} and C{D}, the node
        instance.
    @ivar time: when the origin node made it (POSIX time).
    @ivar payload: the rest, by kind.
    """

    kind: bytes
    uid: str
    time: float
    payload: bytes = b""

    def encode(self) -> bytes:
        return b"%s %s %.6f %s" % (self.kind, self.uid.encode("ascii"), self.time, self.payload)


def parseEntry(data: bytes) -> Entry | None:
    """
    @return: the entry C{data} encodes, or L{None} if it is not one.
    """
    parts = data.split(b" ", 3)
    if len(parts) != 4 or len(parts[0]) != 1:
        return None
    try:
        uid = parts[1].decode("ascii")
        time = float(parts[2])
    except (UnicodeDecodeError, ValueError):
        return None
    return Entry(parts[0], uid, time, parts[3])


class LogClock:
    """
    The chat service's clock on a cluster node: while an entry is applied,
    the time its origin node gave it, so that every node stores the same
    times (signon, topic, channel creation, server-time tags).
    """

    def __init__(self, clock) -> None:
        self.clock = clock
        self.now: float | None = None

    def seconds(self) -> float:
        now = self.now
        return self.clock.seconds() if now is None else now

    def callLater(self, *args, **kwargs):
        return self.clock.callLater(*args, **kwargs)

    def getDelayedCalls(self):
        return self.clock.getDelayedCalls()


class EntryMessageIds(MessageIds):
    """
    Message ids made from the id of the log entry being applied (and a
    count within it), so that every node gives a message the same id.
    """

    __slots__ = ("_base", "_count")

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self._base = self._count = 0
        self.next = self._next

    def at(self, entryId: str) -> None:
        """
        Number the ids of the entry C{entryId} (C{MILLISECONDS-SEQUENCE}).
        """
        milliseconds, _, sequence = entryId.partition("-")
        self._base = (int(milliseconds) << 24 | int(sequence or 0) << 6)
        self._count = 0

    def _next(self) -> int:
        self._count += 1
        return self._base | (self._count & 63)


class OriginWrites:
    """
    A directory whose writes (registered channels' state and history) are
    stored by the node where the change came from only: every node applies
    the change and keeps it in its directory's memory, one stores it.
    """

    def __init__(self, directory: MemoryDirectory, replica: ClusterReplica) -> None:
        self._directory = directory
        self._replica = replica

    def __getattr__(self, name: str):
        return getattr(self._directory, name)

    @property
    def channels(self) -> dict:
        return self._directory.channels

    @channels.setter
    def channels(self, records: dict) -> None:
        self._directory.channels = records

    def saveChannel(self, record) -> None:
        if self._replica.applyingOwn:
            self._directory.saveChannel(record)
        else:
            self._directory.channels[foldCase(record.name)] = record

    def saveHistory(self, name: str, entry, keep: int) -> None:
        if self._replica.applyingOwn:
            self._directory.saveHistory(name, entry, keep)
        else:
            MemoryDirectory.saveHistory(self._directory, name, entry, keep)


class ClusterConnection(ChatConnection):
    """
    A client connected to this node, in a cluster.  Its replicated lines
    are applied when they come back from the log; the others wait in its
    pipeline for those before them (see the module docstring).

    @ivar uid: the user's id in the cluster.
    """

    __slots__ = ("uid", "_pipeline", "_published", "_seq", "_announced", "_registering",
                 "_paused", "_dropped", "inLog")

    factory: ClusterFactory

    @property
    def replica(self) -> ClusterReplica:
        return self.factory.replica

    def connectionMade(self) -> None:
        self._joinCluster(self.replica.newUid(), inLog=False)
        super().connectionMade()
        self.replica.connections[self.uid] = self

    def _joinCluster(self, uid: str, inLog: bool) -> None:
        """
        Set up what a connection holds as a user of the cluster.

        @param inLog: whether its C entry is in the log already (a user of
            another node).
        """
        self.uid = uid
        # Entries: [replicated, line, sequence number once published].
        self._pipeline: deque[list] = deque()
        self._published = self._seq = 0
        self._registering = self._paused = self._dropped = False
        self._announced = inLog
        # Whether its C entry was applied: until then the others do not
        # have it, nor does a snapshot.
        self.inLog = inLog

    # Input

    def _handleLine(self, line: bytes) -> None:
        message = parseLine(line) if line is not TOO_LONG and line else None
        replicated = isinstance(message, Message) and message.command in REPLICATED
        if replicated and not self.replica.available:
            self._unavailable(message.command)
            return
        self._pipeline.append([replicated, line, 0])
        self._pump()
        if len(self._pipeline) > PIPELINE_LIMIT and not self._paused:
            self._paused = True
            self.transport.pauseProducing()

    def _pump(self) -> None:
        """
        Publish the replicated lines that may go, and run the local lines
        whose turn has come.
        """
        pipeline = self._pipeline
        while True:
            while self._published < len(pipeline):
                entry = pipeline[self._published]
                if not entry[0] or self._authenticating or self._registering:
                    break
                if self._published and not self.user.registered:
                    # Until registered, one line at a time: the line that
                    # completes registration must have its R entry in the
                    # log before the next line (a JOIN sent with NICK and
                    # USER must find the user registered everywhere).
                    break
                self._published += 1
                self._publishLine(entry)
            if self._published or not pipeline:
                break
            if pipeline[0][0] or self._authenticating or self._closingSince is not None:
                # A replicated line not published yet, or a login pending.
                break
            line = pipeline.popleft()[1]
            ChatConnection._handleLine(self, line)
        if self._paused and len(pipeline) <= PIPELINE_LIMIT // 2 and self._closingSince is None:
            self._paused = False
            self.transport.resumeProducing()

    def _announce(self) -> None:
        if not self._announced:
            self._announced = True
            user = self.user
            secure = b"1" if user.secure else b"0"
            self._publish(b"C", secure + b" " + user.host.encode("utf-8"))

    def _publishLine(self, entry: list) -> None:
        self._announce()
        self._seq += 1
        entry[2] = seq = self._seq
        self.replica.publish(b"L", self.uid, b"%d %s" % (seq, entry[1])).addErrback(
            self._lineRefused, entry
        )

    def _lineRefused(self, failure, entry: list) -> None:
        failure.trap(ClusterUnavailable)
        try:
            index = self._pipeline.index(entry)
        except ValueError:
            return
        del self._pipeline[index]
        if index < self._published:
            self._published -= 1
        message = parseLine(entry[1])
        self._unavailable(message.command if isinstance(message, Message) else "*")
        self._pump()

    def _unavailable(self, command: str) -> None:
        self.sendNumeric(
            numerics.ERR_UNKNOWNERROR, command,
            "The cluster is unavailable; try again shortly",
        )

    def _publish(self, kind: bytes, payload: bytes = b"", refused: Callable | None = None) -> None:
        def failed(failure) -> None:
            failure.trap(ClusterUnavailable)
            if refused is not None:
                refused()

        self.replica.publish(kind, self.uid, payload).addErrback(failed)

    def applyLine(self, seq: int, line: bytes) -> None:
        """
        A replicated line of this user came back from the log: run it.
        """
        pipeline = self._pipeline
        if self._published and pipeline[0][2] == seq:
            pipeline.popleft()
            self._published -= 1
        ChatConnection._handleLine(self, line)
        self._pump()

    # What only the origin node decides

    def completeRegistration(self) -> None:
        if not self._registering:
            self._registering = True

            def refused() -> None:
                self._registering = False
                self._unavailable("USER")
                self._pump()

            self._publish(b"R", refused=refused)

    def applyRegistration(self) -> None:
        """
        The registration this node decided came back from the log.
        """
        self._registering = False
        ChatConnection.completeRegistration(self)
        self._pump()

    def completeLogin(self, account: str, how: str) -> None:
        # Held until the login is in the log: what the user sends next
        # must be applied after it everywhere.
        self._authenticating = True

        def refused() -> None:
            self._authenticating = False
            self.sendNumeric(numerics.ERR_SASLFAIL, "SASL authentication failed")
            self._unavailable("AUTHENTICATE")
            self._pump()

        self._publish(b"A", f"{how} {account}".encode("utf-8"), refused)

    def applyLogin(self, how: str, account: str) -> None:
        """
        A login came back from the log.
        """
        self._authenticating = False
        ChatConnection.completeLogin(self, account, how)
        self._pump()

    def _loginFailed(self, failure, sasl: bool) -> None:
        super()._loginFailed(failure, sasl)
        self._pump()

    def becomeOper(self, account: str) -> None:
        self._publish(b"O", account.encode("utf-8"), lambda: self._unavailable("OPER"))

    def applyOper(self, account: str) -> None:
        """
        An C{OPER} came back from the log.
        """
        ChatConnection.becomeOper(self, account)

    def renameToGuest(self) -> None:
        self.nickDeadline = None
        self._publish(b"G", self.freeGuestNick().encode("ascii"))

    def applyGuestNick(self, nick: str) -> None:
        """
        A rename to a guest nick came back from the log.
        """
        try:
            self.service.setNick(self.user, nick)
        except ChatError:
            # Taken meanwhile (by a user of another node): try another.
            self.renameToGuest()

    # Leaving

    def _leave(self, reason: str) -> None:
        if self._quitReason is not None:
            return
        self._quitReason = reason
        self._pipeline.clear()
        self._published = 0
        if self._dropped:
            return
        if self._announced:
            self.replica.publishQuit(self.uid, reason)
        else:
            self.replica.forget(self.uid, reason)

    def drop(self, reason: str) -> None:
        """
        The cluster no longer has this user (its node was declared dead, or
        the cluster's state was lost): close the connection without a QUIT
        in the log.
        """
        self._dropped = True
        self.disconnect(reason)


class ShadowConnection(ClusterConnection):
    """
    A user of another node, as this node sees it: its replicated lines run
    here too, so that this node's state follows, but nothing is sent.
    """

    __slots__ = ()

    #: Relayed messages reach this user from its own node.
    receives = False

    @classmethod
    def of(cls, factory: ClusterFactory, uid: str, host: str, secure: bool) -> ShadowConnection:
        shadow = cls()
        shadow.factory = factory
        shadow._joinCluster(uid, inLog=True)
        shadow.begin(host, secure)
        return shadow

    def deliver(self, line: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    def disconnect(self, reason: str, abort: bool = False) -> None:
        pass

    def refuse(self, reason: str) -> None:
        pass

    def completeRegistration(self) -> None:
        # The user's node decides, and says so with an R entry.
        pass

    def applyLine(self, seq: int, line: bytes) -> None:
        ChatConnection._handleLine(self, line)

    def applyLogin(self, how: str, account: str) -> None:
        ChatConnection.completeLogin(self, account, how)

    def applyOper(self, account: str) -> None:
        self.user.oper = True

    def applyGuestNick(self, nick: str) -> None:
        try:
            self.service.setNick(self.user, nick)
        except ChatError:
            pass


class ClusterReplica:
    """
    This node's copy of the cluster's state, and how log entries change it.

    @ivar connections: every user of the cluster by uid: this node's
        L{ClusterConnection}s and the others' L{ShadowConnection}s.
    @ivar nodes: the live nodes, their instance by name.
    @ivar available: whether this node can take replicated commands: it
        is connected to the log and its own C{U} entry has been applied.
    @ivar applyingOwn: whether the entry being applied came from this node.
    @ivar log: what entries are published to (L{publish} fails without).
    @ivar settingsDigest: the digest of the settings every node must share
        (L{settingsDigest}), announced in this node's C{U} entry.
    """

    def __init__(self, factory: ClusterFactory, nodeName: str, logger: Logger | None = None) -> None:
        self.factory = factory
        self.service = factory.service
        self.nodeName = nodeName
        self.logger = logger or Logger(namespace="netservices.chat.cluster")
        self.connections: dict[str, ClusterConnection] = {}
        self.nodes: dict[str, str] = {}
        self.available = False
        self.applyingOwn = False
        self.log = None
        self.lastId = "0-0"
        self.settingsDigest = ""
        self._pendingRecords = None
        self._quits: dict[str, bytes] = {}
        self.newInstance()

    def newInstance(self) -> None:
        """
        Take a new instance id: this node's users so far are gone from the
        cluster, and new ones must not be mistaken for them.
        """
        self.instance = os.urandom(6).hex()
        self._uids = itertools.count(1)

    def newUid(self) -> str:
        return f"{self.instance}.{next(self._uids):x}"

    # Publishing

    def publish(self, kind: bytes, uid: str, payload: bytes = b"") -> Deferred:
        """
        Append an entry to the log.

        @return: a L{Deferred} that fails with L{ClusterUnavailable} if the
            log did not take it.
        """
        log = self.log
        if log is None or (not self.available and kind not in b"UD"):
            from twisted.internet.defer import fail

            return fail(ClusterUnavailable())
        return log.append(Entry(kind, uid, self.factory.clock.seconds(), payload).encode())

    def publishQuit(self, uid: str, reason: str) -> None:
        """
        Publish that a user of this node left; if the log cannot take it
        now, keep it until it can (the user must not stay in the cluster).
        """
        payload = reason.encode("utf-8")

        def failed(failure) -> None:
            failure.trap(ClusterUnavailable)
            self._quits[uid] = payload

        self.publish(b"Q", uid, payload).addErrback(failed)

    def publishPendingQuits(self) -> None:
        """
        Publish the quits the log could not take before.
        """
        quits, self._quits = self._quits, {}
        for uid, payload in quits.items():
            self.publishQuit(uid, payload.decode("utf-8", "replace"))

    def forget(self, uid: str, reason: str) -> None:
        """
        Remove a user that never reached the log.
        """
        connection = self.connections.pop(uid, None)
        if connection is not None:
            self.service.quit(connection.user, reason)

    # Applying

    def apply(self, entryId: str, data: bytes) -> None:
        """
        Apply one log entry.
        """
        self.lastId = entryId
        entry = parseEntry(data)
        if entry is None:
            self.logger.warn("cluster: ignored a malformed log entry {entryId}", entryId=entryId)
            return
        service = self.service
        service.clock.now = entry.time
        service.msgids.at(entryId)
        instance = entry.uid.partition(".")[0]
        self.applyingOwn = instance == self.instance
        try:
            handler = self._handlers.get(entry.kind)
            if handler is not None and (entry.kind in b"UD" or instance in self._liveInstances()):
                handler(self, entry)
        except Exception:
            self.logger.failure("cluster: applying log entry {entryId} failed", entryId=entryId)
        finally:
            service.clock.now = None
            self.applyingOwn = False

    def _liveInstances(self):
        return self.nodes.values()

    def _connect(self, entry: Entry) -> None:
        own = self.connections.pop(entry.uid, None)
        if own is not None:
            # Made when the client connected: from now on it is where the
            # others have it, in the same order, with the same time.
            own.inLog = True
            own.user.signon = own.user.lastSpoke = entry.time
            self.connections[entry.uid] = own
            return
        secure, _, host = entry.payload.partition(b" ")
        self.connections[entry.uid] = ShadowConnection.of(
            self.factory, entry.uid, host.decode("utf-8", "replace"), secure == b"1"
        )

    def _line(self, entry: Entry) -> None:
        connection = self.connections.get(entry.uid)
        if connection is not None:
            seq, _, line = entry.payload.partition(b" ")
            connection.applyLine(int(seq), line)

    def _quit(self, entry: Entry) -> None:
        connection = self.connections.pop(entry.uid, None)
        if connection is not None:
            self.service.quit(connection.user, entry.payload.decode("utf-8", "replace"))

    def _login(self, entry: Entry) -> None:
        connection = self.connections.get(entry.uid)
        if connection is not None:
            how, _, account = entry.payload.decode("utf-8", "replace").partition(" ")
            connection.applyLogin(how, account)

    def _registration(self, entry: Entry) -> None:
        connection = self.connections.get(entry.uid)
        if connection is not None:
            connection.applyRegistration()

    def _oper(self, entry: Entry) -> None:
        connection = self.connections.get(entry.uid)
        if connection is not None:
            connection.applyOper(entry.payload.decode("utf-8", "replace"))

    def _guest(self, entry: Entry) -> None:
        connection = self.connections.get(entry.uid)
        if connection is not None:
            connection.applyGuestNick(entry.payload.decode("ascii", "replace"))

    def recordsRead(self, records) -> None:
        """
        The directory read the registered channels' records from the store:
        the node with the lowest name puts them in the log if they changed,
        and every node takes them from there (L{_records}), at the same
        point: a channel created again is restored alike everywhere.
        """
        if not self.available:
            # Published, if this node leads, once it has joined.
            self._pendingRecords = records
            return
        if min(self.nodes, default=None) != self.nodeName:
            return
        directory = self.service.directory
        known = {foldCase(record.name): record for record in records}
        if known == directory.channels:
            return
        payload = json.dumps([attrs.asdict(record) for record in records]).encode("utf-8")
        self.publish(b"X", self.instance, payload).addErrback(lambda failure: None)

    def _records(self, entry: Entry) -> None:
        records = [channelRecordFromFields(saved) for saved in json.loads(entry.payload)]
        self.service.directory.channels = {foldCase(record.name): record for record in records}

    def whenReadyToJoin(self) -> Deferred:
        """
        @return: a L{Deferred} that fires once this node may announce itself:
            its directory has read the store once (so that the registered
            channels it read go into the log right after its C{U} entry).
        """
        whenRead = getattr(self.service.directory, "whenRead", None)
        if whenRead is None:
            from twisted.internet.defer import succeed

            return succeed(None)
        return whenRead()

    def announcement(self) -> bytes:
        """
        @return: the payload of this node's C{U} entry: its name and the
            digest of its settings.
        """
        return f"{self.nodeName} {self.settingsDigest}".encode("utf-8")

    def _nodeUp(self, entry: Entry) -> None:
        name, _, digest = entry.payload.decode("utf-8", "replace").partition(" ")
        if digest != self.settingsDigest:
            # Every node applies every user's commands with its own
            # settings: with different ones they would not agree.
            self.logger.error(
                "cluster: node {node} runs with other chat settings than this node"
                " ({digest} here, {other} there): run every node with the same"
                " --server-name, limits, --history and account options",
                node=name, digest=self.settingsDigest, other=digest,
            )
        old = self.nodes.get(name)
        if old == entry.uid:
            return
        if old is not None:
            self._netsplit(name, old)
        self.nodes[name] = entry.uid
        self.logger.info(
            "cluster: node {node} joined", node=name, instance=entry.uid,
            joined=entry.uid == self.instance,
        )
        if entry.uid == self.instance:
            self.available = True
            self.publishPendingQuits()
            # The registered channels read before this node could publish
            # them go in now, before anything its users send.
            pending, self._pendingRecords = self._pendingRecords, None
            if pending is not None:
                self.recordsRead(pending)

    def _nodeDown(self, entry: Entry) -> None:
        name = entry.payload.decode("utf-8", "replace")
        if self.nodes.get(name) != entry.uid:
            return
        del self.nodes[name]
        self._netsplit(name, entry.uid)

    def _netsplit(self, name: str, instance: str) -> None:
        """
        Node C{name} (C{instance}) is gone: its users quit, as after a
        netsplit.  If it is this node, its connections are closed: the
        cluster has forgotten them.
        """
        prefix = instance + "."
        gone = [uid for uid in self.connections if uid.startswith(prefix)]
        reason = f"{self.service.serverName} {name}"
        for uid in gone:
            connection = self.connections.pop(uid)
            self.service.quit(connection.user, reason)
        self.logger.info(
            "cluster: node {node} left; {users} users quit", node=name, users=len(gone),
        )
        if instance == self.instance:
            self.rejoin("This server lost contact with the cluster")

    def rejoin(self, reason: str) -> None:
        """
        Drop this node's own users (the cluster no longer has them) and
        join again as a new instance.
        """
        self._dropUsers(reason, everybody=False)
        if self.log is not None:
            self.log.announce(self)

    def reset(self) -> None:
        """
        Forget the whole cluster state (the log lost it): every user quits
        here, this node's are disconnected.
        """
        self._dropUsers("The cluster lost its state; please reconnect", everybody=True)
        self.nodes.clear()
        self.lastId = "0-0"

    def _dropUsers(self, reason: str, everybody: bool) -> None:
        """
        Close this node's connections and remove their users (with
        C{everybody}, every other user too), then take a new instance:
        until it joins again, this node takes no replicated commands.
        """
        self.available = False
        for connection in list(self.factory.connections):
            connection.drop(reason)
        own = self.instance + "."
        for uid in [uid for uid in self.connections if everybody or uid.startswith(own)]:
            self.service.quit(self.connections.pop(uid).user, reason)
        self._quits.clear()
        self.newInstance()

    # Snapshots

    def snapshot(self) -> dict:
        """
        @return: the whole replicated state as of L{lastId}, as JSON-able
            data: what a node that joins later starts from (the log before
            it can then be trimmed).
        """
        users = []
        for uid, connection in self.connections.items():
            if not connection.inLog:
                continue
            user = connection.user
            users.append({
                "uid": uid, "host": user.host, "secure": user.secure, "nick": user.nick,
                "username": user.username, "realname": user.realname,
                "registered": user.registered, "invisible": user.invisible,
                "away": user.away, "account": user.account, "oper": user.oper,
                "wallops": user.wallops, "caps": sorted(connection.capabilities),
                "cap302": connection._cap302, "negotiating": connection._capNegotiating,
                "pendingUsername": connection._username,
                "pendingRealname": connection._realname,
                "monitoring": user.monitoring, "signon": user.signon,
                "lastSpoke": user.lastSpoke,
            })
        channels = []
        for channel in self.service.channels.values():
            history = channel.history
            channels.append({
                "name": channel.name, "created": channel.created,
                "modes": sorted(channel.modes), "key": channel.key, "limit": channel.limit,
                "topic": channel.topic, "topicSetter": channel.topicSetter,
                "topicTime": channel.topicTime, "bans": list(channel.bans),
                "invited": list(channel.invited),
                "members": [[member.client.uid, status] for member, status in channel.members.items()],
                "history": None if history is None else [
                    [event.line.decode("utf-8", "surrogateescape"), event.time, event.msgid,
                     event.account, [list(tag) for tag in event.clientTags]]
                    for event in history.entries
                ],
            })
        return {
            "version": SNAPSHOT_VERSION, "lastId": self.lastId, "nodes": dict(self.nodes),
            "users": users, "channels": channels,
            "records": [attrs.asdict(record) for record in self.service.directory.channels.values()],
        }

    def load(self, state: dict) -> None:
        """
        Start from a snapshot, on a node with no users of its own yet.

        @raise ValueError: if C{state} is not a snapshot this version reads.
        """
        if state.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unknown snapshot version {state.get('version')!r}")
        service, factory = self.service, self.factory
        records = [channelRecordFromFields(saved) for saved in state["records"]]
        service.directory.channels = {foldCase(record.name): record for record in records}
        # The users of other nodes come from the snapshot; this node's own
        # (connected before it joined, not in the log yet) stay.
        for uid, connection in list(self.connections.items()):
            if isinstance(connection, ShadowConnection):
                service.quit(self.connections.pop(uid).user, "Cluster reset")
        for saved in state["users"]:
            shadow = ShadowConnection.of(factory, saved["uid"], saved["host"], saved["secure"])
            user = shadow.user
            shadow._cap302 = saved["cap302"]
            shadow._capNegotiating = saved["negotiating"]
            shadow._username = saved["pendingUsername"]
            shadow._realname = saved["pendingRealname"]
            shadow.capabilities = frozenset(saved["caps"])
            service.setCapabilities(user, shadow.capabilities)
            user.signon, user.lastSpoke = saved["signon"], saved["lastSpoke"]
            user.username, user.realname = saved["username"], saved["realname"]
            user.away, user.account = saved["away"], saved["account"]
            user.oper, user.wallops = saved["oper"], saved["wallops"]
            if saved["nick"] is not None:
                user.nick, user.folded = saved["nick"], foldCase(saved["nick"])
                service.users[user.folded] = user
            if saved["registered"]:
                user.registered = True
                user._rebuildPrefix()
                service.unregisteredCount -= 1
                service.registeredCount += 1
            if saved["invisible"]:
                service.setInvisible(user, True)
            if saved["monitoring"]:
                user.monitoring = dict(saved["monitoring"])
                for folded in user.monitoring:
                    service.watchers.setdefault(folded, set()).add(user)
            self.connections[saved["uid"]] = shadow
        size = service.limits.history
        for saved in state["channels"]:
            channel = Channel(saved["name"], saved["created"])
            channel.record = service.directory.channelRecord(channel.name)
            channel.modes = set(saved["modes"])
            channel.key, channel.limit = saved["key"], saved["limit"]
            channel.topic, channel.topicSetter = saved["topic"], saved["topicSetter"]
            channel.topicTime = saved["topicTime"]
            channel.bans = {mask: maskPattern(mask) for mask in saved["bans"]}
            channel.invited = OrderedDict.fromkeys(saved["invited"])
            for uid, status in saved["members"]:
                user = self.connections[uid].user
                channel.addMember(user, status)
                user.channels[channel.folded] = channel
                if user.tagMask:
                    channel.capable += 1
            if saved["history"] is not None and size > 0:
                channel.history = History(size, (
                    Relayed(line.encode("utf-8", "surrogateescape"), time, msgid, account,
                            tuple(tuple(tag) for tag in tags))
                    for line, time, msgid, account, tags in saved["history"]
                ))
            service.channels[channel.folded] = channel
        self.nodes = dict(state["nodes"])
        self.lastId = state["lastId"]

    _handlers = {
        b"C": _connect,
        b"L": _line,
        b"Q": _quit,
        b"A": _login,
        b"R": _registration,
        b"O": _oper,
        b"G": _guest,
        b"X": _records,
        b"U": _nodeUp,
        b"D": _nodeDown,
    }


def settingsDigest(service, accounts) -> str:
    """
    @return: a short digest of the settings every node of a cluster must
        share: the server name, the chat limits, and what decides the
        capabilities offered.
    """
    shared = repr((
        service.serverName, attrs.astuple(service.limits), accounts.portal is not None,
        accounts.requireAuth, accounts.nickGrace, accounts.stsPort, accounts.stsDuration,
        accounts.register is not None,
    ))
    return hashlib.sha256(shared.encode("utf-8")).hexdigest()[:12]


class ClusterFactory(ChatFactory):
    """
    Makes L{ClusterConnection}s: a chat server that is one node of a
    cluster.

    @ivar replica: this node's copy of the cluster state.
    """

    protocol = ClusterConnection

    def __init__(self, service, info, clock, *args, nodeName: str, prefix: str = "", **kwargs) -> None:
        service.clock = LogClock(service.clock)
        service.msgids = EntryMessageIds(prefix or "c")
        super().__init__(service, info, clock, *args, **kwargs)
        self.replica = ClusterReplica(self, nodeName, self.log)
        self.replica.settingsDigest = settingsDigest(service, self.accounts)
        if hasattr(service.directory, "channelsRead"):
            service.directory.channelsRead = self.replica.recordsRead
        service.directory = OriginWrites(service.directory, self.replica)
