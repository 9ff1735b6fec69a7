"""
Tests for L{netservices.chat.redisstore}: the chat store of a cluster, in
Redis.  The store tests of L{tests.chat.test_store} run again on a
L{RedisStore}; then what only Redis has: reaching it, several writers at
once, C{chat-admin --cluster}, and a chat node with C{--cluster} logging a
user in to an account kept there.

Each test that needs Redis starts a C{redis-server} of its own
(L{RedisServer}: a free port of 127.0.0.1, data in a temporary directory),
so that every test starts from an empty database, and stops it after by
its own PID.  Nothing waits by sleeping.
"""

from __future__ import annotations

import base64
import io
import shutil
import socket
import sys
import threading

import redis
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netservices._common.client import ClientError
from netservices.chat.accounts import PasswordHasher
from netservices.chat.redislog import RedisAddress, parseRedisURL
from netservices.chat.redisstore import KEY_PREFIX, SCHEMA_VERSION, RedisStore
from netservices.chat.store import (
    DATABASE_NAME,
    STORE_METHODS,
    Account,
    AccountExists,
    AccountOwnsChannels,
    ChannelRecord,
    FingerprintInUse,
    HistoryEntry,
    NoSuchAccount,
    StoreError,
    StoreService,
    ThreadedStore,
)
from netservices.chat.tap import makeService
from netservices.testing import RedisServer, oneLineFailure, runCommand
# The module, not its test cases: pytest would run those here too.
from tests.chat import test_store
from tests.chat.test_admin import parse
from tests.chat.test_cluster_redis import logged
from tests.chat.test_integration import SERVER, ChatTestCase, tcp
from tests.chat.test_store import FINGERPRINT, HASH, temporaryDirectory
from tests.chat.test_tap import parse as parseChat

#: Why the tests that need Redis are skipped, if they are.
NO_REDIS = (
    None if shutil.which("redis-server")
    else "redis-server is not installed (the Redis store's tests need it)"
)


def unusedAddress() -> RedisAddress:
    """
    @return: the address of a loopback port that nothing listens on (it
        was free a moment ago).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return RedisAddress("127.0.0.1", port, 0)


class RedisMixin:
    """
    For a L{TestCase}: Redis servers and stores on them, stopped and closed
    after the test.

    @ivar redis: the server L{setUp} started.
    """

    skip = NO_REDIS

    async def setUp(self):
        self.redis = await self.startRedis()
        super().setUp()

    async def startRedis(self, server: RedisServer | None = None) -> RedisServer:
        """
        Start C{server} (default: a new one).

        @return: the server, stopped after the test.
        """
        if server is None:
            server = RedisServer(reactor, temporaryDirectory(self))
        await server.start()
        self.addCleanup(server.stop)
        return server

    def address(self) -> RedisAddress:
        """
        @return: the address of L{redis}.
        """
        return parseRedisURL(self.redis.url)

    def openRedisStore(self) -> RedisStore:
        """
        @return: a store on L{redis}, closed after the test.
        """
        store = RedisStore.open(self.address())
        self.addCleanup(store.close)
        return store

    def rawClient(self) -> redis.Redis:
        """
        @return: a plain client of L{redis}, closed after the test.
        """
        client = redis.Redis("127.0.0.1", self.redis.port, decode_responses=True)
        self.addCleanup(client.close)
        return client


class RedisStoreTestsMixin(RedisMixin):
    """
    Runs the tests of a store test case of L{tests.chat.test_store} on a
    L{RedisStore}.
    """

    def makeStore(self) -> RedisStore:
        return self.openRedisStore()


class RedisAccountTests(RedisStoreTestsMixin, test_store.AccountTests, TestCase):
    """
    Accounts in L{RedisStore}.
    """


class RedisChannelTests(RedisStoreTestsMixin, test_store.ChannelTests, TestCase):
    """
    Registered channels in L{RedisStore}.
    """


class RedisHistoryTests(RedisStoreTestsMixin, test_store.HistoryTests, TestCase):
    """
    The history of registered channels in L{RedisStore}.
    """

    def storedEntries(self) -> int:
        client = self.rawClient()
        return sum(client.llen(key) for key in client.keys(KEY_PREFIX + "history:*"))

    def test_migrationFromVersion1(self):
        """
        SQLite's schema migration: nothing of the kind in Redis.
        """

    test_migrationFromVersion1.skip = "SQLite only"


class RedisSettingTests(RedisStoreTestsMixin, test_store.SettingTests, TestCase):
    """
    Settings in L{RedisStore}.
    """


class UnreachableTests(SynchronousTestCase):
    """
    Redis that cannot be reached.
    """

    def test_open(self):
        """
        L{RedisStore.open} fails with a L{StoreError} of one line that says
        where and why.
        """
        address = unusedAddress()
        error = self.assertRaises(StoreError, RedisStore.open, address)
        self.assertIn(f"Redis at {address}: ", str(error))
        self.assertIn("Connection refused", str(error))
        self.assertNotIn("\n", str(error))

    def test_api(self):
        """
        L{RedisStore} has every method of L{STORE_METHODS}.
        """
        self.assertEqual([m for m in STORE_METHODS if not hasattr(RedisStore, m)], [])


class AdminUnreachableTests(TestCase):
    """
    C{chat-admin --cluster} when Redis cannot be reached.
    """

    async def test_oneLine(self):
        """
        One line on standard error, status 1, no traceback.
        """
        address = unusedAddress()
        result = await runCommand(reactor, ["chat-admin", "--cluster", str(address), "user", "list"])
        line = oneLineFailure(self, result, str(address), "Connection refused", code=1)
        self.assertTrue(line.startswith("netservices chat-admin user list: "), line)


def interleave(testCase, store: RedisStore, other) -> list[int]:
    """
    Make C{other()} run once inside C{store}'s next transaction, after its
    reads and before its writes: as a writer in another process that
    commits at that moment.

    @return: a list that gets one item per attempt of that transaction.
    """
    transaction = store._transaction
    pending = [other]
    attempts: list[int] = []

    def interleaved(change, *keys):
        def changeAfterOther(pipe):
            attempts.append(1)
            multi = type(pipe).multi.__get__(pipe)

            def otherThenMulti():
                while pending:
                    pending.pop()()
                multi()

            pipe.multi = otherThenMulti
            return change(pipe)

        return transaction(changeAfterOther, *keys)

    testCase.patch(store, "_transaction", interleaved)
    return attempts


class RedisOnlyTests(RedisMixin, TestCase):
    """
    What only the Redis store has: its keys, several stores on one Redis,
    writers racing, Redis going away and coming back.
    """

    def test_keys(self):
        """
        Every key is under C{netservices:chat:store:}, apart from the
        cluster log's keys.
        """
        store = self.openRedisStore()
        store.addAccount(Account("alice", HASH, certificateFingerprint=FINGERPRINT))
        store.registerChannel(ChannelRecord("#Lobby", "alice"))
        store.appendHistory([("#lobby", HistoryEntry(1.0, "m1", b"x\r\n"))])
        store.setSetting("motd", "hi")
        self.assertEqual(
            sorted(self.rawClient().keys("*")),
            [KEY_PREFIX + key for key in
             ["accounts", "channels", "fingerprints", "history:#lobby", "schema", "settings"]],
        )
        self.assertEqual(store.schemaVersion(), SCHEMA_VERSION)

    def test_newerSchemaRefused(self):
        """
        A layout from a newer version is refused with one line naming both
        versions.
        """
        self.rawClient().set(KEY_PREFIX + "schema", "99")
        error = self.assertRaises(StoreError, RedisStore.open, self.address())
        self.assertIn("schema version 99", str(error))
        self.assertIn(f"({SCHEMA_VERSION})", str(error))
        self.assertNotIn("\n", str(error))

    def test_sharedBetweenStores(self):
        """
        What one store writes, another on the same Redis reads at once.
        """
        one, other = self.openRedisStore(), self.openRedisStore()
        one.addAccount(Account("Alice", HASH, oper=True, created=5.0))
        one.registerChannel(ChannelRecord("#Lobby", "alice", topic="hi"))
        one.appendHistory([("#lobby", HistoryEntry(1.5, "m1", b"\xff line\r\n", "Alice"))])
        one.setSetting("network", "HomeNet")
        self.assertEqual(other.getAccount("ALICE"), Account("Alice", HASH, True, None, 5.0))
        self.assertEqual(other.listChannels(), [ChannelRecord("#Lobby", "Alice", topic="hi")])
        self.assertEqual(other.getHistory("#LOBBY"),
                         [HistoryEntry(1.5, "m1", b"\xff line\r\n", "Alice")])
        self.assertEqual(other.getSetting("network"), "HomeNet")
        other.deleteAccount("alice", force=True)
        self.assertEqual((one.listAccounts(), one.listChannels(), one.getHistory("#lobby")),
                         ([], [], []))

    def test_raceForAnAccount(self):
        """
        Two stores add the same account: the one that finds it free but
        commits second reads again and fails with L{AccountExists}; the
        account is the first one's.
        """
        one, other = self.openRedisStore(), self.openRedisStore()
        attempts = interleave(self, one, lambda: other.addAccount(Account("ALICE", HASH + "2")))
        self.assertRaises(AccountExists, one.addAccount, Account("alice", HASH + "1"))
        self.assertEqual(len(attempts), 2)
        self.assertEqual(one.listAccounts(), [Account("ALICE", HASH + "2")])

    def test_raceForAFingerprint(self):
        """
        A fingerprint registered by another account between the check and
        the write is L{FingerprintInUse}.
        """
        one, other = self.openRedisStore(), self.openRedisStore()
        for name in ("alice", "bob"):
            one.addAccount(Account(name, HASH))
        attempts = interleave(self, one, lambda: other.setCertificateFingerprint("bob", FINGERPRINT))
        self.assertRaises(FingerprintInUse, one.setCertificateFingerprint, "alice", FINGERPRINT)
        self.assertEqual(len(attempts), 2)
        self.assertEqual(one.accountForFingerprint(FINGERPRINT), "bob")
        self.assertIsNone(one.getAccount("alice").certificateFingerprint)

    def test_raceDeleteAndRegister(self):
        """
        A channel registered with the account as founder while it is being
        deleted stops the deletion (L{AccountOwnsChannels}); an account
        deleted while a channel is being registered for it stops the
        registration (L{NoSuchAccount}).  No channel is left without its
        founder.
        """
        one, other = self.openRedisStore(), self.openRedisStore()
        one.addAccount(Account("alice", HASH))
        interleave(self, one, lambda: other.registerChannel(ChannelRecord("#a", "alice")))
        error = self.assertRaises(AccountOwnsChannels, one.deleteAccount, "alice")
        self.assertEqual(error.channels, ["#a"])

        one.addAccount(Account("bob", HASH))
        interleave(self, other, lambda: one.deleteAccount("bob"))
        self.assertRaises(NoSuchAccount, other.registerChannel, ChannelRecord("#b", "bob"))
        self.assertEqual([c.name for c in one.listChannels()], ["#a"])

    def test_threads(self):
        """
        Eight stores on eight threads add the same account at once: exactly
        one succeeds.  Then each appends history to one channel, which
        keeps exactly its last 10 entries, each thread's in its order.
        """
        stores = [self.openRedisStore() for _ in range(8)]
        stores[0].addAccount(Account("founder", HASH))
        stores[0].registerChannel(ChannelRecord("#c", "founder"))
        outcomes: list[str | None] = [None] * len(stores)
        barrier = threading.Barrier(len(stores), timeout=10)

        def add(i: int) -> None:
            barrier.wait()
            try:
                stores[i].addAccount(Account("alice", f"{HASH}{i}"))
            except AccountExists:
                outcomes[i] = "exists"
            else:
                outcomes[i] = "added"
            barrier.wait()
            for n in range(20):
                stores[i].appendHistory(
                    [("#c", HistoryEntry(float(n), f"{i}-{n}", b"x\r\n"))], keep=10
                )

        threads = [threading.Thread(target=add, args=(i,)) for i in range(len(stores))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(sorted(outcomes), ["added"] + ["exists"] * 7)
        winner = outcomes.index("added")
        self.assertEqual(stores[0].getAccount("alice").passwordHash, f"{HASH}{winner}")
        history = [entry.msgid.split("-") for entry in stores[0].getHistory("#c")]
        self.assertEqual(len(history), 10)
        for i in range(len(stores)):
            numbers = [int(n) for thread, n in history if thread == str(i)]
            self.assertEqual(numbers, sorted(numbers))

    async def test_redisAway(self):
        """
        A store made with L{RedisStore.connect} (the server's) while Redis
        is away fails each call with a one-line L{StoreError}, and works
        once Redis is back; what it wrote survives a Redis restart.
        """
        later = RedisServer(reactor, temporaryDirectory(self))
        store = RedisStore.connect(parseRedisURL(later.url))
        self.addCleanup(store.close)
        error = self.assertRaises(StoreError, store.listAccounts)
        self.assertIn(later.url, str(error))
        self.assertNotIn("\n", str(error))
        await self.startRedis(later)
        store.addAccount(Account("alice", HASH))
        self.assertEqual(await later.stop(), 0)
        self.assertRaises(StoreError, store.getAccount, "alice")
        await later.start()
        self.assertEqual(store.getAccount("alice"), Account("alice", HASH))


class ThreadedRedisStoreTests(RedisMixin, TestCase):
    """
    L{ThreadedStore} running a L{RedisStore}.
    """

    async def test_opener(self):
        """
        With an C{opener}, L{ThreadedStore} runs the store it opens, on its
        thread, and calls it by the description given.
        """
        address = self.address()
        store = ThreadedStore(str(address), reactor, opener=lambda: RedisStore.connect(address))
        self.assertEqual((store.description, store.path), (self.redis.url, None))
        await store.start()
        try:
            await store.addAccount(Account("alice", HASH))
            self.assertEqual((await store.getAccount("ALICE")).name, "alice")
            self.assertIsInstance(store._store, RedisStore)
            with self.assertRaises(AccountExists):
                await store.addAccount(Account("alice", HASH))
        finally:
            await store.stop()
        self.assertIsNone(store._store)


class AdminTests(RedisMixin, TestCase):
    """
    C{chat-admin --cluster}: the store in Redis.
    """

    def run_(self, *argv: str) -> str:
        """
        Parse and run C{netservices chat-admin --cluster URL ARGV}.

        @return: what it printed.
        """
        output = io.StringIO()
        self.patch(sys, "stdout", output)
        leaf = parse(["chat-admin", "--cluster", self.redis.url, *argv])
        self.successResultOf(Deferred.fromCoroutine(leaf.run(None)))
        return output.getvalue()

    def test_commands(self):
        """
        Accounts, operators, channels and settings go to Redis, with an
        Argon2id hash; a refusal is a L{ClientError} that says why.
        """
        password = temporaryDirectory(self) / "password"
        password.write_text("correct horse\n")
        self.assertEqual(self.run_("user", "add", "alice", "--password-file", str(password)),
                         "added account alice\n")
        self.run_("oper", "grant", "alice")
        self.run_("channel", "register", "#Lobby", "--founder", "ALICE")
        self.run_("setting", "set", "network", "HomeNet")
        self.assertEqual(self.run_("channel", "list").splitlines()[1].split(),
                         ["#Lobby", "alice", "+nt"])
        store = self.openRedisStore()
        account = store.getAccount("alice")
        self.assertTrue(account.oper)
        self.assertTrue(PasswordHasher().verify(account.passwordHash, "correct horse"))
        self.assertEqual(store.listSettings(), {"network": "HomeNet"})
        leaf = parse(["chat-admin", "--cluster", self.redis.url, "user", "del", "alice"])
        error = self.failureResultOf(Deferred.fromCoroutine(leaf.run(None)), ClientError)
        self.assertIn("founded #Lobby; drop it first, or use --force", str(error.value))

    def test_usage(self):
        """
        C{--cluster} takes a C{redis://} URL, and not with C{--data-dir};
        C{--help} tells of it.
        """
        for argv, message in [
            (["--cluster", self.redis.url, "--data-dir", "/tmp/x"], "exclude each other"),
            (["--cluster", "http://x/0"], "--cluster: not a redis:// URL"),
        ]:
            error = self.assertRaises(usage.UsageError, parse, ["chat-admin", *argv, "user", "list"])
            self.assertIn(message, str(error))
        from netservices.chat.admin import ChatAdminOptions

        self.assertIn("--cluster", str(ChatAdminOptions()))


class NodeTests(RedisMixin, ChatTestCase):
    """
    A chat node with C{--cluster} keeps its accounts in the cluster's
    Redis.
    """

    async def test_loginToAdminAccount(self):
        """
        An account added with C{chat-admin --cluster} logs in with SASL
        PLAIN from loopback on a node started with that C{--cluster}; the
        node said where the accounts are, and made no SQLite file.
        """
        directory = self.temporaryDirectory()
        password = directory / "password"
        password.write_text("correct horse\n")
        added = await runCommand(
            reactor,
            ["chat-admin", "--cluster", self.redis.url, "user", "add", "alice",
             "--password-file", str(password)],
        )
        self.assertEqual(added, (b"added account alice\n", b"", 0))
        state = directory / "state"
        node = await self.startServer(
            ["chat", "--data-dir", str(state), "--server-name", SERVER,
             "--listen", "tcp:0:interface=127.0.0.1",
             "--cluster", self.redis.url, "--node-name", "node1"],
            1,
        )
        self.assertEqual(
            len(node.eventsMatching(logged("chat accounts in {redis}", redis=self.redis.url))), 1
        )
        await node.waitForEvent(logged("cluster: node {node} joined", node="node1"), timeout=15)
        [(host, port)] = node.addresses
        client = await self.connect(tcp(port, host), "x", register=False)
        answer = client.linesUntil(lambda line: " 903 " in line or " 904 " in line)
        plain = base64.b64encode(b"\0alice\0correct horse").decode()
        for line in ("CAP LS 302", "CAP REQ :sasl", "AUTHENTICATE PLAIN", f"AUTHENTICATE {plain}"):
            client.sendLine(line)
        lines = await answer
        self.assertEqual(lines[-1], f":{SERVER} 903 * :SASL authentication successful")
        self.assertIn(
            f":{SERVER} 900 * *!*@127.0.0.1 alice :You are now logged in as alice", lines
        )
        self.assertFalse((state / DATABASE_NAME).exists())

    async def test_registeredChannelAtOnce(self):
        """
        A channel registered with C{chat-admin --cluster} before the node
        starts is a registered channel as soon as the node has joined:
        whoever joins it first does not become its operator.
        """
        directory = self.temporaryDirectory()
        password = directory / "password"
        password.write_text("correct horse\n")
        for command in (
            ["user", "add", "alice", "--password-file", str(password)],
            ["channel", "register", "#lobby", "--founder", "alice"],
        ):
            done = await runCommand(reactor, ["chat-admin", "--cluster", self.redis.url, *command])
            self.assertEqual(done[2], 0, done)
        node = await self.startServer(
            ["chat", "--data-dir", str(directory / "state"), "--server-name", SERVER,
             "--listen", "tcp:0:interface=127.0.0.1",
             "--cluster", self.redis.url, "--node-name", "node1"],
            1,
        )
        await node.waitForEvent(logged("cluster: node {node} joined", node="node1"), timeout=15)
        [(host, port)] = node.addresses
        bob = await self.connect(tcp(port, host), "bob")
        names = bob.linesUntil(lambda line: " 366 " in line)
        bob.sendLine("JOIN #lobby")
        self.assertIn(f":{SERVER} 353 bob = #lobby :bob", await names)


class TapTests(SynchronousTestCase):
    """
    C{twistd netservices chat --cluster} keeps its accounts in the
    cluster's Redis.
    """

    def test_storeInRedis(self):
        """
        With C{--cluster} the server's store is a L{RedisStore} at the
        cluster's address, called by its URL; nothing is contacted while
        the service is made, and the state directory gets no SQLite file.
        """
        directory = temporaryDirectory(self)
        address = unusedAddress()
        options = parseChat(
            "--data-dir", str(directory), "--port", "0",
            "--cluster", str(address), "--node-name", "n1",
        )
        top = makeService(options, options.reactor)
        [storeService] = [s for s in top if isinstance(s, StoreService)]
        store = storeService.store
        self.assertEqual((store.description, store.path), (str(address), None))
        opened = store._opener()
        self.addCleanup(opened.close)
        self.assertIsInstance(opened, RedisStore)
        self.assertEqual(opened.address, address)
        self.assertFalse((directory / DATABASE_NAME).exists())
