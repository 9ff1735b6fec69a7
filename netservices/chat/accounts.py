# -*- test-case-name: tests.chat.test_accounts -*-
"""
Logging in to chat accounts with L{twisted.cred}: a portal over the chat
realm, a checker for passwords (SASL PLAIN, C{PASS}) and one for client
certificates (SASL EXTERNAL), both over the account store
(L{netservices.chat.store}).

Passwords are hashed with Argon2id (L{PasswordHasher}), on a small
dedicated thread pool, never in the reactor thread.  L{AccountChecker}
throttles before it hashes, so that a brute-force attack costs the
attacker time and the server a bounded number of hashes:

  - B{per account and source prefix}: after
    L{LoginLimits.accountFreeFailures} failures for one account from one
    source prefix, each further attempt from there must wait a delay that
    starts at L{LoginLimits.accountFirstDelay} and doubles up to
    L{LoginLimits.accountMaxDelay}; a success resets it, and it is
    forgotten after L{LoginLimits.accountForgetAfter} seconds without an
    attempt.  The delay is kept per (account, prefix), not per account, so
    that an attacker cannot lock the owner out: the owner, from another
    network, logs in at once however many guesses were made from
    elsewhere.  What bounds an attacker who holds many prefixes is the
    next limit, which costs each prefix the same on every account.
  - B{per source prefix} (IPv4 /32, IPv6 /64 by default): a token bucket
    of L{LoginLimits.sourceFailures} failures per
    L{LoginLimits.sourcePeriod} seconds, over all accounts.
  - B{hashes in flight} (waiting for a thread or running): at most
    L{LoginLimits.maxInFlight}, over all sources.

An attempt counts as a failure from the moment it is admitted, and is
forgiven (its token given back, its pair's count reset) if the password
was right: attempts sent at once cannot slip past the limits while their
hashes run.  Over any limit, the attempt fails at once with
L{LoginThrottled} and is not hashed.  An unknown account is verified
against a dummy hash with the same parameters and fails with the same
L{UnauthorizedLogin} as a wrong password; the limits do not depend on
whether the account exists.  Every refusal is logged with account and
source, at a bounded rate (L{netservices._common.logs.RefusalLog}).
"""

from __future__ import annotations

import hmac
import threading
from collections import Counter, OrderedDict

import argon2
import attrs
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.application import service
from twisted.cred.checkers import FilePasswordDB, ICredentialsChecker
from twisted.cred.credentials import ICredentials, IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from netservices._common.addresses import isLoopback, prefixKey
from netservices._common.logs import RefusalLog
from netservices._common.ratelimit import PrefixRateLimiter, RateLimits
from netservices.chat.wire import foldCase, validNick
from netservices.threaded.pool import DaemonThreadPool

#: The message of every failed password login, whether the account exists
#: or not.
INVALID_CREDENTIALS = "invalid credentials"

#: The message of every throttled login.
THROTTLED = "too many login attempts; try again later"


class PasswordHasher:
    """
    Argon2id password hashes (PHC strings, C{$argon2id$v=19$m=...}), with
    by default OWASP's minimum parameters: 19 MiB of memory, 2 passes, 1
    lane (about 36 ms a hash on the development machine).
    """

    def __init__(
        self, timeCost: int = 2, memoryCost: int = 19456, parallelism: int = 1
    ) -> None:
        """
        @param timeCost: passes over the memory.
        @param memoryCost: memory in KiB.
        @param parallelism: lanes (and threads of one hash).
        """
        self.timeCost = timeCost
        self.memoryCost = memoryCost
        self.parallelism = parallelism
        self._hasher = argon2.PasswordHasher(
            time_cost=timeCost,
            memory_cost=memoryCost,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )
        self._dummy: str | None = None
        self._dummyLock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"PasswordHasher(timeCost={self.timeCost}, memoryCost={self.memoryCost},"
            f" parallelism={self.parallelism})"
        )

    def hash(self, password: str | bytes) -> str:
        """
        @return: the PHC string of C{password}, with a new random salt.
        """
        return self._hasher.hash(password)

    def verify(self, passwordHash: str, password: str | bytes) -> bool:
        """
        @return: whether C{password} matches C{passwordHash} (compared in
            constant time by libargon2); L{False} for a wrong password or a
            hash that cannot be read, never an exception.
        """
        try:
            return self._hasher.verify(passwordHash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needsRehash(self, passwordHash: str) -> bool:
        """
        @return: whether C{passwordHash} was made with other parameters (or
            another Argon2 variant) than this hasher's, and should be
            replaced after the next successful login.
        """
        try:
            return self._hasher.check_needs_rehash(passwordHash)
        except (InvalidHashError, ValueError):
            return True

    def dummyHash(self) -> str:
        """
        @return: the hash that unknown accounts are verified against,
            computed on first use (in the thread that asks, a pool thread)
            and kept.  It has this hasher's parameters, so that verifying
            against it takes as long as against a real hash.
        """
        with self._dummyLock:
            if self._dummy is None:
                self._dummy = self.hash("not the password of any account")
            return self._dummy


def _text(value: str | bytes) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


@implementer(IUsernamePassword)
@attrs.frozen
class SourcedCredentials:
    """
    A user name and password, and where they came from: what the chat
    protocol passes to the portal.

    @ivar username: the account name (bytes are decoded as UTF-8).
    @ivar password: the password (text or UTF-8 bytes); not in the repr.
    @ivar source: the client's IP address.
    @ivar secure: whether the connection is TLS.
    """

    username: str = attrs.field(converter=_text)
    password: str | bytes = attrs.field(repr=False)
    source: str = ""
    secure: bool = False

    def checkPassword(self, password: str | bytes) -> bool:
        """
        @return: whether C{password} is this password (constant time).
        """
        return hmac.compare_digest(_bytes(self.password), _bytes(password))


class ICertificateFingerprint(ICredentials):
    """
    A TLS client certificate the connection proved it holds the key of
    (SASL EXTERNAL).
    """

    fingerprint = Attribute("Its SHA-256 fingerprint, as hex digits (colons allowed).")
    requestedAccount = Attribute(
        "The account asked for (the SASL authorization identity), or None for"
        " whichever account registered the certificate."
    )


@implementer(ICertificateFingerprint)
@attrs.frozen
class CertificateCredentials:
    """
    L{ICertificateFingerprint} credentials.
    """

    fingerprint: str
    requestedAccount: str | None = None


class LoginThrottled(UnauthorizedLogin):
    """
    A login refused without checking it, because of the limits of
    L{LoginLimits}.  Its message is always L{THROTTLED}.

    @ivar limit: which limit: C{"account"} (per account and prefix),
        C{"source"} (per prefix) or C{"busy"} (hashes in flight).
    @ivar retryAfter: seconds until the account limit allows another
        attempt from that prefix, or L{None}.
    """

    def __init__(self, limit: str, retryAfter: float | None = None) -> None:
        super().__init__(THROTTLED)
        self.limit = limit
        self.retryAfter = retryAfter


@attrs.frozen
class LoginLimits:
    """
    Settings of L{AccountChecker}'s throttling (see the module docstring).

    @ivar accountFreeFailures: failures for one account from one prefix
        before delays begin.
    @ivar accountFirstDelay: the first delay, in seconds; each further
        failure doubles it.
    @ivar accountMaxDelay: the longest delay.
    @ivar accountForgetAfter: seconds without an attempt after which an
        (account, prefix) pair starts again from nothing.
    @ivar sourceFailures: failures a source prefix may have at once (the
        bucket size).
    @ivar sourcePeriod: seconds in which a prefix earns back that many.
    @ivar ipv4Prefix: prefix length grouping IPv4 sources.
    @ivar ipv6Prefix: prefix length grouping IPv6 sources.
    @ivar maxInFlight: hashes waiting for a thread or running, at most.
    @ivar threads: threads of the default hashing pool.
    @ivar tableSize: (account, prefix) pairs and prefixes remembered; the
        least recently seen is forgotten first.
    """

    accountFreeFailures: int = 5
    accountFirstDelay: float = 1.0
    accountMaxDelay: float = 60.0
    accountForgetAfter: float = 3600.0
    sourceFailures: float = 20.0
    sourcePeriod: float = 60.0
    ipv4Prefix: int = 32
    ipv6Prefix: int = 64
    maxInFlight: int = 4
    threads: int = 2
    tableSize: int = 100_000

    def accountDelay(self, failures: int) -> float:
        """
        @return: how long after its last attempt a pair with C{failures}
            failures must wait (0 while it has fewer than
            C{accountFreeFailures}).
        """
        if failures < self.accountFreeFailures:
            return 0.0
        doublings = min(failures - self.accountFreeFailures, 64)
        return min(self.accountMaxDelay, self.accountFirstDelay * 2.0**doublings)


@implementer(ICredentialsChecker)
class AccountChecker:
    """
    Checks account passwords against the store, with the throttling of the
    module docstring.

    @ivar counts: C{attempts}, C{succeeded}, C{failed}, C{throttled},
        C{hashed} (passwords verified) and C{rehashed} (hashes replaced
        because the parameters changed), for metrics.
    @ivar refusals: the refusals by reason (C{invalid-credentials},
        C{throttled-account}, C{throttled-source}, C{throttled-busy},
        C{insecure}), logged at a bounded rate.
    @ivar inFlight: attempts admitted and not answered yet.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(
        self,
        store,
        reactor,
        pool=None,
        hasher: PasswordHasher | None = None,
        limits: LoginLimits | None = None,
        log: Logger | None = None,
    ) -> None:
        """
        @param store: a L{netservices.chat.store.ThreadedStore}.
        @param reactor: the clock and C{callFromThread} of
            C{deferToThreadPool}.
        @param pool: the thread pool that hashes (default: a new pool of
            C{limits.threads} daemon threads, started by L{startService}
            or by the first login).
        @param hasher: the L{PasswordHasher} (default: OWASP's minimum).
        """
        self.store = store
        self.reactor = reactor
        self.limits = limits = limits if limits is not None else LoginLimits()
        self.pool = (
            pool if pool is not None else DaemonThreadPool(0, limits.threads, name="chat-login")
        )
        self.hasher = hasher if hasher is not None else PasswordHasher()
        self.log = log if log is not None else Logger(namespace="netservices.chat")
        self.refusals = RefusalLog(self.log, reactor, "login")
        self.counts: Counter[str] = Counter(
            attempts=0, succeeded=0, failed=0, throttled=0, hashed=0, rehashed=0
        )
        self.inFlight = 0
        self.running = False
        self._pairs: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._sources = PrefixRateLimiter(
            RateLimits(
                rate=limits.sourceFailures / limits.sourcePeriod,
                burst=limits.sourceFailures,
                globalRate=0,
                tableSize=limits.tableSize,
                ipv4Prefix=limits.ipv4Prefix,
                ipv6Prefix=limits.ipv6Prefix,
            ),
            reactor,
        )

    def startService(self) -> None:
        """
        Start the hashing pool, and compute the dummy hash on it.
        """
        if self.running:
            return
        self.running = True
        self.pool.start()
        self.pool.callInThreadWithCallback(lambda ok, result: None, self.hasher.dummyHash)

    def stopService(self) -> None:
        """
        Stop the hashing pool (joining its threads), and log the totals.
        """
        if self.running:
            self.running = False
            self.pool.stop()
        self.log.info(
            "logins attempted={attempts} succeeded={succeeded} failed={failed}"
            " throttled={throttled} hashed={hashed} rehashed={rehashed}",
            **self.counts,
        )
        self.refusals.logTotals()

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes]:
        """
        Check C{credentials} (L{SourcedCredentials}; plain
        L{IUsernamePassword} credentials count as coming from an unknown,
        secure source).

        @return: a L{Deferred} firing with the account's name as registered,
            in UTF-8; or failing with L{UnauthorizedLogin} (message
            L{INVALID_CREDENTIALS}) for a wrong password or an unknown
            account alike, L{LoginThrottled} over a limit, or
            L{UnauthorizedLogin} without any check for credentials from a
            connection that is neither TLS nor loopback.
        """
        self.counts["attempts"] += 1
        name = _text(credentials.username)
        source = str(getattr(credentials, "source", "") or "")
        shown = name if validNick(name) else repr(name[:40])
        who = f"{source or 'unknown source'} for account {shown}"
        if not getattr(credentials, "secure", True) and not isLoopback(source):
            # The protocol never asks for these; refuse them anyway.
            self.counts["failed"] += 1
            self.refusals.refuse("insecure", who, account=name, source=source)
            return fail(UnauthorizedLogin(INVALID_CREDENTIALS))
        now = self.reactor.seconds()
        prefix = prefixKey(source, self.limits.ipv4Prefix, self.limits.ipv6Prefix)
        key = (foldCase(name) if validNick(name) else "", prefix)
        wait = self._accountWait(key, now)
        if wait > 0:
            return self._throttle(LoginThrottled("account", wait), who, name, source)
        if self.inFlight >= self.limits.maxInFlight:
            return self._throttle(LoginThrottled("busy"), who, name, source)
        if self._sources.check(source) is not None:
            return self._throttle(LoginThrottled("source"), who, name, source)
        self._charge(key, now)
        self.inFlight += 1
        if not self.running:
            self.startService()
        password = credentials.password
        looking = self.store.getAccount(name) if validNick(name) else succeed(None)

        def verify(account):
            checking = deferToThreadPool(
                self.reactor,
                self.pool,
                self._verify,
                None if account is None else account.passwordHash,
                password,
            )
            return checking.addCallback(lambda outcome: (account, *outcome))

        looking.addCallback(verify)
        return looking.addBoth(self._checked, key, who, name, source)

    def _verify(self, passwordHash: str | None, password) -> tuple[bool, str | None]:
        """
        In a pool thread: verify the password (against the dummy hash for an
        unknown account), and hash it again if the hash's parameters are
        not the hasher's.

        @return: whether it matched, and the new hash or L{None}.
        """
        if passwordHash is None:
            self.hasher.verify(self.hasher.dummyHash(), password)
            return False, None
        if not self.hasher.verify(passwordHash, password):
            return False, None
        if self.hasher.needsRehash(passwordHash):
            return True, self.hasher.hash(password)
        return True, None

    def _checked(self, result, key, who: str, name: str, source: str) -> bytes:
        self.inFlight -= 1
        if isinstance(result, Failure):
            # The store failed: not the user's fault, so not counted
            # against the source; passed on as it is.
            self._sources.refund(source)
            self.log.failure("login check failed for {who}", result, who=who)
            return result
        account, matched, newHash = result
        self.counts["hashed"] += 1
        if not matched:
            self.counts["failed"] += 1
            self.refusals.refuse("invalid-credentials", who, account=name, source=source)
            raise UnauthorizedLogin(INVALID_CREDENTIALS)
        self.counts["succeeded"] += 1
        self._pairs.pop(key, None)
        self._sources.refund(source)
        if newHash is not None:
            self.counts["rehashed"] += 1
            saving = self.store.setPassword(account.name, newHash)
            saving.addErrback(
                lambda f: self.log.failure(
                    "cannot store the new hash of account {account}", f, account=account.name
                )
            )
        return account.name.encode("utf-8")

    def _throttle(self, error: LoginThrottled, who: str, name: str, source: str) -> Deferred:
        self.counts["throttled"] += 1
        self.refusals.refuse(f"throttled-{error.limit}", who, account=name, source=source)
        return fail(error)

    def _accountWait(self, key: tuple[str, str], now: float) -> float:
        """
        @return: seconds until the pair C{key} may try again (0: now).
        """
        state = self._pairs.get(key)
        if state is None:
            return 0.0
        failures, last = state
        if now - last >= self.limits.accountForgetAfter:
            del self._pairs[key]
            return 0.0
        return max(0.0, last + self.limits.accountDelay(int(failures)) - now)

    def _charge(self, key: tuple[str, str], now: float) -> None:
        """
        Count an attempt of pair C{key} as a failure until it succeeds.
        """
        state = self._pairs.pop(key, None) or [0, now]
        state[0] += 1
        state[1] = now
        self._pairs[key] = state
        while len(self._pairs) > self.limits.tableSize:
            self._pairs.popitem(last=False)


class CheckerService(service.Service):
    """
    Starts an L{AccountChecker}'s hashing pool with the service, and stops
    it (logging the login totals) when the service stops.
    """

    def __init__(self, checker: AccountChecker) -> None:
        self.checker = checker

    def startService(self) -> None:
        super().startService()
        self.checker.startService()

    def stopService(self) -> None:
        super().stopService()
        self.checker.stopService()


@implementer(ICredentialsChecker)
class GivenChecker:
    """
    A checker given with C{--auth} (Twisted's C{strcred}: C{file:},
    C{memory:}, C{unix}...), fed our credentials in the types it compares:
    C{file:} reads its file as bytes, the others take text.  Credentials in
    clear from elsewhere than loopback are refused without asking it.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, checker: ICredentialsChecker) -> None:
        self.checker = checker

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred:
        source = getattr(credentials, "source", None)
        if source is not None and not (credentials.secure or isLoopback(source)):
            return fail(UnauthorizedLogin(INVALID_CREDENTIALS))
        username, password = _text(credentials.username), _text(credentials.password)
        if isinstance(self.checker, FilePasswordDB):
            given = UsernamePassword(username.encode("utf-8"), password.encode("utf-8"))
        else:
            given = UsernamePassword(username, password)
        return maybeDeferred(self.checker.requestAvatarId, given)


@implementer(ICredentialsChecker)
class CertificateChecker:
    """
    Logs in with a TLS client certificate (SASL EXTERNAL): the account that
    registered its fingerprint.  Nothing is hashed, so nothing is
    throttled: the TLS handshake has proved the client holds the key.
    """

    credentialInterfaces = (ICertificateFingerprint,)

    def __init__(self, store) -> None:
        """
        @param store: a L{netservices.chat.store.ThreadedStore}.
        """
        self.store = store

    def requestAvatarId(self, credentials: ICertificateFingerprint) -> Deferred[bytes]:
        """
        @return: a L{Deferred} firing with the name (UTF-8) of the account
            whose registered fingerprint is C{credentials.fingerprint}, if
            it is C{credentials.requestedAccount} (any case) when that is
            given; else failing with L{UnauthorizedLogin}.
        """
        requested = credentials.requestedAccount

        def found(name: str | None) -> bytes:
            if name is None:
                raise UnauthorizedLogin("no account has this certificate")
            if requested is not None and foldCase(requested) != foldCase(name):
                raise UnauthorizedLogin("this certificate belongs to another account")
            return name.encode("utf-8")

        return self.store.accountForFingerprint(credentials.fingerprint).addCallback(found)


class IChatAccount(Interface):
    """
    A logged-in chat account: the avatar of L{ChatRealm}.
    """

    name = Attribute("The account's name as registered.")
    oper = Attribute("Whether the account may become an IRC operator.")


@implementer(IChatAccount)
@attrs.frozen
class AccountAvatar:
    """
    L{IChatAccount}, as read from the store at login.
    """

    name: str
    oper: bool = False


@implementer(IRealm)
class ChatRealm:
    """
    Turns an account name (an avatar ID) into an L{AccountAvatar}, read
    from the store.
    """

    def __init__(self, store, requireAccount: bool = True) -> None:
        """
        @param store: a L{netservices.chat.store.ThreadedStore}.
        @param requireAccount: whether the avatar ID must name an account
            in the store; if not (logins checked by another checker, from
            C{--auth}), a name without one is a plain, non-operator avatar.
        """
        self.store = store
        self.requireAccount = requireAccount

    def requestAvatar(self, avatarId: bytes, mind, *interfaces):
        """
        @return: a L{Deferred} of C{(IChatAccount, AccountAvatar, logout)};
            failing with L{UnauthorizedLogin} if the account was deleted
            since it was checked.
        @raise NotImplementedError: if L{IChatAccount} is not asked for.
        """
        if IChatAccount not in interfaces:
            raise NotImplementedError("the chat realm only has IChatAccount avatars")
        name = _text(avatarId)

        def found(account):
            if account is None:
                if self.requireAccount:
                    raise UnauthorizedLogin(INVALID_CREDENTIALS)
                return IChatAccount, AccountAvatar(name), lambda: None
            return IChatAccount, AccountAvatar(account.name, account.oper), lambda: None

        return self.store.getAccount(name).addCallback(found)


def makePortal(store, reactor, checkers=None) -> Portal:
    """
    @param store: a started L{netservices.chat.store.ThreadedStore}.
    @param checkers: the credential checkers; by default an
        L{AccountChecker} (whose pool starts with the first login; pass
        your own, under a L{CheckerService}, to stop it with the server)
        and a L{CertificateChecker}.
    @return: a portal over the L{ChatRealm} of C{store}.
    """
    if checkers is None:
        checkers = [AccountChecker(store, reactor), CertificateChecker(store)]
    return Portal(ChatRealm(store), checkers)
