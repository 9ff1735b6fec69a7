"""
Tests for L{netservices.chat.store}: the SQLite store of accounts,
registered channels and settings, its thread, and its durability when the
process writing it is killed with C{SIGKILL}.
"""

from __future__ import annotations

import shutil
import sqlite3
import stat
import sys
import tempfile
import threading
from pathlib import Path

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netservices.chat.store import (
    DATABASE_NAME,
    SCHEMA_VERSION,
    Account,
    AccountExists,
    AccountOwnsChannels,
    ChannelExists,
    ChannelRecord,
    FingerprintInUse,
    HistoryEntry,
    NoSuchAccount,
    NoSuchChannel,
    Store,
    StoreError,
    StoreService,
    ThreadedStore,
    normalizeFingerprint,
)
from netservices.testing import SynchronousThreadPool, ThreadedClock, childEnvironment

#: A PHC string, as the store takes; nothing verifies it here.
HASH = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"

FINGERPRINT = "85:58:E1:30:EA:C7:9E:3F:AD:EB:75:D9:55:06:62:8F:1C:E8:6F:CD:3F:7D:55:F6:95:AE:81:A6:7A:E1:98:1A"

ROOT = Path(__file__).resolve().parents[2]


def temporaryDirectory(testCase) -> Path:
    """
    @return: a new directory, removed after the test (not under the current
        directory).
    """
    directory = Path(tempfile.mkdtemp(prefix="netservices-test-"))
    testCase.addCleanup(shutil.rmtree, directory, True)
    return directory


def openStore(testCase) -> Store:
    """
    @return: a new store in a temporary directory, closed after the test.
    """
    store = Store.open(temporaryDirectory(testCase) / DATABASE_NAME)
    testCase.addCleanup(store.close)
    return store


class OpenTests(SynchronousTestCase):
    """
    L{Store.open}: the file, its mode, WAL, the schema version.
    """

    def test_createdOnFirstOpen(self):
        """
        The first open creates the file with mode 0600 (its WAL too), in
        WAL mode with C{synchronous=FULL}, at the current schema version.
        """
        path = temporaryDirectory(self) / DATABASE_NAME
        store = Store.open(path)
        self.addCleanup(store.close)
        store.setSetting("x", "y")
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        wal = path.with_name(path.name + "-wal")
        self.assertEqual(stat.S_IMODE(wal.stat().st_mode), 0o600)
        self.assertEqual(store.schemaVersion(), SCHEMA_VERSION)
        self.assertEqual(store._db.execute("PRAGMA journal_mode").fetchone(), ("wal",))
        self.assertEqual(store._db.execute("PRAGMA synchronous").fetchone(), (2,))  # FULL

    def test_looseModeTightened(self):
        """
        An existing file readable by others is made 0600.
        """
        path = temporaryDirectory(self) / DATABASE_NAME
        path.touch()
        path.chmod(0o644)
        Store.open(path).close()
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)

    def test_reopen(self):
        """
        What was written is there after closing and opening again.
        """
        path = temporaryDirectory(self) / DATABASE_NAME
        store = Store.open(path)
        store.addAccount(Account("alice", HASH))
        store.close()
        store = Store.open(path)
        self.addCleanup(store.close)
        self.assertEqual(store.getAccount("alice"), Account("alice", HASH))

    def test_newerSchemaRefused(self):
        """
        A file from a newer version (a higher C{user_version}) is refused
        with one line naming both versions.
        """
        path = temporaryDirectory(self) / DATABASE_NAME
        Store.open(path).close()
        connection = sqlite3.connect(path)
        connection.execute("PRAGMA user_version = 99")
        connection.close()
        error = self.assertRaises(StoreError, Store.open, path)
        self.assertIn("schema version 99", str(error))
        self.assertIn(f"({SCHEMA_VERSION})", str(error))
        self.assertNotIn("\n", str(error))

    def test_notADatabase(self):
        """
        A file that is not a database is refused with one line.
        """
        path = temporaryDirectory(self) / DATABASE_NAME
        path.write_bytes(b"not a database, really not at all" * 100)
        error = self.assertRaises(StoreError, Store.open, path)
        self.assertIn(str(path), str(error))
        self.assertNotIn("\n", str(error))

    def test_noDirectory(self):
        """
        A missing directory is one line with the reason.
        """
        path = temporaryDirectory(self) / "missing" / DATABASE_NAME
        error = self.assertRaises(StoreError, Store.open, path)
        self.assertIn("No such file or directory", str(error))


class StoreTestCase(SynchronousTestCase):
    """
    Tests of a store, by default a L{Store}; subclasses test another kind
    (L{tests.chat.test_redisstore}) by overriding L{makeStore}.
    """

    def makeStore(self):
        """
        @return: a new, empty store, closed after the test.
        """
        return openStore(self)


class AccountTests(StoreTestCase):
    """
    Accounts in L{Store}.
    """

    def setUp(self):
        self.store = self.makeStore()

    def test_addAndGet(self):
        """
        An account is stored as typed and found in any case (ASCII case
        mapping).
        """
        account = Account("Alice[m]", HASH, oper=True, created=1234.5)
        self.store.addAccount(account)
        self.assertEqual(self.store.getAccount("alice[M]"), account)
        self.assertEqual(self.store.getAccount("ALICE[m]"), account)
        # Under the ascii mapping [ and { differ.
        self.assertIsNone(self.store.getAccount("alice{m}"))

    def test_exists(self):
        """
        A name taken in another case is refused with L{AccountExists}.
        """
        self.store.addAccount(Account("alice", HASH))
        error = self.assertRaises(AccountExists, self.store.addAccount, Account("ALICE", HASH))
        self.assertEqual(str(error), "account ALICE exists already")

    def test_invalidNames(self):
        """
        Names that are not nicks are a L{ValueError} with one line; looking
        them up finds nothing.
        """
        for name in ["", "9lives", "-x", "a b", "x" * 31, "nickserv", "é"]:
            error = self.assertRaises(ValueError, self.store.addAccount, Account(name, HASH))
            self.assertIn("not a valid account name", str(error))
            self.assertNotIn("\n", str(error))
            self.assertIsNone(self.store.getAccount(name))
        self.assertRaises(ValueError, self.store.setOper, "9lives", True)

    def test_onlyHashes(self):
        """
        Anything but an Argon2 PHC string is refused as a password hash, so
        that a password cannot be stored in its place.
        """
        self.assertRaises(ValueError, self.store.addAccount, Account("alice", "hunter22"))
        self.store.addAccount(Account("alice", HASH))
        self.assertRaises(ValueError, self.store.setPassword, "alice", "hunter22")

    def test_setPasswordAndOper(self):
        """
        The hash and the operator flag change; for a missing account,
        L{NoSuchAccount}.
        """
        self.store.addAccount(Account("alice", HASH))
        self.store.setPassword("ALICE", HASH + "x")
        self.store.setOper("alice", True)
        self.assertEqual(self.store.getAccount("alice"), Account("alice", HASH + "x", oper=True))
        self.store.setOper("alice", False)
        self.assertFalse(self.store.getAccount("alice").oper)
        self.assertRaises(NoSuchAccount, self.store.setPassword, "bob", HASH)
        self.assertRaises(NoSuchAccount, self.store.setOper, "bob", True)

    def test_fingerprint(self):
        """
        A certificate fingerprint is stored as 64 lower-case hex digits and
        found from any spelling; one fingerprint belongs to one account;
        L{None} forgets it.
        """
        self.store.addAccount(Account("alice", HASH))
        self.store.addAccount(Account("bob", HASH))
        self.store.setCertificateFingerprint("alice", FINGERPRINT)
        digits = normalizeFingerprint(FINGERPRINT)
        self.assertEqual(len(digits), 64)
        self.assertEqual(self.store.getAccount("alice").certificateFingerprint, digits)
        self.assertEqual(self.store.accountForFingerprint(FINGERPRINT.lower()), "alice")
        self.assertEqual(self.store.accountForFingerprint(digits.upper()), "alice")
        self.assertRaises(
            FingerprintInUse, self.store.setCertificateFingerprint, "bob", digits
        )
        self.assertRaises(
            FingerprintInUse, self.store.addAccount, Account("carol", HASH, certificateFingerprint=digits)
        )
        self.assertRaises(ValueError, self.store.setCertificateFingerprint, "alice", "abcd")
        self.assertIsNone(self.store.accountForFingerprint("abcd"))
        self.store.setCertificateFingerprint("alice", None)
        self.assertIsNone(self.store.accountForFingerprint(digits))
        self.store.setCertificateFingerprint("bob", digits)
        self.assertEqual(self.store.accountForFingerprint(digits), "bob")

    def test_list(self):
        """
        L{Store.listAccounts} gives every account, by folded name.
        """
        for name in ["carol", "Alice", "bob"]:
            self.store.addAccount(Account(name, HASH))
        self.assertEqual([a.name for a in self.store.listAccounts()], ["Alice", "bob", "carol"])

    def test_deleteRefusedWhileFounder(self):
        """
        Deleting a founder is refused with the channels it founded, and
        changes nothing; with C{force} its channels go too, and it is taken
        off other channels' operator lists.
        """
        self.store.addAccount(Account("alice", HASH))
        self.store.addAccount(Account("bob", HASH))
        self.store.registerChannel(ChannelRecord("#b", "alice"))
        self.store.registerChannel(ChannelRecord("#A", "alice"))
        self.store.registerChannel(ChannelRecord("#bob", "bob", operators=("Alice", "carol")))
        error = self.assertRaises(AccountOwnsChannels, self.store.deleteAccount, "ALICE")
        self.assertEqual(error.channels, ["#A", "#b"])
        self.assertEqual(str(error), "account ALICE founded #A, #b")
        self.assertIsNotNone(self.store.getAccount("alice"))
        self.assertEqual(len(self.store.listChannels()), 3)
        self.store.deleteAccount("alice", force=True)
        self.assertIsNone(self.store.getAccount("alice"))
        self.assertEqual(self.store.listChannels(), [ChannelRecord("#bob", "bob", operators=("carol",))])
        self.assertRaises(NoSuchAccount, self.store.deleteAccount, "alice")

    def test_deleteWithoutChannels(self):
        """
        An account that founded nothing is deleted without C{force}, and its
        name is free again.
        """
        self.store.addAccount(Account("alice", HASH))
        self.store.deleteAccount("Alice")
        self.assertEqual(self.store.listAccounts(), [])
        self.store.addAccount(Account("ALICE", HASH))


class ChannelTests(StoreTestCase):
    """
    Registered channels in L{Store}.
    """

    def setUp(self):
        self.store = self.makeStore()
        self.store.addAccount(Account("alice", HASH))

    def test_roundTrip(self):
        """
        Every field of a record comes back; the founder as the account is
        spelled; lookup in any case.
        """
        record = ChannelRecord(
            "#Lobby", "alice", modes="imst", key="sesame", limit=10, topic="Say hi ☺",
            topicSetter="alice!~a@host", topicTime=1700000000, bans=("*!*@bad", "x!*@*"),
            operators=("bob", "Carol"),
        )
        self.store.registerChannel(attrs.evolve(record, founder="ALICE"))
        self.assertEqual(self.store.getChannel("#lobby"), record)
        self.assertEqual(self.store.listChannels(), [record])

    def test_exists(self):
        """
        A channel registered in another case is refused.
        """
        self.store.registerChannel(ChannelRecord("#Lobby", "alice"))
        error = self.assertRaises(
            ChannelExists, self.store.registerChannel, ChannelRecord("#LOBBY", "alice")
        )
        self.assertEqual(str(error), "channel #LOBBY is registered already")

    def test_founderMustExist(self):
        """
        The founder must have an account.
        """
        self.assertRaises(
            NoSuchAccount, self.store.registerChannel, ChannelRecord("#x", "nobody")
        )

    def test_save(self):
        """
        L{Store.saveChannel} replaces modes, key, limit, topic, bans and
        operators; the name keeps its registered case, the founder stays.
        """
        self.store.addAccount(Account("bob", HASH))
        self.store.registerChannel(ChannelRecord("#Lobby", "alice"))
        self.store.saveChannel(
            ChannelRecord("#LOBBY", "bob", modes="m", topic="new", bans=("*!*@x",))
        )
        self.assertEqual(
            self.store.getChannel("#lobby"),
            ChannelRecord("#Lobby", "alice", modes="m", topic="new", bans=("*!*@x",)),
        )
        self.assertRaises(NoSuchChannel, self.store.saveChannel, ChannelRecord("#other", "alice"))

    def test_drop(self):
        """
        A dropped channel is gone; dropping it again is L{NoSuchChannel}.
        """
        self.store.registerChannel(ChannelRecord("#Lobby", "alice"))
        self.store.dropChannel("#LOBBY")
        self.assertIsNone(self.store.getChannel("#lobby"))
        self.assertRaises(NoSuchChannel, self.store.dropChannel, "#lobby")

    def test_invalid(self):
        """
        Records that the server could never have made are L{ValueError}s
        with one line, and nothing is written.
        """
        bad = [
            ChannelRecord("lobby", "alice"),
            ChannelRecord("#a b", "alice"),
            ChannelRecord("#" + "x" * 50, "alice"),
            ChannelRecord("#x", "9alice"),
            ChannelRecord("#x", "alice", modes="nn"),
            ChannelRecord("#x", "alice", modes="k"),
            ChannelRecord("#x", "alice", key=""),
            ChannelRecord("#x", "alice", key="a b"),
            ChannelRecord("#x", "alice", limit=0),
            ChannelRecord("#x", "alice", topic="a\r\nQUIT"),
            ChannelRecord("#x", "alice", topicTime=-1),
            ChannelRecord("#x", "alice", bans=("",)),
            ChannelRecord("#x", "alice", bans=["list"]),
            ChannelRecord("#x", "alice", operators=("no one",)),
        ]
        for record in bad:
            error = self.assertRaises(ValueError, self.store.registerChannel, record)
            self.assertNotIn("\n", str(error))
        self.assertEqual(self.store.listChannels(), [])
        self.assertIsNone(self.store.getChannel("not a channel"))
        self.assertRaises(ValueError, self.store.dropChannel, "lobby")


class HistoryTests(StoreTestCase):
    """
    The history of registered channels in L{Store} (schema version 2).
    """

    def setUp(self):
        self.store = self.makeStore()
        self.store.addAccount(Account("alice", HASH))
        self.store.registerChannel(ChannelRecord("#Lobby", "alice"))

    def storedEntries(self) -> int:
        """
        @return: how many history entries the store holds, of any channel.
        """
        return self.store._db.execute("SELECT COUNT(*) FROM history").fetchone()[0]

    def entry(self, n: int) -> HistoryEntry:
        return HistoryEntry(
            1700000000.0 + n, f"id{n}", b":a!~a@h PRIVMSG #Lobby :%d\r\n" % n,
            "alice" if n % 2 else None, (("+x", f"v {n};"),),
        )

    def test_roundTripBounded(self):
        """
        Entries come back oldest first, every field intact; each channel
        keeps its last C{keep}; unregistered channels keep nothing; a
        dropped channel's history goes with it.
        """
        self.store.appendHistory([("#lobby", self.entry(n)) for n in range(5)], keep=3)
        self.store.appendHistory([("#other", self.entry(9))])
        self.assertEqual(self.store.getHistory("#LOBBY"), [self.entry(n) for n in (2, 3, 4)])
        self.assertEqual(self.store.getHistory("#Lobby", 1), [self.entry(4)])
        self.assertEqual(self.store.getHistory("#other"), [])
        self.store.dropChannel("#Lobby")
        self.assertEqual(self.storedEntries(), 0)

    def test_migrationFromVersion1(self):
        """
        A version 1 file (no history table) is brought to version 2, its
        accounts and channels intact.
        """
        path = temporaryDirectory(self) / DATABASE_NAME
        store = Store.open(path)
        store.addAccount(Account("alice", HASH))
        store._db.execute("DROP TABLE history")
        store._db.execute("PRAGMA user_version = 1")
        store.close()
        store = Store.open(path)
        self.addCleanup(store.close)
        self.assertEqual(store.schemaVersion(), 2)
        self.assertEqual(store.getAccount("alice"), Account("alice", HASH))
        store.registerChannel(ChannelRecord("#a", "alice"))
        store.appendHistory([("#a", self.entry(1))])
        self.assertEqual(store.getHistory("#a"), [self.entry(1)])


class SettingTests(StoreTestCase):
    """
    Settings in L{Store}.
    """

    def test_setAndGet(self):
        """
        A setting is L{None} until set, then the last value set.
        """
        store = self.makeStore()
        self.assertIsNone(store.getSetting("motd"))
        store.setSetting("motd", "hello")
        store.setSetting("motd", "again")
        self.assertEqual(store.getSetting("motd"), "again")
        self.assertRaises(ValueError, store.setSetting, "", "x")
        self.assertRaises(ValueError, store.setSetting, "k", 3)

    def test_deleteAndList(self):
        """
        L{Store.listSettings} gives every setting, by key, with its value
        (newlines kept); a deleted setting is gone, and deleting one that
        is not set does nothing.
        """
        store = self.makeStore()
        self.assertEqual(store.listSettings(), {})
        store.setSetting("network", "HomeNet")
        store.setSetting("motd", "one\ntwo")
        self.assertEqual(list(store.listSettings().items()),
                         [("motd", "one\ntwo"), ("network", "HomeNet")])
        store.deleteSetting("motd")
        store.deleteSetting("nothing")
        self.assertEqual(store.listSettings(), {"network": "HomeNet"})
        self.assertIsNone(store.getSetting("motd"))


class ThreadedStoreFakeTests(SynchronousTestCase):
    """
    L{ThreadedStore} on a synchronous fake pool.
    """

    def test_deferredResults(self):
        """
        Each method gives a L{Deferred} of the L{Store} method's result, or
        of its exception.
        """
        pool = SynchronousThreadPool(immediate=True)
        store = ThreadedStore(temporaryDirectory(self) / DATABASE_NAME, ThreadedClock(), pool)
        self.successResultOf(store.start())
        self.successResultOf(store.addAccount(Account("alice", HASH)))
        self.assertEqual(self.successResultOf(store.getAccount("ALICE")).name, "alice")
        self.failureResultOf(store.addAccount(Account("alice", HASH)), AccountExists)
        self.failureResultOf(store.addAccount(Account("9", HASH)), ValueError)
        self.successResultOf(store.stop())
        self.assertTrue(pool.stopped)
        self.failureResultOf(store.getAccount("alice"), StoreError)

    def test_notStarted(self):
        """
        Before L{ThreadedStore.start}, calls fail with L{StoreError}.
        """
        store = ThreadedStore("unused", ThreadedClock(), SynchronousThreadPool(immediate=True))
        self.failureResultOf(store.listAccounts(), StoreError)
        self.failureResultOf(store.stop(), StoreError)

    def test_openFailure(self):
        """
        When the file cannot be opened, L{ThreadedStore.start} fails with
        the one-line L{StoreError}, and so does every later call.
        """
        store = ThreadedStore(
            temporaryDirectory(self) / "missing" / DATABASE_NAME,
            ThreadedClock(),
            SynchronousThreadPool(immediate=True),
        )
        self.failureResultOf(store.start(), StoreError)
        self.failureResultOf(store.listAccounts(), StoreError)
        self.successResultOf(store.stop())

    def test_service(self):
        """
        L{StoreService} opens the store when it starts and closes it when
        it stops; an open that fails is logged.
        """
        pool = SynchronousThreadPool(immediate=True)
        store = ThreadedStore(temporaryDirectory(self) / DATABASE_NAME, ThreadedClock(), pool)
        service = StoreService(store)
        service.startService()
        self.assertIsNotNone(store._store)
        self.successResultOf(service.stopService())
        self.assertIsNone(store._store)
        self.assertTrue(pool.stopped)
        broken = StoreService(
            ThreadedStore(temporaryDirectory(self) / "x" / "y", ThreadedClock(),
                          SynchronousThreadPool(immediate=True))
        )
        broken.startService()
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)


class ThreadedStoreTests(TestCase):
    """
    L{ThreadedStore} on its real thread.
    """

    async def test_ownThread(self):
        """
        The connection is opened, used and closed on the store's own
        thread, never the reactor's.
        """
        from twisted.internet import reactor

        store = ThreadedStore(temporaryDirectory(self) / DATABASE_NAME, reactor)
        await store.start()
        try:
            await store.addAccount(Account("alice", HASH))
            self.assertEqual((await store.getAccount("alice")).name, "alice")
            threads = await store._call(lambda: (store._store.thread, threading.get_ident()))
        finally:
            await store.stop()
        self.assertEqual(threads[0], threads[1])
        self.assertNotEqual(threads[0], threading.get_ident())
        self.assertIsNone(store._store)


#: What the child process of the kill test runs: a stream of changes, each
#: acknowledged on standard output once its method has returned.
CHILD = """
import sys
sys.path.insert(0, sys.argv[2])
from netservices.chat.store import Store
from tests.chat.test_store import operation
store = Store.open(sys.argv[1])
for n in range(100000):
    operation(store, n)
    print("ack", n, flush=True)
"""


def operation(store, n: int) -> None:
    """
    Change number C{n} of the kill test, in five kinds: add an account,
    register a channel, save the channel, set a setting, and either grant
    operator rights or delete the previous account (with its channel).
    """
    from netservices.chat.store import Account, ChannelRecord

    j, kind = divmod(n, 5)
    if kind == 0:
        store.addAccount(Account(f"user{j}", HASH, created=float(j)))
    elif kind == 1:
        store.registerChannel(ChannelRecord(f"#chan{j}", f"user{j}"))
    elif kind == 2:
        store.saveChannel(
            ChannelRecord(
                f"#chan{j}", f"user{j}", modes="imnst", topic=f"topic {j}",
                bans=(f"*!*@host{j}",), operators=(f"user{j - 1}", f"user{j}"),
            )
        )
    elif kind == 3:
        store.setSetting("last", str(j))
    elif j % 2:
        store.deleteAccount(f"user{j - 1}", force=True)
    else:
        store.setOper(f"user{j}", True)


class ModelStore:
    """
    The methods L{operation} calls, on dictionaries, as the database must
    be after those calls.
    """

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.channels: dict[str, ChannelRecord] = {}
        self.settings: dict[str, str] = {}

    def addAccount(self, account):
        self.accounts[account.name] = account

    def registerChannel(self, record):
        self.channels[record.name] = record

    def saveChannel(self, record):
        self.channels[record.name] = record

    def setSetting(self, key, value):
        self.settings[key] = value

    def deleteAccount(self, name, force):
        del self.accounts[name]
        for channel, record in list(self.channels.items()):
            if record.founder == name:
                del self.channels[channel]
            else:
                operators = tuple(o for o in record.operators if o != name)
                self.channels[channel] = attrs.evolve(record, operators=operators)

    def setOper(self, name, oper):
        self.accounts[name] = attrs.evolve(self.accounts[name], oper=oper)

    def state(self):
        return (
            sorted(self.accounts.values(), key=lambda a: a.name),
            sorted(self.channels.values(), key=lambda c: c.name),
            self.settings.get("last"),
        )


def modelAfter(count: int):
    """
    @return: the state after the first C{count} changes of L{operation}.
    """
    model = ModelStore()
    for n in range(count):
        operation(model, n)
    return model.state()


class _Acknowledged(ProcessProtocol):
    """
    Reads the child's "ack N" lines; fires C{reached} once N is at least
    C{target}, and C{ended} when the process has ended.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.output = b""
        self.errors = b""
        self.reached: Deferred[None] = Deferred()
        self.ended: Deferred[Exception] = Deferred()

    def acknowledged(self) -> list[int]:
        """
        @return: the numbers acknowledged on complete lines (the last line
            may have been cut by the kill, or by a read).
        """
        complete = self.output.split(b"\n")[:-1]
        return [int(line[4:]) for line in complete if line.startswith(b"ack ")]

    def outReceived(self, data: bytes) -> None:
        self.output += data
        acks = self.acknowledged()
        if not self.reached.called and acks and acks[-1] >= self.target:
            self.reached.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.errors += data

    def processEnded(self, reason) -> None:
        if not self.reached.called:
            self.reached.errback(reason)
        self.ended.callback(reason.value)


class KillTests(TestCase):
    """
    A process killed with C{SIGKILL} while it writes leaves a database that
    opens, is intact, and holds every change it acknowledged.
    """

    async def test_killDuringChanges(self):
        """
        A child makes changes of every kind (accounts added, deleted,
        operator rights, channels registered, saved and dropped with their
        founder, settings) and prints "ack N" after each returns; after at
        least 300 acknowledgements it is killed with SIGKILL by its PID.
        The database then passes C{PRAGMA integrity_check}, and holds
        exactly the first A or A+1 changes, A the number acknowledged
        (the change in progress when the signal came may have committed
        without being acknowledged), and takes new changes.
        """
        from twisted.internet import reactor

        path = temporaryDirectory(self) / DATABASE_NAME
        child = _Acknowledged(target=299)
        argv = [sys.executable, "-c", CHILD, str(path), str(ROOT)]
        reactor.spawnProcess(child, sys.executable, argv, env=childEnvironment())
        timeout = reactor.callLater(30, child.transport.signalProcess, "KILL")
        try:
            await child.reached
            child.transport.signalProcess("KILL")
        finally:
            reason = await child.ended
            if timeout.active():
                timeout.cancel()
        self.assertEqual(getattr(reason, "signal", None), 9, child.errors)
        acks = child.acknowledged()
        self.assertEqual(acks, list(range(len(acks))))
        self.assertGreaterEqual(len(acks), 300)

        connection = sqlite3.connect(path)
        self.assertEqual(connection.execute("PRAGMA integrity_check").fetchall(), [("ok",)])
        connection.close()
        store = Store.open(path)
        self.addCleanup(store.close)
        state = (store.listAccounts(), store.listChannels(), store.getSetting("last"))
        self.assertIn(state, [modelAfter(len(acks)), modelAfter(len(acks) + 1)])
        store.setSetting("after", "restart")
        self.assertEqual(store.getSetting("after"), "restart")
