"""
Tests for L{netservices.chat.login}: capabilities, SASL, PASS, nick
ownership, operators and registered channels, on the fake chat server with
a fake portal.
"""

import base64

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import fail, succeed
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from netservices._common import tls
from netservices.chat.accounts import AccountAvatar, ICertificateFingerprint, IChatAccount
from netservices.chat.directory import AccountSummary, MemoryDirectory
from netservices.chat.login import AccountSettings
from netservices.chat.protocol import ConnectionSettings
from netservices.chat.store import ChannelRecord, StoreError
from netservices.testing import FakeChatServer, offeredCapabilities

PASSWORDS = {"alice": "secret-alice", "root": "secret-root", "bob": "secret-bob"}


@implementer(ICredentialsChecker)
class FakeChecker:
    """
    Accepts the passwords of L{PASSWORDS} and the certificate C{AA:BB} for
    alice, and records every check.
    """

    credentialInterfaces = (IUsernamePassword, ICertificateFingerprint)

    #: Set to fail every check as when the account store is unreachable.
    broken = False

    def __init__(self) -> None:
        self.checked: list = []

    def requestAvatarId(self, credentials):
        self.checked.append(credentials)
        if self.broken:
            return fail(StoreError("the chat store is unreachable"))
        if ICertificateFingerprint.providedBy(credentials):
            if credentials.fingerprint == "AA:BB":
                return succeed(b"alice")
            return fail(UnauthorizedLogin("invalid credentials"))
        if PASSWORDS.get(credentials.username) == credentials.password:
            return succeed(credentials.username.encode())
        return fail(UnauthorizedLogin("invalid credentials"))


@implementer(IRealm)
class FakeRealm:
    """
    Avatars for account names; root may be an operator.
    """

    def requestAvatar(self, avatarId, mind, *interfaces):
        name = avatarId.decode()
        return IChatAccount, AccountAvatar(name, name == "root"), lambda: None


def plain(account: str, password: str) -> str:
    """
    @return: the base64 of a SASL PLAIN message.
    """
    return base64.b64encode(f"\0{account}\0{password}".encode()).decode()


class LoginTestCase(SynchronousTestCase):
    """
    A fake chat server whose portal is a L{FakeChecker}.
    """

    accountSettings: dict = {}

    def setUp(self) -> None:
        self.checker = FakeChecker()
        self.rehashed = []
        self.directory = MemoryDirectory(
            [AccountSummary("alice"), AccountSummary("root", oper=True)],
            [ChannelRecord("#Reg", founder="alice", modes="int", topic="Registered")],
        )
        self.server = FakeChatServer(
            ConnectionSettings(floodRate=0),
            accounts=AccountSettings(
                portal=Portal(FakeRealm(), [self.checker]),
                rehash=lambda: self.rehashed.append(True),
                **self.accountSettings,
            ),
            directory=self.directory,
        )
        self.addCleanup(self.server.stop)

    def loggedIn(self, nick: str, account: str | None = None, **connect):
        """
        @return: a client that logged in with SASL and registered.
        """
        client = self.server.connect(**connect)
        client.send(
            "CAP LS 302", f"NICK {nick}", f"USER {nick} 0 * :{nick}", "CAP REQ :sasl",
            "AUTHENTICATE PLAIN", "AUTHENTICATE " + plain(account or nick, PASSWORDS[account or nick]),
            "CAP END",
        )
        client.received()
        return client


class CapabilityTests(LoginTestCase):
    """
    What is offered, and to whom.
    """

    def test_saslWhereCredentialsAreAllowed(self) -> None:
        """
        SASL is offered over TLS and from loopback, not in clear from
        elsewhere.
        """
        for connect, offered in [
            ({"host": "127.0.0.1"}, offeredCapabilities("sasl=PLAIN,EXTERNAL")),
            ({"host": "::1"}, offeredCapabilities("sasl=PLAIN,EXTERNAL")),
            ({"host": "192.0.2.1", "secure": True}, offeredCapabilities("sasl=PLAIN,EXTERNAL")),
            ({"host": "192.0.2.1"}, offeredCapabilities()),
        ]:
            client = self.server.connect(**connect)
            client.send("CAP LS 302")
            self.assertEqual(client.received(), [f":irc.test CAP * LS :{offered}"], connect)

    def test_valuesOnlyFor302(self) -> None:
        """
        Without C{302}, capabilities are listed without values.
        """
        client = self.server.connect(host="127.0.0.1")
        client.send("CAP LS")
        self.assertEqual(client.received(), [f":irc.test CAP * LS :{offeredCapabilities('sasl')}"])

    def test_requestAllOrNothing(self) -> None:
        """
        A request with an unknown capability is refused whole.
        """
        client = self.server.connect(host="127.0.0.1")
        client.send("CAP LS 302", "CAP REQ :sasl bogus", "CAP LIST", "CAP REQ :sasl", "CAP LIST",
                    "CAP REQ :-sasl", "CAP LIST")
        self.assertEqual(
            client.received()[1:],
            [":irc.test CAP * NAK :sasl bogus", ":irc.test CAP * LIST :cap-notify",
             ":irc.test CAP * ACK :sasl", ":irc.test CAP * LIST :cap-notify sasl",
             ":irc.test CAP * ACK :-sasl", ":irc.test CAP * LIST :cap-notify"],
        )


class STSTests(SynchronousTestCase):
    """
    Strict transport security.
    """

    def test_sts(self) -> None:
        """
        Plaintext connections get the TLS port, TLS ones the duration; the
        policy cannot be requested.
        """
        server = FakeChatServer(accounts=AccountSettings(stsPort=6697, stsDuration=300))
        self.addCleanup(server.stop)
        plaintext, secure = server.connect(), server.connect(secure=True)
        plaintext.send("CAP LS 302", "CAP REQ :sts")
        secure.send("CAP LS 302")
        self.assertEqual(
            plaintext.received(),
            [f":irc.test CAP * LS :{offeredCapabilities('sts=port=6697')}",
             ":irc.test CAP * NAK :sts"],
        )
        self.assertEqual(secure.received(), [f":irc.test CAP * LS :{offeredCapabilities('sts=duration=300')}"])


class SASLTests(LoginTestCase):
    """
    C{AUTHENTICATE} with PLAIN and EXTERNAL.
    """

    def test_plain(self) -> None:
        """
        A good PLAIN exchange logs in (900, 903) before registration; WHOIS
        shows the account.
        """
        client = self.server.connect(host="127.0.0.1")
        client.send("CAP LS 302", "NICK alice", "USER alice 0 * :A", "CAP REQ :sasl",
                    "AUTHENTICATE PLAIN")
        self.assertEqual(client.received()[-1], "AUTHENTICATE +")
        client.send("AUTHENTICATE " + plain("alice", "secret-alice"))
        self.assertEqual(
            client.received(),
            [":irc.test 900 alice alice!*@127.0.0.1 alice :You are now logged in as alice",
             ":irc.test 903 alice :SASL authentication successful"],
        )
        client.send("CAP END", "WHOIS alice")
        lines = client.received()
        self.assertEqual(lines[0].split()[1], "001")
        self.assertIn(":irc.test 330 alice alice alice :is logged in as", lines)
        self.assertEqual(self.server.service.findUser("alice").account, "alice")

    def test_failuresAlike(self) -> None:
        """
        A wrong password and an unknown account get the same 904, and the
        client may register anyway.
        """
        client = self.server.connect(host="127.0.0.1")
        client.send("CAP LS 302", "NICK x", "USER x 0 * :x")
        client.received()
        replies = []
        for account, password in [("alice", "wrong"), ("nobody", "wrong")]:
            client.send("AUTHENTICATE PLAIN", "AUTHENTICATE " + plain(account, password))
            replies.append(client.received())
        self.assertEqual(replies[0], replies[1])
        self.assertEqual(replies[0][-1], ":irc.test 904 x :SASL authentication failed")
        client.send("CAP END")
        self.assertEqual(client.received()[0].split()[1], "001")

    def test_clearTextRefusedWithoutChecking(self) -> None:
        """
        In clear from a non-loopback address, AUTHENTICATE and PASS fail and
        the checker is never called.
        """
        client = self.server.connect(host="192.0.2.7")
        client.send("AUTHENTICATE PLAIN")
        self.assertEqual(client.received(), [":irc.test 904 * :SASL authentication failed"])
        other = self.server.connect(host="192.0.2.8")
        other.send("PASS alice:secret-alice", "NICK alice", "USER a 0 * :a")
        self.assertEqual(
            other.received(),
            [":irc.test 464 alice :Password incorrect",
             "ERROR :Closing Link: 192.0.2.8 (Credentials are only accepted over TLS)"],
        )
        self.assertEqual(self.checker.checked, [])
        self.assertEqual(self.server.factory.refusals.counts["credentials-in-clear"], 2)

    def test_chunks(self) -> None:
        """
        A message of exactly 400 bytes is followed by C{+}; longer ones are
        split into 400-byte chunks; too long is 905.
        """
        client = self.server.connect(host="127.0.0.1")
        password = "p" * 294  # 300 bytes of PLAIN: 400 of base64
        PASSWORDS["long"] = password
        self.addCleanup(PASSWORDS.pop, "long")
        encoded = plain("long", password)
        self.assertEqual(len(encoded), 400)
        client.send("AUTHENTICATE PLAIN", "AUTHENTICATE " + encoded)
        self.assertEqual(client.received(), ["AUTHENTICATE +"])
        client.send("AUTHENTICATE +")
        self.assertEqual(client.received()[-1], ":irc.test 903 * :SASL authentication successful")
        other = self.server.connect(host="127.0.0.1")
        other.send("AUTHENTICATE PLAIN", *["AUTHENTICATE " + "A" * 400] * 5)
        self.assertEqual(other.received()[-1], ":irc.test 905 * :SASL message too long")

    def test_abortAlreadyMechanisms(self) -> None:
        """
        C{*} aborts (906); a second login is 907; an unknown mechanism
        lists the known ones (908) and fails (904).
        """
        client = self.server.connect(host="127.0.0.1")
        client.send("AUTHENTICATE CRAM-MD5", "AUTHENTICATE PLAIN", "AUTHENTICATE *")
        self.assertEqual(
            client.received(),
            [":irc.test 908 * PLAIN,EXTERNAL :are available SASL mechanisms",
             ":irc.test 904 * :SASL authentication failed",
             "AUTHENTICATE +",
             ":irc.test 906 * :SASL authentication aborted"],
        )
        logged = self.loggedIn("alice", host="127.0.0.1")
        logged.send("AUTHENTICATE PLAIN")
        self.assertEqual(
            logged.received(),
            [":irc.test 907 alice :You have already authenticated using SASL"],
        )

    def test_external(self) -> None:
        """
        EXTERNAL logs in with the TLS client certificate's fingerprint.
        """
        self.patch(tls, "peerCertificateFingerprint", lambda transport: "AA:BB")
        client = self.server.connect(secure=True)
        client.send("AUTHENTICATE EXTERNAL", "AUTHENTICATE +")
        self.assertEqual(
            client.received(),
            ["AUTHENTICATE +",
             ":irc.test 900 * *!*@192.0.2.1 alice :You are now logged in as alice",
             ":irc.test 903 * :SASL authentication successful"],
        )
        self.assertEqual(self.checker.checked[-1].fingerprint, "AA:BB")


class UncheckableTests(LoginTestCase):
    """
    Logins when the checker cannot check (its store is unreachable).
    """

    def test_sasl(self) -> None:
        """
        SASL gets 904 (the error is logged) and the client may register
        anyway: it is not left waiting.
        """
        self.checker.broken = True
        client = self.server.connect(host="127.0.0.1")
        client.send("CAP LS 302", "NICK x", "USER x 0 * :x", "AUTHENTICATE PLAIN",
                    "AUTHENTICATE " + plain("alice", "secret-alice"))
        self.assertEqual(client.received()[-1], ":irc.test 904 x :SASL authentication failed")
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)
        client.send("CAP END")
        self.assertEqual(client.received()[0].split()[1], "001")

    def test_pass(self) -> None:
        """
        PASS ends the connection with a reason that is not a wrong password.
        """
        self.checker.broken = True
        client = self.server.connect(host="127.0.0.1")
        client.send("PASS alice:secret-alice", "NICK al", "USER a 0 * :a")
        self.assertEqual(client.received(), [
            "ERROR :Closing Link: 127.0.0.1 (Passwords cannot be checked now; try again later)"
        ])
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)


class PassTests(LoginTestCase):
    """
    C{PASS account:password} and C{PASS password}.
    """

    def test_accountAndPassword(self) -> None:
        """
        C{PASS account:password} logs in before the welcome.
        """
        client = self.server.connect(host="127.0.0.1")
        client.send("PASS alice:secret-alice", "NICK al", "USER a 0 * :a")
        lines = client.received()
        self.assertEqual(lines[0], ":irc.test 900 al al!*@127.0.0.1 alice :You are now logged in as alice")
        self.assertEqual(lines[1].split()[1], "001")

    def test_passwordForNick(self) -> None:
        """
        A password alone is for the account named like the nick.
        """
        client = self.server.connect(host="127.0.0.1")
        client.send("PASS secret-bob", "NICK bob", "USER b 0 * :b")
        self.assertEqual(client.received()[0].split()[1], "900")

    def test_wrong(self) -> None:
        """
        A wrong password is 464 and the end of the connection.
        """
        client = self.server.connect(host="127.0.0.1")
        client.send("PASS alice:nope", "NICK al", "USER a 0 * :a")
        self.assertEqual(
            client.received(),
            [":irc.test 464 al :Password incorrect",
             "ERROR :Closing Link: 127.0.0.1 (Bad password)"],
        )
        self.assertIsNone(self.server.service.users.get("al"))


class RequireAuthTests(LoginTestCase):
    """
    C{--require-auth}.
    """

    accountSettings = {"requireAuth": True}

    def test_refused(self) -> None:
        """
        A user who does not log in is refused; one who does is welcome.
        """
        client = self.server.connect(host="127.0.0.1")
        client.send("NICK x", "USER x 0 * :x")
        self.assertEqual(
            client.received(),
            ["ERROR :Closing Link: 127.0.0.1 (This server needs you to log in (SASL or PASS))"],
        )
        self.assertTrue(client.closed)
        self.loggedIn("alice", host="127.0.0.1")
        self.assertIsNotNone(self.server.service.findUser("alice"))


class NickOwnershipTests(LoginTestCase):
    """
    Nicks that belong to accounts.
    """

    def test_renamed(self) -> None:
        """
        A user on a registered nick who does not log in is warned, then
        renamed to a guest nick after the grace period.
        """
        client = self.server.connect()
        lines = client.register("alice")
        self.assertEqual(
            lines[-1],
            ":irc.test NOTICE alice :The nick alice belongs to an account: log in"
            " (SASL or PASS) or you will be renamed in 30 seconds",
        )
        self.server.clock.advance(29)
        self.assertEqual(client.received(), [])
        self.server.clock.advance(1)
        self.assertEqual(client.received(), [":alice!~alice@192.0.2.1 NICK :Guest1"])
        self.assertIsNone(self.server.service.findUser("alice"))

    def test_loggedIn(self) -> None:
        """
        The account's owner keeps the nick.
        """
        client = self.loggedIn("alice", host="127.0.0.1")
        self.server.clock.advance(60)
        self.assertEqual(client.received(), [])
        self.assertIsNotNone(self.server.service.findUser("alice"))

    def test_nickChange(self) -> None:
        """
        Changing to a registered nick starts the grace period; changing
        away ends it.
        """
        client = self.server.user("carol")
        client.send("NICK root")
        self.assertEqual(client.received()[-1].split()[1], "NOTICE")
        client.send("NICK carol")
        client.received()
        self.server.clock.advance(60)
        self.assertEqual(client.received(), [])


class OperatorTests(LoginTestCase):
    """
    C{OPER}, C{KILL}, C{WALLOPS} and C{REHASH}.
    """

    def oper(self):
        """
        @return: a TLS client that became an operator as root.
        """
        client = self.server.connect(secure=True)
        client.register("boss")
        client.send("OPER root secret-root")
        self.assertEqual(
            client.received(),
            [":irc.test 381 boss :You are now an IRC operator", ":boss MODE boss :+o"],
        )
        return client

    def test_oper(self) -> None:
        """
        Only an operator account, over TLS, with its password.
        """
        clear = self.server.user("clear")
        clear.send("OPER root secret-root")
        self.assertEqual(clear.received(), [":irc.test 491 clear :OPER needs an account over TLS"])
        secure = self.server.connect(secure=True)
        secure.register("plain")
        secure.send("OPER alice secret-alice", "OPER root wrong")
        self.assertEqual(
            secure.received(),
            [":irc.test 491 plain :You are not an IRC operator",
             ":irc.test 464 plain :Password incorrect"],
        )
        self.oper()

    def test_killWallopsRehash(self) -> None:
        """
        An operator kills, sends WALLOPS to +w users, rehashes; others get
        481.
        """
        boss = self.oper()
        victim, watcher = self.server.user("victim"), self.server.user("watcher")
        watcher.send("MODE watcher +w")
        watcher.received()
        victim.send("KILL watcher :no")
        self.assertEqual(
            victim.received(),
            [":irc.test 481 victim :Permission Denied- You're not an IRC operator"],
        )
        boss.send("WALLOPS :maintenance soon", "REHASH", "KILL victim :spam")
        self.assertEqual(watcher.received(), [":boss!~boss@192.0.2.1 WALLOPS :maintenance soon"])
        self.assertEqual(
            boss.received(),
            [":boss!~boss@192.0.2.1 WALLOPS :maintenance soon",
             ":irc.test 382 boss chat :Rehashing"],
        )
        self.assertEqual(self.rehashed, [True])
        self.assertEqual(victim.received(), ["ERROR :Closing Link: 192.0.2.1 (Killed (boss (spam)))"])
        self.assertIsNone(self.server.service.findUser("victim"))


class RegisteredChannelTests(LoginTestCase):
    """
    Registered channels keep their state; their operators get C{@} back.
    """

    def test_restored(self) -> None:
        """
        Nobody gets C{@} for creating a registered channel; its modes and
        topic come from the record; the founder, logged in, joins despite
        +i and gets C{@}.
        """
        guest = self.server.user("guest")
        guest.send("JOIN #reg")
        self.assertEqual(guest.received(), [":irc.test 473 guest #Reg :Cannot join channel (+i)"])
        alice = self.loggedIn("alice", host="127.0.0.1")
        alice.send("JOIN #reg")
        lines = alice.received()
        self.assertEqual(lines[0], ":alice!~alice@127.0.0.1 JOIN :#Reg")
        self.assertIn(":irc.test 332 alice #Reg :Registered", lines)
        self.assertIn(":irc.test 353 alice = #Reg :@alice", lines)
        alice.send("MODE #reg")
        self.assertEqual(alice.received()[0], ":irc.test 324 alice #Reg :+int")

    def test_saved(self) -> None:
        """
        Changes to a registered channel are saved, operators by account.
        """
        alice = self.loggedIn("alice", host="127.0.0.1")
        bob = self.loggedIn("bob", host="127.0.0.1")
        alice.send("JOIN #reg", "INVITE bob #reg", "MODE #reg -i+b x", "TOPIC #reg :New")
        bob.send("JOIN #reg")
        alice.send("MODE #reg +o bob")
        record = self.directory.channels["#reg"]
        self.assertEqual(
            (record.modes, record.bans, record.topic, record.operators),
            ("nt", ("x!*@*",), "New", ("bob",)),
        )
        bob.send("PART #reg")
        alice.send("PART #reg")
        bob.send("JOIN #reg")
        self.assertIn(":irc.test 353 bob = #Reg :@bob", bob.received())


class HandshakeTimeoutTests(LoginTestCase):
    """
    The TLS handshake timeout.
    """

    def test_timeout(self) -> None:
        """
        A TLS client that does not finish its handshake in 10 s is dropped.
        """
        client = self.server.connect(secure=True, handshake=False)
        self.server.clock.advance(9)
        self.assertFalse(client.closed)
        self.server.clock.advance(1)
        self.assertTrue(client.transport.disconnected)
        self.assertEqual(self.server.factory.refusals.counts["tls-handshake-timeout"], 1)


class InBandRegistrationTests(SynchronousTestCase):
    """
    C{REGISTER} (IRCv3 draft/account-registration), when allowed.
    """

    def setUp(self) -> None:
        from netservices.chat.login import RegistrationRefused

        self.created: list[tuple[str, str]] = []

        def register(name: str, password: str):
            if name == "taken":
                return fail(RegistrationRefused("ACCOUNT_EXISTS", "That account exists already"))
            self.created.append((name, password))
            return succeed(name)

        self.server = FakeChatServer(accounts=AccountSettings(register=register))
        self.addCleanup(self.server.stop)

    def test_offeredOverTLS(self) -> None:
        """
        The capability is offered over TLS only.
        """
        secure, clear = self.server.connect(secure=True), self.server.connect()
        secure.send("CAP LS 302")
        clear.send("CAP LS 302")
        self.assertIn("draft/account-registration=custom-account-name", secure.received()[0])
        self.assertNotIn("draft/account-registration", clear.received()[0])

    def test_register(self) -> None:
        """
        A registered user creates an account and is logged in to it.
        """
        client = self.server.connect(secure=True)
        client.register("dave")
        client.send("REGISTER * * :long enough password")
        self.assertEqual(
            client.received(),
            [":irc.test REGISTER SUCCESS dave :Account created",
             ":irc.test 900 dave dave!~dave@192.0.2.1 dave :You are now logged in as dave"],
        )
        self.assertEqual(self.created, [("dave", "long enough password")])
        client.send("REGISTER other * password1")
        self.assertEqual(
            client.received(),
            [":irc.test FAIL REGISTER ALREADY_AUTHENTICATED dave :You are already logged in"],
        )

    def test_refusals(self) -> None:
        """
        In clear, before the connection is complete, or for a taken name,
        registration is refused with the standard reply.
        """
        clear = self.server.user("eve")
        clear.send("REGISTER * * password1")
        early = self.server.connect(secure=True)
        early.send("REGISTER early * password1")
        taken = self.server.connect(secure=True)
        taken.register("frank")
        taken.send("REGISTER taken * password1")
        self.assertEqual(
            (clear.received(), early.received(), taken.received()),
            ([":irc.test FAIL REGISTER DISALLOWED eve :Registration is not allowed here"],
             [":irc.test FAIL REGISTER COMPLETE_CONNECTION_REQUIRED early :Finish connecting first"],
             [":irc.test FAIL REGISTER ACCOUNT_EXISTS taken :That account exists already"]),
        )
        self.assertEqual(self.created, [])
