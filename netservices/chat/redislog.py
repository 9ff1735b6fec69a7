# -*- test-case-name: tests.chat.test_redislog -*-
"""
The cluster's log in Redis (L{netservices.chat.cluster}): a Redis stream
that nodes append entries to (C{XADD}) on one connection and read in
order (C{XREAD BLOCK}) on another, heartbeat keys, and what a node does
when Redis goes away and comes back.

Keys, under C{netservices:chat:}:
 - C{log}: the stream of entries;
 - C{epoch}: a random token made when the cluster's state was first
   written: a different token after a Redis restart means Redis lost the
   state (it ran without persistence);
 - C{node:NAME}: the heartbeat of node C{NAME}, holding its instance id,
   expiring after C{timeout} seconds.

A node that finds another node's heartbeat gone appends a C{D} entry for
it: a node killed with C{kill -9} is noticed within C{timeout} plus one
heartbeat C{interval} (3 + 1 seconds by default), and its users quit
everywhere.  While Redis is unreachable, a node keeps its users
connected and refuses what would change the cluster (400 with a reason);
when it returns, the node reads on from where it was.  If Redis lost
entries this node had applied, or the whole state, the node cannot agree
with the others any more: it disconnects its users (they reconnect) and
starts again.
"""

from __future__ import annotations

import json
import urllib.parse

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectionLost
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from netservices._common.resp import RedisConnectionFactory, RedisError
from netservices.chat.cluster import ClusterReplica, ClusterUnavailable, Entry

KEY_PREFIX = "netservices:chat:"


@attrs.frozen
class RedisAddress:
    """
    Where the cluster's Redis is: C{redis://HOST:PORT/DB}.
    """

    host: str
    port: int = 6379
    db: int = 0

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"


def parseRedisURL(url: str) -> RedisAddress:
    """
    @return: the address in C{redis://HOST[:PORT][/DB]}.
    @raise ValueError: with a message for the user, if it is not one.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "redis":
        raise ValueError(f"not a redis:// URL: {url!r}")
    if parsed.username or parsed.password or parsed.query or parsed.fragment:
        raise ValueError(f"only redis://HOST:PORT/DB is supported: {url!r}")
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    if port == 0:
        raise ValueError(f"bad port in {url!r}")
    if port is None:
        port = 6379
    if not parsed.hostname:
        raise ValueError(f"no host in {url!r}")
    path = parsed.path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise ValueError(f"the database must be a number: {url!r}")
    return RedisAddress(parsed.hostname, port, int(path or 0))


def stream_id(text: str) -> tuple[int, int]:
    """
    @return: a stream entry id (C{MILLISECONDS-SEQUENCE}) as a comparable
        pair.
    """
    milliseconds, _, sequence = text.partition("-")
    return int(milliseconds), int(sequence or 0)


class RedisLog(Service):
    """
    The cluster log of one node, in Redis.

    @ivar replica: what applies the entries.
    @ivar interval: seconds between heartbeats (and checks of the others').
    @ivar timeout: seconds after which a silent node is declared dead.
    @ivar epoch: the cluster state's token, once known.
    """

    name = "cluster"
    batch = 512
    block = 2000
    #: A snapshot is stored (and the log trimmed) every C{snapshotInterval}
    #: seconds or C{snapshotEntries} entries, whichever comes first: the
    #: log holds at most about twice that.
    snapshotInterval = 30.0
    snapshotEntries = 100_000
    #: Seconds Redis has to answer a command (beyond C{block} for reads).
    replyTimeout = 5.0

    def __init__(
        self,
        replica: ClusterReplica,
        address: RedisAddress,
        reactor,
        interval: float = 1.0,
        timeout: float = 3.0,
        logger: Logger | None = None,
    ) -> None:
        self.replica = replica
        self.address = address
        self.reactor = reactor
        self.interval = interval
        self.timeout = timeout
        self.logger = logger or Logger(namespace="netservices.chat.cluster")
        self.writer = self.reader = None
        self.epoch: str | None = None
        self.counts = {"appended": 0, "applied": 0, "outages": 0}
        self._retry = None
        self._failures = 0
        self._heartbeat: LoopingCall | None = None
        self._deathsPublished: set[tuple[str, str]] = set()
        self._checkAfter = 0.0
        self._announced: str | None = None
        self._announceAttempts = 0
        self._announcing = None
        self._down = False
        self._opening = None
        self._snapshotId: str | None = None
        self._snapshotTried: str | None = None
        self._nextSnapshot = 0.0
        self._snapshotApplied = 0
        replica.log = self

    def key(self, name: str) -> str:
        return KEY_PREFIX + name

    # Connecting

    def startService(self) -> None:
        super().startService()
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = self.reactor
        self._heartbeat.start(self.interval, now=False)
        self._connect()

    def stopService(self) -> Deferred | None:
        super().stopService()
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        for call in (self._retry, self._announcing):
            if call is not None and call.active():
                call.cancel()
        writer, reader = self.writer, self.reader
        self.writer = self.reader = None
        if reader is not None:
            reader.transport.abortConnection()
        if writer is None:
            return None
        # Leave at once rather than after the heartbeat times out: the
        # others see this node's users quit now.
        replica = self.replica
        done = writer.execute(
            "XADD", self.key("log"), "*", "o",
            Entry(
                b"D", replica.instance, self.reactor.seconds(), replica.nodeName.encode("utf-8")
            ).encode(),
        )
        done.addBoth(lambda _: writer.execute("DEL", self.key("node:" + replica.nodeName)))
        done.addBoth(lambda _: writer.transport.loseConnection())
        return done

    def _open(self, timeout: float) -> Deferred:
        """
        Open a connection whose commands must be answered within
        C{timeout} seconds, or it is closed (checked every heartbeat): a
        Redis host that vanished without closing the connection is an
        outage too.
        """
        address = self.address
        endpoint = HostnameEndpoint(self.reactor, address.host, address.port, timeout=5)
        opened = endpoint.connect(RedisConnectionFactory(self.reactor, timeout))
        if address.db:
            opened.addCallback(
                lambda p: p.execute("SELECT", address.db).addCallback(lambda _: p)
            )
        return opened

    def _connect(self) -> None:
        self._retry = None
        if not self.running:
            return
        opening = DeferredList(
            [self._open(self.replyTimeout), self._open(self.block / 1000 + self.replyTimeout)],
            consumeErrors=True,
        )
        opening.addCallback(self._bothOpened)

    def _bothOpened(self, results) -> None:
        failures = [result for ok, result in results if not ok]
        if not failures:
            self._opened([result for _, result in results])
            return
        # Close the one that did open, if any: it would stay open forever.
        for ok, result in results:
            if ok:
                result.transport.abortConnection()
        self._connectFailed(failures[0])

    def _connectFailed(self, failure: Failure) -> None:
        self._failures += 1
        self._warnRarely("cannot reach {redis}", failure)
        self._scheduleRetry()

    def _warnRarely(self, what: str, failure: Failure) -> None:
        """
        Log why connecting failed, the first time and every 30th after: a
        node retries every 2 s for as long as Redis is away.
        """
        if self._failures == 1 or self._failures % 30 == 0:
            self.logger.warn(
                "cluster: " + what + ": {error}; retrying (failure {failures})",
                redis=str(self.address), error=failure.getErrorMessage(),
                failures=self._failures,
            )

    def _scheduleRetry(self) -> None:
        if self._retry is None and self.running:
            delay = min(2.0, 0.1 * 2 ** min(self._failures, 5))
            self._retry = self.reactor.callLater(delay, self._connect)

    async def _setUp(self, writer) -> None:
        """
        Check that Redis still has what this node applied.
        """
        replica = self.replica
        epoch = await writer.execute("GET", self.key("epoch"))
        if epoch is None:
            await writer.execute("SET", self.key("epoch"), replica.instance, "NX")
            epoch = await writer.execute("GET", self.key("epoch"))
        epoch = epoch.decode("ascii", "replace")
        lost = None
        if self.epoch is not None and epoch != self.epoch:
            lost = "Redis lost the cluster's state (a new epoch)"
        elif replica.lastId != "0-0":
            last = await writer.execute(
                "XREVRANGE", self.key("log"), "+", "-", "COUNT", "1"
            )
            if not last or stream_id(last[0][0].decode("ascii")) < stream_id(replica.lastId):
                lost = "Redis lost log entries this node had applied"
        if lost is not None:
            self.logger.error(
                "cluster: {reason}: disconnecting this node's users and starting again",
                reason=lost,
            )
            replica.reset()
            self._announced = None
        self.epoch = epoch
        for _ in range(3):
            if replica.lastId == "0-0":
                await self._loadSnapshot(writer)
            if not await self._trimmedPast(writer, replica.lastId):
                break
            # The log was trimmed past what this node has (it was away
            # too long, or a newer snapshot came meanwhile): start again
            # from the latest snapshot.
            replica.reset()
            self._announced = None
        else:
            raise ClusterUnavailable("the log keeps being trimmed past the snapshots")
        replica.service.msgids.prefix = epoch[:8]

    async def _loadSnapshot(self, writer) -> None:
        saved = await writer.execute("HMGET", self.key("snapshot"), "id", "data")
        if not saved or saved[1] is None:
            return
        self.replica.load(json.loads(saved[1]))
        self.logger.info(
            "cluster: started from the snapshot of {entryId} ({users} users)",
            entryId=self.replica.lastId, users=len(self.replica.connections),
        )

    async def _trimmedPast(self, writer, lastId: str) -> bool:
        """
        @return: whether entries after C{lastId} were trimmed from the log.
        """
        try:
            info = await writer.execute("XINFO", "STREAM", self.key("log"))
        except RedisError:
            return False  # no log yet
        fields = dict(zip(info[::2], info[1::2]))
        deleted = fields.get(b"max-deleted-entry-id", b"0-0").decode("ascii")
        return stream_id(deleted) > stream_id(lastId)

    def _snapshot(self, writer) -> None:
        """
        Store the state as of the last entry applied, and trim the log up to
        the previous snapshot (a node that loaded that one still finds
        what follows it).  The node with the lowest name does this.
        """
        replica = self.replica
        now = self.reactor.seconds()
        applied = self.counts["applied"]
        if (
            (now < self._nextSnapshot and applied - self._snapshotApplied < self.snapshotEntries)
            or replica.lastId in (self._snapshotId, self._snapshotTried)
            or min(replica.nodes, default=None) != replica.nodeName
        ):
            return
        self._nextSnapshot = now + self.snapshotInterval
        self._snapshotApplied = applied
        self._snapshotTried = replica.lastId
        # The log is trimmed to the last snapshot known to be stored.
        previous, entryId = self._snapshotId, replica.lastId
        data = json.dumps(replica.snapshot(), separators=(",", ":"))
        stored = writer.execute(
            "EVAL", _STORE_SNAPSHOT, 2, self.key("snapshot"), self.key("log"),
            entryId, data, previous or "",
        )

        def done(_) -> None:
            self._snapshotId = entryId

        def failed(failure: Failure) -> None:
            if not failure.check(ConnectionLost):
                self.logger.warn(
                    "cluster: storing a snapshot failed: {error}", error=failure.getErrorMessage()
                )

        stored.addCallbacks(done, failed)

    def _opened(self, protocols) -> None:
        writer, reader = protocols
        self._opening = protocols
        for protocol in protocols:
            protocol.whenLost().addCallback(self._lost)
        if not self.running:
            self._lost(writer)
            return
        setUp = Deferred.fromCoroutine(self._setUp(writer))

        def ready(_) -> None:
            if self._opening is not protocols:
                return
            self._opening = None
            self.writer, self.reader = writer, reader
            reconnected = bool(self._failures or self._down)
            if reconnected:
                self.logger.info("cluster: connected to {redis}", redis=str(self.address))
            self._failures = 0
            self._down = False
            # After an outage the others' heartbeats may have expired while
            # Redis was away: give them time to beat again before checking.
            self._checkAfter = self.reactor.seconds() + (2 * self.timeout if reconnected else 0)
            self._read(reader)
            if self._announced == self.replica.instance:
                self.replica.available = True
                self.replica.publishPendingQuits()
            else:
                self.announce()

        def failed(failure: Failure) -> None:
            if self._opening is protocols:
                self._lost(writer)
                self._warnRarely("setting up the connections to {redis} failed", failure)

        setUp.addCallbacks(ready, failed)

    def _lost(self, protocol) -> None:
        """
        One of the connections closed (or could not be set up): close the
        other, refuse cluster changes, and connect again.
        """
        current = [p for p in (self.writer, self.reader, *(self._opening or ())) if p is not None]
        if protocol not in current:
            return
        wasUp = self.writer is not None
        self.writer = self.reader = self._opening = None
        for other in current:
            if other.transport is not None and other.connected:
                other.transport.abortConnection()
        if wasUp:
            self.counts["outages"] += 1
            self._down = True
            self.replica.available = False
            self.logger.warn(
                "cluster: lost {redis}; this node's users stay connected, cluster"
                " changes are refused until it is back",
                redis=str(self.address),
            )
        self._failures += 1
        self._scheduleRetry()

    # Joining

    def announce(self, replica: ClusterReplica | None = None) -> None:
        """
        Claim this node's name and append its C{U} entry, once the replica
        is ready to join: the node takes commands once that entry is
        applied.

        @param replica: this log's replica (the argument the replica gives,
            as to any log; a log in Redis has only one).
        """
        self.replica.whenReadyToJoin().addCallback(lambda _: self._claim())

    def _claim(self) -> None:
        writer = self.writer
        if writer is None:
            return
        replica = self.replica
        instance = replica.instance
        claim = writer.execute(
            "SET", self.key("node:" + replica.nodeName), instance,
            "PX", int(self.timeout * 1000), "NX", "GET",
        )

        def claimed(previous) -> Deferred | None:
            if previous is not None and previous.decode("ascii", "replace") not in (
                instance, self._announced
            ):
                self._announceAttempts += 1
                if self._announceAttempts == 1:
                    self.logger.warn(
                        "cluster: node name {node} is taken (instance {other}); waiting"
                        " for its heartbeat to expire",
                        node=replica.nodeName, other=previous.decode("ascii", "replace"),
                    )
                if self._announcing is None or not self._announcing.active():
                    self._announcing = self.reactor.callLater(
                        self.interval, self.announce
                    )
                return None
            self._announceAttempts = 0
            self._announced = instance
            return writer.execute(
                "SET", self.key("node:" + replica.nodeName), instance,
                "PX", int(self.timeout * 1000),
            ).addCallback(lambda _: replica.publish(b"U", instance, replica.announcement()))

        def failed(failure: Failure) -> None:
            # Lost the connection: joining starts again once connected.
            # Anything else (Redis older than 7.0 refuses SET NX GET, say)
            # must not leave the node silently out of the cluster.
            if failure.check(ConnectionLost) or writer is not self.writer:
                return
            self.logger.warn(
                "cluster: joining failed: {error}; retrying", error=failure.getErrorMessage()
            )
            if self._announcing is None or not self._announcing.active():
                self._announcing = self.reactor.callLater(self.interval, self.announce)

        claim.addCallback(claimed)
        claim.addErrback(failed)

    # The log

    def append(self, data: bytes) -> Deferred:
        """
        Append an entry.

        @return: a L{Deferred} firing with its id, or failing with
            L{ClusterUnavailable}.
        """
        writer = self.writer
        if writer is None:
            return fail(ClusterUnavailable())
        self.counts["appended"] += 1
        appended = writer.execute("XADD", self.key("log"), "*", "o", data)
        appended.addErrback(lambda failure: Failure(ClusterUnavailable(failure.getErrorMessage())))
        return appended

    def _read(self, reader) -> None:
        reading = reader.execute(
            "XREAD", "COUNT", self.batch, "BLOCK", self.block,
            "STREAMS", self.key("log"), self.replica.lastId,
        )
        reading.addCallback(self._entries, reader)
        reading.addErrback(self._readFailed, reader)

    def _readFailed(self, failure: Failure, reader) -> None:
        """
        Reading the log failed other than by losing the connection (Redis
        refused, or a reply made no sense): the log must not stop being
        read, so the connection is closed, which connects again.
        """
        if reader is self.reader and not failure.check(ConnectionLost):
            self.logger.warn(
                "cluster: reading the log failed: {error}; reconnecting",
                error=failure.getErrorMessage(),
            )
            reader.transport.abortConnection()

    def _entries(self, reply, reader) -> None:
        if reader is not self.reader:
            return
        if reply:
            apply = self.replica.apply
            for _, entries in reply:
                for entryId, fields in entries:
                    self.counts["applied"] += 1
                    apply(entryId.decode("ascii"), fields[1] if len(fields) > 1 else b"")
        if reader is self.reader:
            self._read(reader)

    # Heartbeats

    def _beat(self) -> None:
        for protocol in (self.writer, self.reader, *(self._opening or ())):
            if protocol is not None:
                protocol.checkTimeouts()
        writer, replica = self.writer, self.replica
        if writer is None or self._announced != replica.instance:
            return
        beat = writer.execute(
            "SET", self.key("node:" + replica.nodeName), replica.instance,
            "PX", int(self.timeout * 1000),
        )
        beat.addErrback(lambda failure: None)
        if not replica.available:
            return
        self._snapshot(writer)
        if self.reactor.seconds() < self._checkAfter:
            return
        others = [(name, instance) for name, instance in replica.nodes.items()
                  if name != replica.nodeName]
        if not others:
            return
        checking = writer.execute(
            "MGET", *[self.key("node:" + name) for name, _ in others]
        )
        checking.addCallback(self._checked, others)
        checking.addErrback(lambda failure: None)

    def _checked(self, values, others) -> None:
        self._deathsPublished &= set(self.replica.nodes.items())
        for (name, instance), value in zip(others, values):
            if value is not None and value.decode("ascii", "replace") == instance:
                continue
            if self.replica.nodes.get(name) != instance or (name, instance) in self._deathsPublished:
                continue
            self._deathsPublished.add((name, instance))
            self.logger.warn(
                "cluster: node {node} stopped heartbeating; its users quit", node=name,
            )
            self.replica.publish(b"D", instance, name.encode("utf-8")).addErrback(
                lambda failure, key=(name, instance): self._deathsPublished.discard(key)
            )


#: Store a snapshot (KEYS[1]) and trim the log (KEYS[2]) to the previous
#: one's id (ARGV[3], if any), at once.
_STORE_SNAPSHOT = """
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'data', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('XTRIM', KEYS[2], 'MINID', ARGV[3])
end
return 1
"""
