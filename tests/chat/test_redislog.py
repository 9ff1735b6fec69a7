"""
Tests for L{netservices.chat.redislog}: chat nodes in this process on a
real C{redis-server} of the test's own: snapshots and trimming, a node
joining late, a node name in use, and Redis losing its state.
"""

import shutil
import signal

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from netservices._common.resp import RedisConnectionFactory
from netservices.chat.cluster import ClusterFactory
from netservices.chat.protocol import ConnectionSettings, ServerInfo
from netservices.chat.redislog import RedisLog, parseRedisURL
from netservices.chat.service import ChatService
from netservices.testing import RedisServer, TwistdTestCase

skipIfNoRedis = None if shutil.which("redis-server") else "redis-server is not installed"


async def until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    """
    Wait, checking every 10 ms of the reactor's clock, until C{predicate()}
    is true.

    @raise AssertionError: after C{timeout} seconds.
    """
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.01, lambda: None)


class Node:
    """
    A chat node in this process: service, factory and Redis log, with
    clients on string transports.
    """

    def __init__(
        self, test: TestCase, redis: RedisServer, name: str, interval: float = 1.0, **settings
    ) -> None:
        """
        @param settings: attributes of the L{RedisLog} to set before it
            starts (C{replyTimeout}, C{block}...).
        """
        self.service = ChatService("irc.test", reactor)
        self.factory = ClusterFactory(
            self.service, ServerInfo(name="irc.test"), reactor,
            ConnectionSettings(floodRate=0), nodeName=name,
        )
        self.replica = self.factory.replica
        self.log = RedisLog(self.replica, parseRedisURL(redis.url), reactor, interval=interval)
        for attribute, value in settings.items():
            setattr(self.log, attribute, value)
        self.factory.startFactory()
        self.log.startService()
        test.addCleanup(self.stop)

    def stop(self) -> Deferred | None:
        self.factory.stopFactory()
        if self.log.running:
            return self.log.stopService()
        return None

    def joined(self) -> bool:
        return self.replica.available

    def client(self, nick: str) -> StringTransport:
        """
        @return: the transport of a new client that sent NICK and USER.
        """
        transport = StringTransport()
        protocol = self.factory.buildProtocol(transport.getPeer())
        protocol.makeConnection(transport)
        protocol.dataReceived(f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode())
        transport.protocol = protocol
        return transport


class RedisLogTests(TwistdTestCase):
    """
    Nodes on a real Redis.
    """

    skip = skipIfNoRedis

    async def startRedis(self) -> RedisServer:
        redis = RedisServer(reactor, self.temporaryDirectory())
        await redis.start()
        self.addCleanup(redis.stop)
        return redis

    async def command(self, node: Node, *args):
        """
        @return: what Redis answers C{args} on C{node}'s connection.
        """
        return await node.log.writer.execute(*args)

    async def test_snapshotTrimAndLateJoin(self) -> None:
        """
        The node with the lowest name stores snapshots and trims the log
        behind them; a node that starts later loads the latest snapshot,
        knows the users and channels it holds, and follows from there.
        """
        redis = await self.startRedis()
        first = Node(self, redis, "a", interval=0.05)
        first.log.snapshotInterval = 0.0
        await until(first.joined, what="node a joined")
        alice = first.client("alice")
        await until(lambda: b" 001 alice " in alice.value(), what="alice registered")
        alice.protocol.dataReceived(b"JOIN #room\r\n")
        for number in range(50):
            alice.protocol.dataReceived(b"PRIVMSG #room :message %d\r\n" % number)
        await until(lambda: first.log.counts["applied"] >= 54, what="messages applied")
        snapshotId = first.replica.lastId
        await until(
            lambda: first.log._snapshotId == snapshotId and first.log._nextSnapshot, what="snapshot"
        )
        # One more round trims the log to that snapshot.
        alice.protocol.dataReceived(b"TOPIC #room :after the snapshot\r\n")
        await until(lambda: first.log._snapshotId != snapshotId, what="a second snapshot")
        length = await self.command(first, "XLEN", "netservices:chat:log")
        self.assertLess(int(length), 20)

        late = Node(self, redis, "b", interval=0.05)
        await until(late.joined, what="node b joined")
        self.assertEqual(late.service.findUser("alice").client.uid, alice.protocol.uid)
        self.assertEqual(late.service.findChannel("#room").topic, "after the snapshot")
        self.assertEqual(len(late.service.findChannel("#room").history.entries), 50)
        bob = late.client("bob")
        await until(lambda: b" 001 bob " in bob.value(), what="bob registered")
        bob.protocol.dataReceived(b"JOIN #room\r\nPRIVMSG #room :hi from b\r\n")
        await until(lambda: b"PRIVMSG #room :hi from b" in alice.value(), what="relay to alice")
        self.assertEqual(late.replica.snapshot(), first.replica.snapshot())

    async def test_nodeNameTaken(self) -> None:
        """
        A second node with the name of a live one does not join: it waits
        for that name's heartbeat to expire.
        """
        redis = await self.startRedis()
        first = Node(self, redis, "a", interval=0.05)
        await until(first.joined, what="node a joined")
        second = Node(self, redis, "a", interval=0.05)
        await until(lambda: second.log._announceAttempts >= 3, what="retries")
        self.assertFalse(second.joined())
        self.assertEqual(list(first.replica.nodes), ["a"])

    async def test_redisLostItsState(self) -> None:
        """
        If Redis comes back without the cluster's state (it ran without
        persistence), a node cannot agree with the others any more: it
        disconnects its users and joins again from nothing.
        """
        redis = await self.startRedis()
        node = Node(self, redis, "a", interval=0.05)
        await until(node.joined, what="node a joined")
        alice = node.client("alice")
        await until(lambda: b" 001 alice " in alice.value(), what="alice registered")
        oldInstance = node.replica.instance
        await redis.stop()
        await until(lambda: not node.joined(), what="the outage noticed")
        for path in redis.directory.iterdir():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        await redis.start()
        await until(node.joined, what="node a joined again")
        self.assertIn(b"The cluster lost its state; please reconnect", alice.value())
        self.assertTrue(alice.disconnecting)
        self.assertNotEqual(node.replica.instance, oldInstance)
        self.assertIsNone(node.service.findUser("alice"))

    async def test_redisHangs(self) -> None:
        """
        A Redis that stops answering without closing its connections (a
        host gone, here a stopped process) is an outage too, noticed after
        the reply timeout; the node joins again when Redis answers.
        """
        redis = await self.startRedis()
        node = Node(self, redis, "a", interval=0.05, replyTimeout=0.3, block=100)
        await until(node.joined, what="node a joined")
        alice = node.client("alice")
        await until(lambda: b" 001 alice " in alice.value(), what="alice registered")
        redis.process.sendSignal("STOP")
        try:
            await until(lambda: not node.joined(), what="the hang noticed")
            alice.protocol.dataReceived(b"JOIN #a\r\n")
            await until(
                lambda: b"400 alice JOIN :The cluster is unavailable" in alice.value(),
                what="JOIN refused",
            )
        finally:
            redis.process.sendSignal(signal.SIGCONT)
        await until(node.joined, what="node a back")
        self.assertFalse(alice.disconnecting)
        self.assertEqual(node.log.counts["outages"], 1)

    async def test_readRefused(self) -> None:
        """
        If Redis refuses to read the log (here the key holds another type),
        the node does not stop reading: it reconnects, and reads on once
        the log is readable.
        """
        redis = await self.startRedis()
        node = Node(self, redis, "a", interval=0.05)
        await until(node.joined, what="node a joined")
        outages = node.log.counts["outages"]
        saved = await self.command(node, "DUMP", "netservices:chat:log")
        await self.command(node, "DEL", "netservices:chat:log")
        await self.command(node, "SET", "netservices:chat:log", "not a stream")
        await until(lambda: node.log.counts["outages"] > outages, what="the reconnection")
        # It cannot set up again while the log is unreadable either: repair
        # it on a connection of the test's own.
        admin = await TCP4ClientEndpoint(reactor, "127.0.0.1", redis.port).connect(
            RedisConnectionFactory(reactor)
        )
        self.addCleanup(admin.transport.loseConnection)
        await admin.execute("DEL", "netservices:chat:log")
        await admin.execute("RESTORE", "netservices:chat:log", "0", saved)
        await until(lambda: node.log.writer is not None, what="connected again")
        alice = node.client("alice")
        await until(lambda: b" 001 alice " in alice.value(), what="alice registered")


    async def test_joiningRefused(self) -> None:
        """
        If Redis refuses a node's claim to its name (here the key holds
        another type), the node tries again, and joins once it can.
        """
        redis = await self.startRedis()
        admin = await TCP4ClientEndpoint(reactor, "127.0.0.1", redis.port).connect(
            RedisConnectionFactory(reactor)
        )
        self.addCleanup(admin.transport.loseConnection)
        await admin.execute("HSET", "netservices:chat:node:a", "not", "a heartbeat")
        node = Node(self, redis, "a", interval=0.05)
        await until(lambda: node.log._announcing is not None, what="a retry")
        self.assertFalse(node.joined())
        await admin.execute("DEL", "netservices:chat:node:a")
        await until(node.joined, what="node a joined")


class ConnectingTests(TestCase):
    """
    Opening the two connections to Redis, without Redis.
    """

    def test_halfOpened(self) -> None:
        """
        When one of the two connections opens and the other fails, the one
        that opened is closed (not left open for ever) and the node tries
        again later.
        """
        from twisted.internet.defer import fail, succeed
        from twisted.internet.testing import MemoryReactorClock

        from netservices._common.resp import RedisConnection

        clock = MemoryReactorClock()
        service = ChatService("irc.test", clock)
        factory = ClusterFactory(service, ServerInfo(name="irc.test"), clock, nodeName="a")
        log = RedisLog(factory.replica, parseRedisURL("redis://127.0.0.1:1/0"), clock)
        opened = RedisConnection(clock)
        opened.makeConnection(StringTransport())
        attempts = []

        def open(timeout):
            attempts.append(timeout)
            if len(attempts) % 2:
                return succeed(opened)
            return fail(ConnectionRefusedError("refused"))

        log._open = open
        log.startService()
        self.addCleanup(log.stopService)
        self.assertEqual(len(attempts), 2)
        self.assertTrue(opened.transport.disconnecting)
        self.assertIsNone(log.writer)
        clock.advance(1)
        self.assertEqual(len(attempts), 4)

