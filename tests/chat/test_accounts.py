"""
Tests for L{netservices.chat.accounts}: Argon2id hashing, the password
checker and its throttling (on an injected clock and a synchronous thread
pool: nothing sleeps), the certificate checker, the realm and the portal.
"""

from __future__ import annotations

import threading

from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netservices.chat.accounts import (
    INVALID_CREDENTIALS,
    THROTTLED,
    AccountAvatar,
    AccountChecker,
    CertificateChecker,
    CertificateCredentials,
    ChatRealm,
    CheckerService,
    IChatAccount,
    LoginLimits,
    LoginThrottled,
    PasswordHasher,
    SourcedCredentials,
    makePortal,
)
from netservices.chat.store import DATABASE_NAME, Account, ThreadedStore
from netservices.testing import SynchronousThreadPool, ThreadedClock
from tests.chat.test_store import FINGERPRINT, temporaryDirectory

#: Parameters that make a hash cost microseconds, for tests that hash often.
CHEAP = dict(timeCost=1, memoryCost=8, parallelism=1)

PASSWORD = "correct horse battery staple"


def fakeStore(testCase) -> ThreadedStore:
    """
    @return: a started L{ThreadedStore} in a temporary directory whose
        calls run at once in the test's thread.
    """
    store = ThreadedStore(
        temporaryDirectory(testCase) / DATABASE_NAME,
        ThreadedClock(),
        SynchronousThreadPool(immediate=True),
    )
    testCase.successResultOf(store.start())
    testCase.addCleanup(store.stop)
    return store


class RecordingHasher(PasswordHasher):
    """
    A L{PasswordHasher} that records the hashes it verifies against and the
    threads it runs in.
    """

    def __init__(self, **parameters) -> None:
        super().__init__(**parameters)
        self.verified: list[str] = []
        self.threads: list[int] = []

    def verify(self, passwordHash, password):
        self.verified.append(passwordHash)
        self.threads.append(threading.get_ident())
        return super().verify(passwordHash, password)


class PasswordHasherTests(SynchronousTestCase):
    """
    L{PasswordHasher}.
    """

    def test_defaultParameters(self):
        """
        By default hashes are Argon2id with at least OWASP's minimum (19 MiB,
        2 passes, 1 lane); the right password verifies, a wrong one and a
        hash that cannot be read give L{False} without raising.
        """
        hasher = PasswordHasher()
        hashed = hasher.hash(PASSWORD)
        self.assertTrue(hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$"), hashed)
        self.assertTrue(hasher.verify(hashed, PASSWORD))
        self.assertTrue(hasher.verify(hashed, PASSWORD.encode("utf-8")))
        self.assertFalse(hasher.verify(hashed, "wrong password"))
        self.assertFalse(hasher.verify("not a hash", PASSWORD))
        self.assertFalse(hasher.verify("", PASSWORD))
        self.assertFalse(hasher.needsRehash(hashed))

    def test_salted(self):
        """
        The same password hashes differently every time.
        """
        hasher = PasswordHasher(**CHEAP)
        self.assertNotEqual(hasher.hash(PASSWORD), hasher.hash(PASSWORD))

    def test_needsRehash(self):
        """
        A hash made with other parameters, another variant, or that cannot
        be read needs rehashing; one with the hasher's own does not.
        """
        cheap = PasswordHasher(**CHEAP)
        other = PasswordHasher(timeCost=2, memoryCost=16, parallelism=1)
        self.assertTrue(other.needsRehash(cheap.hash(PASSWORD)))
        self.assertFalse(cheap.needsRehash(cheap.hash(PASSWORD)))
        argon2i = cheap.hash(PASSWORD).replace("$argon2id$", "$argon2i$")
        self.assertTrue(cheap.needsRehash(argon2i))
        self.assertTrue(cheap.needsRehash("garbage"))

    def test_dummyHash(self):
        """
        The dummy hash is made on first use, once, with the hasher's own
        parameters.
        """
        hasher = PasswordHasher(**CHEAP)
        self.assertIsNone(hasher._dummy)
        dummy = hasher.dummyHash()
        self.assertIs(hasher.dummyHash(), dummy)
        self.assertFalse(hasher.needsRehash(dummy))


class SourcedCredentialsTests(SynchronousTestCase):
    """
    L{SourcedCredentials}.
    """

    def test_interface(self):
        """
        They are L{IUsernamePassword} credentials; a bytes user name is
        kept as text; the password is not in the repr.
        """
        credentials = SourcedCredentials(b"alice", b"secret!!", "192.0.2.1", True)
        self.assertTrue(IUsernamePassword.providedBy(credentials))
        self.assertEqual(credentials.username, "alice")
        self.assertTrue(credentials.checkPassword("secret!!"))
        self.assertTrue(credentials.checkPassword(b"secret!!"))
        self.assertFalse(credentials.checkPassword("secret!"))
        self.assertNotIn("secret", repr(credentials))
        self.assertIn("192.0.2.1", repr(credentials))


class CheckerMixin:
    """
    An L{AccountChecker} on a fake store, a L{ThreadedClock} and a
    synchronous pool; account C{Alice} has password L{PASSWORD}.
    """

    def makeChecker(self, limits=None, immediate=True, hasher=None, **extra):
        self.clock = ThreadedClock()
        self.store = fakeStore(self)
        self.hasher = hasher or RecordingHasher(**CHEAP)
        self.successResultOf(
            self.store.addAccount(Account("Alice", self.hasher.hash(PASSWORD), **extra))
        )
        self.pool = SynchronousThreadPool(immediate=immediate)
        self.events: list[dict] = []
        checker = AccountChecker(
            self.store, self.clock, self.pool, self.hasher, limits,
            Logger(observer=self.events.append),
        )
        checker.startService()
        self.pool.runAll()
        self.hasher.verified.clear()
        return checker

    def login(self, checker, name="alice", password=PASSWORD, source="192.0.2.1", secure=True):
        return checker.requestAvatarId(SourcedCredentials(name, password, source, secure))

    def fails(self, deferred, kind=UnauthorizedLogin):
        """
        @return: the exception C{deferred} failed with, checked to be
            exactly C{kind}.
        """
        failure = self.failureResultOf(deferred, kind)
        self.assertIs(type(failure.value), kind)
        return failure.value


class AccountCheckerTests(CheckerMixin, SynchronousTestCase):
    """
    L{AccountChecker}: checking passwords.
    """

    def test_rightPassword(self):
        """
        The right password gives the account's name as registered, in
        UTF-8, whatever case it was typed in.
        """
        checker = self.makeChecker()
        self.assertEqual(self.successResultOf(self.login(checker, "ALICE")), b"Alice")
        self.assertEqual(checker.counts["succeeded"], 1)
        self.assertEqual(checker.counts["hashed"], 1)
        self.assertEqual(checker.inFlight, 0)

    def test_wrongPasswordAndUnknownAccountAlike(self):
        """
        A wrong password, an unknown account and a name no account can
        have fail the same way: L{UnauthorizedLogin}, same message; each
        after one verification (the unknown ones against the dummy hash).
        """
        checker = self.makeChecker()
        errors = [
            self.fails(self.login(checker, "alice", "wrong password")),
            self.fails(self.login(checker, "nobody", PASSWORD)),
            self.fails(self.login(checker, "no such name!", PASSWORD)),
        ]
        self.assertEqual({(type(e), e.args, str(e)) for e in errors},
                         {(UnauthorizedLogin, (INVALID_CREDENTIALS,), INVALID_CREDENTIALS)})
        dummy = self.hasher.dummyHash()
        self.assertEqual(len(self.hasher.verified), 3)
        self.assertNotEqual(self.hasher.verified[0], dummy)
        self.assertEqual(self.hasher.verified[1:], [dummy, dummy])
        self.assertEqual(checker.counts["failed"], 3)
        self.assertEqual(checker.counts["hashed"], 3)

    def test_plainCredentials(self):
        """
        Plain L{UsernamePassword} credentials (no source) are checked too.
        """
        checker = self.makeChecker()
        self.assertEqual(
            self.successResultOf(checker.requestAvatarId(UsernamePassword(b"alice", PASSWORD.encode()))),
            b"Alice",
        )

    def test_insecureRefused(self):
        """
        Credentials from a plaintext connection that is not loopback are
        refused without being checked; from loopback they are checked.
        """
        checker = self.makeChecker()
        self.fails(self.login(checker, source="192.0.2.1", secure=False))
        self.fails(self.login(checker, source="2001:db8::1", secure=False))
        self.assertEqual(self.hasher.verified, [])
        self.assertEqual(checker.refusals.counts["insecure"], 2)
        self.assertEqual(self.successResultOf(self.login(checker, source="127.0.0.1", secure=False)), b"Alice")
        self.assertEqual(self.successResultOf(self.login(checker, source="::1", secure=False)), b"Alice")

    def test_failureLogged(self):
        """
        Each failure is logged with account and source, at most once a
        second per reason; the ones in between are counted.
        """
        checker = self.makeChecker()
        for _ in range(3):
            self.fails(self.login(checker, "alice", "wrong password", "192.0.2.9"))
        warnings = [e for e in self.events if e.get("reason") == "invalid-credentials"]
        self.assertEqual(len(warnings), 1)
        self.assertEqual((warnings[0]["account"], warnings[0]["source"]), ("alice", "192.0.2.9"))
        self.assertIn("192.0.2.9 for account alice", warnings[0]["peer"])
        self.assertEqual(checker.refusals.counts["invalid-credentials"], 3)
        self.clock.advance(1)
        self.fails(self.login(checker, "alice", "wrong password", "192.0.2.9"))
        warnings = [e for e in self.events if e.get("reason") == "invalid-credentials"]
        self.assertEqual(warnings[-1]["suppressed"], 2)

    def test_rehash(self):
        """
        When the hasher's parameters are not those of the stored hash, a
        successful login stores a new hash with the new parameters (once);
        a failed one changes nothing.
        """
        checker = self.makeChecker(hasher=RecordingHasher(**CHEAP))
        checker.hasher = stronger = PasswordHasher(timeCost=2, memoryCost=16, parallelism=1)
        old = self.successResultOf(self.store.getAccount("alice")).passwordHash
        self.fails(self.login(checker, password="wrong password"))
        self.assertEqual(self.successResultOf(self.store.getAccount("alice")).passwordHash, old)
        self.successResultOf(self.login(checker))
        new = self.successResultOf(self.store.getAccount("alice")).passwordHash
        self.assertTrue(new.startswith("$argon2id$v=19$m=16,t=2,p=1$"), new)
        self.assertTrue(stronger.verify(new, PASSWORD))
        self.successResultOf(self.login(checker))
        self.assertEqual(self.successResultOf(self.store.getAccount("alice")).passwordHash, new)
        self.assertEqual(checker.counts["rehashed"], 1)

    def test_storeFailure(self):
        """
        When the store fails, the login fails with the store's error,
        logged, and the attempt does not count against the source.
        """
        checker = self.makeChecker()
        self.successResultOf(self.store.stop())
        self.failureResultOf(self.login(checker))
        self.assertEqual(len(self.flushLoggedErrors()), 0)  # logged to our observer
        self.assertTrue([e for e in self.events if "log_failure" in e])
        self.assertEqual(checker.inFlight, 0)
        self.assertEqual(checker.counts["failed"], 0)
        self.assertEqual(checker._sources._buckets[(4, 0xC0000201)].tokens, 20)
        self.addCleanup(self.store.start)  # so that the cleanup can stop it

    def test_service(self):
        """
        L{CheckerService} starts and stops the checker's pool and logs the
        totals on stop.
        """
        checker = self.makeChecker()
        checker.stopService()
        self.assertTrue(self.pool.stopped)
        service = CheckerService(checker)
        service.startService()
        self.assertTrue(self.pool.started)
        service.stopService()
        self.assertFalse(self.pool.started)
        self.assertIn("logins attempted=", self.events[-2]["log_format"])


class ThrottlingTests(CheckerMixin, SynchronousTestCase):
    """
    L{AccountChecker}'s throttling, before any hashing.
    """

    def test_accountDelays(self):
        """
        After 5 failures of an account from one source, each attempt must
        wait 1 s, then 2, 4, ... up to 60 s after the last one; attempts
        before that are throttled without hashing.  A success resets.
        """
        checker = self.makeChecker()
        for _ in range(5):
            self.fails(self.login(checker, password="wrong password"))
        for delay in [1, 2, 4, 8, 16, 32, 60, 60]:
            self.clock.advance(delay - 0.5)
            error = self.fails(self.login(checker, password="wrong password"), LoginThrottled)
            self.assertEqual((error.limit, error.retryAfter, str(error)), ("account", 0.5, THROTTLED))
            self.clock.advance(0.5)
            self.fails(self.login(checker, password="wrong password"))
        self.assertEqual(checker.counts["hashed"], 13)
        self.assertEqual(checker.counts["throttled"], 8)
        self.clock.advance(60)
        self.successResultOf(self.login(checker))
        for _ in range(5):
            self.fails(self.login(checker, password="wrong password"))
        self.fails(self.login(checker, password="wrong password"), LoginThrottled)

    def test_unknownAccountThrottledAlike(self):
        """
        An unknown account is throttled exactly like a real one, so the
        limits do not tell which accounts exist.
        """
        checker = self.makeChecker()
        for name in ["alice", "nobody"]:
            outcomes = [type(self.failureResultOf(self.login(checker, name, "wrong", "192.0.2.7")).value)
                        for _ in range(7)]
            self.assertEqual(outcomes, [UnauthorizedLogin] * 5 + [LoginThrottled] * 2)

    def test_otherSourcesNotDelayed(self):
        """
        The account delay is per source prefix: from another address the
        owner logs in at once; from the same IPv6 /64 it is delayed too.
        """
        checker = self.makeChecker()
        for _ in range(6):
            self.failureResultOf(self.login(checker, password="wrong", source="2001:db8:1:2::1"))
        self.fails(self.login(checker, source="2001:db8:1:2::99"), LoginThrottled)
        self.assertEqual(self.successResultOf(self.login(checker, source="2001:db8:1:3::1")), b"Alice")
        self.assertEqual(self.successResultOf(self.login(checker, source="192.0.2.2")), b"Alice")

    def test_forgotten(self):
        """
        An (account, source) pair with no attempt for
        C{accountForgetAfter} seconds starts again from nothing: 5 free
        failures, then delays.
        """
        checker = self.makeChecker(LoginLimits(accountForgetAfter=600))
        for _ in range(5):
            self.fails(self.login(checker, password="wrong"))
        self.clock.advance(1)
        self.fails(self.login(checker, password="wrong"))
        self.clock.advance(600)
        for _ in range(5):
            self.fails(self.login(checker, password="wrong"))
        self.fails(self.login(checker), LoginThrottled)

    def test_sourceBucket(self):
        """
        A source prefix may fail 20 times at once, over any accounts, then
        once every 3 s; its successes do not count.
        """
        checker = self.makeChecker()
        for n in range(20):
            self.successResultOf(self.login(checker))
            self.fails(self.login(checker, f"user{n}", "wrong"))
        error = self.fails(self.login(checker, "user99", "wrong"), LoginThrottled)
        self.assertEqual(error.limit, "source")
        self.fails(self.login(checker), LoginThrottled)
        self.clock.advance(3)
        self.fails(self.login(checker, "user98", "wrong"))
        self.fails(self.login(checker, "user97", "wrong"), LoginThrottled)
        self.assertEqual(self.successResultOf(self.login(checker, source="192.0.2.2")), b"Alice")
        self.assertEqual(checker.counts["hashed"], 42)

    def test_inFlightCap(self):
        """
        At most 4 attempts wait for or use the hashing threads; a fifth is
        throttled at once without hashing, even with the right password;
        once they are done, logins are admitted again.
        """
        checker = self.makeChecker(immediate=False)
        waiting = [self.login(checker, f"user{n}", "wrong", f"192.0.2.{n}") for n in range(4)]
        self.assertEqual(checker.inFlight, 4)
        error = self.fails(self.login(checker, source="198.51.100.1"), LoginThrottled)
        self.assertEqual(error.limit, "busy")
        self.assertEqual(len(self.pool.pending), 4)
        self.pool.runAll()
        for attempt in waiting:
            self.fails(attempt)
        self.assertEqual(checker.inFlight, 0)
        admitted = self.login(checker, source="198.51.100.1")
        self.pool.runAll()
        self.assertEqual(self.successResultOf(admitted), b"Alice")

    def test_bruteForce(self):
        """
        10,000 wrong passwords for one account from 10 sources (each one
        every 0.5 s, 1,000 from each, over 500 s) are all refused, and
        throttling keeps the hashes down to 180 in all (1.8 %): per source,
        5 failures, then one after each delay (1, 2, 4, 8, 16, 32, then
        60 s), 18 in 500 s.  That is the bound computed from the limits:
        the free failures plus the delays that fit in the period (5 + 13;
        the source bucket alone would allow 20 + 500 / 3 per source).
        Then the right password from an 11th source is accepted at once;
        from an attacking source it is still delayed.
        """
        limits = LoginLimits()
        checker = self.makeChecker(limits)
        sources = [f"198.51.100.{n}" for n in range(1, 11)]
        outcomes = []
        period, step = 500.0, 0.5
        for _ in range(int(period / step)):
            for source in sources:
                attempt = self.login(checker, "alice", "hunter2-guess", source)
                outcomes.append(type(self.failureResultOf(attempt).value))
            self.clock.advance(step)
        self.assertEqual(len(outcomes), 10_000)
        self.assertEqual(checker.counts["succeeded"], 0)
        hashed = checker.counts["hashed"]
        self.assertEqual(outcomes.count(UnauthorizedLogin), hashed)
        self.assertEqual(outcomes.count(LoginThrottled), 10_000 - hashed)

        delays, spent = 0, 0.0
        while spent + limits.accountDelay(limits.accountFreeFailures + delays) <= period:
            spent += limits.accountDelay(limits.accountFreeFailures + delays)
            delays += 1
        perSource = min(
            limits.accountFreeFailures + delays,
            limits.sourceFailures + period * limits.sourceFailures / limits.sourcePeriod,
        )
        self.assertEqual(perSource, 18)
        self.assertLessEqual(hashed, len(sources) * perSource)
        self.assertEqual(hashed, 180)

        self.assertEqual(self.successResultOf(self.login(checker, source="203.0.113.7")), b"Alice")
        self.fails(self.login(checker, source=sources[0]), LoginThrottled)


class CertificateCheckerTests(SynchronousTestCase):
    """
    L{CertificateChecker}: SASL EXTERNAL.
    """

    def setUp(self):
        self.store = fakeStore(self)
        self.successResultOf(self.store.addAccount(
            Account("Alice", PasswordHasher(**CHEAP).hash(PASSWORD), certificateFingerprint=FINGERPRINT)
        ))
        self.checker = CertificateChecker(self.store)

    def test_registered(self):
        """
        A registered fingerprint, in any form, gives its account; also
        when that account is asked for, in any case.
        """
        for credentials in [
            CertificateCredentials(FINGERPRINT),
            CertificateCredentials(FINGERPRINT.replace(":", "").lower(), "alice"),
        ]:
            self.assertEqual(self.successResultOf(self.checker.requestAvatarId(credentials)), b"Alice")

    def test_refused(self):
        """
        An unknown or malformed fingerprint, or another account asked for,
        is L{UnauthorizedLogin}.
        """
        for credentials in [
            CertificateCredentials("00" * 32),
            CertificateCredentials("not a fingerprint"),
            CertificateCredentials(FINGERPRINT, "bob"),
        ]:
            self.failureResultOf(self.checker.requestAvatarId(credentials), UnauthorizedLogin)


class RealmTests(SynchronousTestCase):
    """
    L{ChatRealm} and L{makePortal}.
    """

    def setUp(self):
        self.store = fakeStore(self)
        self.successResultOf(self.store.addAccount(
            Account("Alice", PasswordHasher(**CHEAP).hash(PASSWORD), oper=True,
                    certificateFingerprint=FINGERPRINT)
        ))

    def test_avatar(self):
        """
        The avatar is the account's name and operator flag, read from the
        store.
        """
        interface, avatar, logout = self.successResultOf(
            ChatRealm(self.store).requestAvatar(b"Alice", None, IChatAccount)
        )
        self.assertIs(interface, IChatAccount)
        self.assertEqual(avatar, AccountAvatar("Alice", True))
        self.assertTrue(IChatAccount.providedBy(avatar))
        self.assertIsNone(logout())

    def test_deletedAccount(self):
        """
        An account deleted between the check and the realm is
        L{UnauthorizedLogin}; another interface is L{NotImplementedError}.
        """
        self.failureResultOf(ChatRealm(self.store).requestAvatar(b"bob", None, IChatAccount),
                             UnauthorizedLogin)
        self.assertRaises(NotImplementedError, ChatRealm(self.store).requestAvatar, b"Alice", None)

    def test_portal(self):
        """
        The portal logs in with a password (through a checker on the fake
        pool) and with a certificate.
        """
        clock = ThreadedClock()
        checker = AccountChecker(self.store, clock, SynchronousThreadPool(immediate=True),
                                 PasswordHasher(**CHEAP))
        portal = makePortal(self.store, clock, [checker, CertificateChecker(self.store)])
        for credentials in [
            SourcedCredentials("alice", PASSWORD, "192.0.2.1", True),
            CertificateCredentials(FINGERPRINT, None),
        ]:
            _, avatar, _ = self.successResultOf(portal.login(credentials, None, IChatAccount))
            self.assertEqual(avatar, AccountAvatar("Alice", True))
        self.failureResultOf(
            portal.login(SourcedCredentials("alice", "wrong", "192.0.2.1", True), None, IChatAccount),
            UnauthorizedLogin,
        )

    def test_defaultCheckers(self):
        """
        By default the portal takes passwords and certificates.
        """
        portal = makePortal(self.store, ThreadedClock())
        self.assertEqual(
            sorted(i.__name__ for i in portal.listCredentialsInterfaces()),
            ["ICertificateFingerprint", "IUsernamePassword"],
        )


class ThreadTests(TestCase):
    """
    With the real reactor and real threads.
    """

    async def test_hashingOffTheReactorThread(self):
        """
        Hashing runs on the checker's pool and the store on its own thread,
        never in the reactor thread; the store keeps Argon2id hashes with
        the default parameters (a login rehashes an old cheap one to
        them), never the password itself.
        """
        from twisted.internet import reactor

        path = temporaryDirectory(self) / DATABASE_NAME
        store = ThreadedStore(path, reactor)
        await store.start()
        stopped = []
        self.addCleanup(lambda: None if stopped else store.stop())
        await store.addAccount(Account("alice", PasswordHasher(**CHEAP).hash(PASSWORD)))
        hasher = RecordingHasher()
        checker = AccountChecker(store, reactor, hasher=hasher)
        service = CheckerService(checker)
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        self.assertEqual(await checker.requestAvatarId(SourcedCredentials("alice", PASSWORD, "127.0.0.1")), b"alice")
        with self.assertRaises(UnauthorizedLogin):
            await checker.requestAvatarId(SourcedCredentials("nobody", PASSWORD, "127.0.0.1"))
        self.assertEqual(len(hasher.threads), 2)
        self.assertNotIn(threading.get_ident(), hasher.threads)
        storeThread = await store._call(lambda: store._store.thread)
        self.assertNotEqual(storeThread, threading.get_ident())

        account = await store.getAccount("alice")
        self.assertTrue(account.passwordHash.startswith("$argon2id$v=19$m=19456,t=2,p=1$"))
        service.stopService()
        stopped.append(await store.stop())
        data = b"".join(p.read_bytes() for p in path.parent.iterdir())
        self.assertIn(b"$argon2id$v=19$m=19456,t=2,p=1$", data)
        self.assertNotIn(PASSWORD.encode(), data)
