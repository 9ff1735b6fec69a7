"""
Tests for L{netservices.chat.admin}: C{netservices chat-admin}, parsed and
run in-process, and end to end as a subprocess.
"""

from __future__ import annotations

import io
import sys

from twisted.internet.defer import Deferred, gatherResults
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netservices._common.client import ClientError
from netservices.chat import admin
from netservices.chat.accounts import PasswordHasher
from netservices.chat.store import DATABASE_NAME, Store
from netservices.cli import Options
from netservices.testing import oneLineFailure, runCommand
from tests.chat.test_store import FINGERPRINT, temporaryDirectory


def parse(argv: list[str]) -> usage.Options:
    """
    @return: the leaf options of C{netservices ARGV}.
    """
    options = Options()
    options.parseOptions(argv)
    while getattr(options, "subOptions", None) is not None:
        options = options.subOptions
    return options


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class InProcessTests(SynchronousTestCase):
    """
    C{chat-admin} parsed and run in the test's process.
    """

    def setUp(self):
        self.directory = temporaryDirectory(self)
        self.output = io.StringIO()
        self.patch(sys, "stdout", self.output)

    def run_(self, *argv: str):
        """
        Parse and run C{netservices chat-admin --data-dir DIR ARGV}.

        @return: what it printed.
        """
        leaf = parse(["chat-admin", "--data-dir", str(self.directory), *argv])
        self.successResultOf(Deferred.fromCoroutine(leaf.run(None)))
        return self.output.getvalue()

    def failure(self, *argv: str) -> str:
        """
        @return: the message of the L{ClientError} that running ARGV fails
            with.
        """
        leaf = parse(["chat-admin", "--data-dir", str(self.directory), *argv])
        return str(self.failureResultOf(Deferred.fromCoroutine(leaf.run(None)), ClientError).value)

    def store(self) -> Store:
        store = Store.open(self.directory / DATABASE_NAME)
        self.addCleanup(store.close)
        return store

    def passwordFile(self, text: str) -> str:
        path = self.directory / "password"
        path.write_text(text)
        return str(path)

    def test_usageErrors(self):
        """
        Bad command lines are usage errors (status 2), before anything is
        opened.
        """
        for argv in [
            [],
            ["user"],
            ["oper"],
            ["channel"],
            ["user", "add"],
            ["user", "add", "9lives"],
            ["user", "add", "alice", "bob"],
            ["user", "list", "extra"],
            ["user", "certfp", "alice"],
            ["user", "certfp", "alice", FINGERPRINT, "--clear"],
            ["user", "certfp", "alice", "12:34"],
            ["oper", "grant", "a b"],
            ["channel", "register", "#x"],
            ["channel", "register", "lobby", "--founder", "alice"],
            ["channel", "register", "#x", "--founder", "-alice"],
            ["channel", "drop", "#a,b"],
        ]:
            self.assertRaises(
                usage.UsageError, parse, ["chat-admin", "--data-dir", str(self.directory), *argv]
            )
        self.assertEqual(list(self.directory.iterdir()), [])

    def test_defaultDataDirectory(self):
        """
        Without C{--data-dir}, the chat server's default state directory.
        """
        from netservices.chat.tap import defaultDataDirectory

        options = Options()
        options.parseOptions(["chat-admin", "user", "list"])
        self.assertEqual(options.subOptions["data-dir"], str(defaultDataDirectory()))

    def test_prompt(self):
        """
        Without C{--password-file} the password is asked twice on the
        terminal; the two must match, and be long enough.
        """
        answers: list[str] = []
        self.patch(admin.getpass, "getpass", lambda prompt: answers.pop(0))
        self.patch(sys, "stdin", _Terminal())
        answers[:] = ["long enough", "long enuogh"]
        self.assertEqual(self.failure("user", "add", "alice"), "the passwords typed differ")
        answers[:] = ["short", "short"]
        self.assertEqual(
            self.failure("user", "add", "alice"), "password too short: at least 8 characters"
        )
        answers[:] = ["long enough", "long enough"]
        self.assertEqual(self.run_("user", "add", "alice"), "added account alice\n")
        account = self.store().getAccount("alice")
        self.assertTrue(PasswordHasher().verify(account.passwordHash, "long enough"))

    def test_noTerminal(self):
        """
        Without a terminal, and without C{--password-file}, nothing is
        asked: one line says to use C{--password-file}.
        """
        self.patch(sys, "stdin", io.StringIO())
        self.assertIn("--password-file", self.failure("user", "add", "alice"))
        self.assertEqual(list(self.directory.iterdir()), [])

    def test_passwordFile(self):
        """
        The first line of C{--password-file} is the password (C{-}:
        standard input); empty, short, NUL and unreadable ones are refused.
        """
        for text, message in [
            ("", "empty password refused"),
            ("\nsecond line is not read\n", "empty password refused"),
            ("short\n", "password too short"),
            ("with\0nul!", "cannot contain NUL"),
            ("x" * 401, "password too long"),
        ]:
            self.assertIn(
                message, self.failure("user", "add", "alice", "--password-file", self.passwordFile(text))
            )
        missing = str(self.directory / "missing")
        self.assertEqual(
            self.failure("user", "add", "alice", "--password-file", missing),
            f"cannot read password file {missing}: No such file or directory",
        )
        self.patch(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from standard input\r\nmore\n")))
        self.run_("user", "add", "alice", "--password-file", "-")
        account = self.store().getAccount("alice")
        self.assertTrue(PasswordHasher().verify(account.passwordHash, "from standard input"))

    def test_noDatabase(self):
        """
        Commands other than C{user add} do not create a database in a
        directory that has none.
        """
        self.assertIn("no chat database in", self.failure("user", "list"))
        self.assertEqual(list(self.directory.iterdir()), [])

    def test_accountCommands(self):
        """
        certfp, oper grant and revoke, channel register and drop, del (with
        C{--force} while the account founded channels); refusals are one
        line.
        """
        self.run_("user", "add", "Alice", "--password-file", self.passwordFile("password1"))
        self.run_("user", "certfp", "alice", FINGERPRINT)
        self.assertEqual(self.store().accountForFingerprint(FINGERPRINT), "Alice")
        self.run_("user", "certfp", "alice", "--clear")
        self.assertIsNone(self.store().accountForFingerprint(FINGERPRINT))
        self.run_("oper", "grant", "ALICE")
        self.assertTrue(self.store().getAccount("alice").oper)
        self.run_("oper", "revoke", "alice")
        self.assertFalse(self.store().getAccount("alice").oper)
        self.assertEqual(self.failure("oper", "grant", "bob"), "no account bob")
        self.assertEqual(
            self.failure("user", "passwd", "bob", "--password-file", self.passwordFile("password2")),
            "no account bob",
        )
        self.assertEqual(
            self.failure("user", "add", "ALICE", "--password-file", self.passwordFile("password1")),
            "account ALICE exists already",
        )
        self.assertEqual(self.failure("channel", "drop", "#nothing"), "channel #nothing is not registered")
        self.assertEqual(
            self.failure("channel", "register", "#x", "--founder", "bob"), "no account bob"
        )
        self.run_("channel", "register", "#a", "--founder", "alice")
        self.run_("channel", "register", "#b", "--founder", "alice")
        self.assertEqual(
            self.failure("user", "del", "alice"),
            "account alice founded #a, #b; drop them first, or use --force",
        )
        self.run_("channel", "drop", "#A")
        self.assertEqual(
            self.failure("user", "del", "alice"),
            "account alice founded #b; drop it first, or use --force",
        )
        self.run_("user", "del", "alice", "--force")
        self.assertEqual(self.store().listAccounts(), [])
        self.assertIn("no accounts", self.run_("user", "list"))
        self.assertIn("no registered channels", self.run_("channel", "list"))


class EndToEndTests(TestCase):
    """
    C{netservices chat-admin} as a user runs it.
    """

    async def test_session(self):
        """
        Add with C{--password-file}, passwd, oper grant, channel register,
        user and channel list; del refused while the account founded a
        channel (C{--force} is tested in-process).  The database holds Argon2id hashes with
        OWASP's parameters, never a password.
        """
        from twisted.internet import reactor

        directory = temporaryDirectory(self)
        first, second = directory / "first", directory / "second"
        first.write_text("first password\n")
        second.write_text("second password\n")
        data = directory / "state"

        async def admin(*argv: str) -> str:
            out, err, code = await runCommand(
                reactor, ["chat-admin", "--data-dir", str(data), *argv]
            )
            self.assertEqual((err, code), (b"", 0), out)
            return out.decode()

        self.assertEqual(await admin("user", "add", "alice", "--password-file", str(first)),
                         "added account alice\n")
        self.assertEqual((data.stat().st_mode & 0o777, (data / DATABASE_NAME).stat().st_mode & 0o777),
                         (0o700, 0o600))
        await admin("user", "passwd", "ALICE", "--password-file", str(second))
        await admin("oper", "grant", "alice")
        await admin("channel", "register", "#Lobby", "--founder", "Alice")
        listing = (await admin("user", "list")).splitlines()
        self.assertEqual(listing[0].split(), ["NAME", "OPER", "CREATED", "CERTIFICATE"])
        self.assertEqual(listing[1].split()[:2], ["alice", "yes"])
        self.assertEqual(listing[1].split()[-1], "no")
        self.assertEqual((await admin("channel", "list")).splitlines()[1].split(),
                         ["#Lobby", "alice", "+nt"])

        result = await runCommand(reactor, ["chat-admin", "--data-dir", str(data), "user", "del", "alice"])
        line = oneLineFailure(self, result, "#Lobby", "--force", code=1)
        self.assertTrue(line.startswith("netservices chat-admin user del: account alice founded"), line)

        store = Store.open(data / DATABASE_NAME)
        account = store.getAccount("alice")
        store.close()
        self.assertTrue(account.passwordHash.startswith("$argon2id$v=19$m=19456,t=2,p=1$"))
        self.assertTrue(PasswordHasher().verify(account.passwordHash, "second password"))
        stored = b"".join(path.read_bytes() for path in data.iterdir())
        self.assertNotIn(b"first password", stored)
        self.assertNotIn(b"second password", stored)

    async def test_badInput(self):
        """
        Bad input is one line on standard error, status 2 for usage and 1
        for refusals, nothing on standard output; none of these creates a
        database.
        """
        from twisted.internet import reactor

        directory = temporaryDirectory(self)
        short = directory / "short"
        short.write_text("short\n")
        data = str(directory / "state")
        cases = [
            (["user", "add", "9lives"], 2, ["not a valid account name", "see --help"]),
            (["user", "add", "alice", "--password-file", str(short)], 1, ["password too short"]),
            (["user", "add", "alice"], 1, ["no terminal", "--password-file"]),
            (["user", "list"], 1, ["no chat database"]),
        ]
        results = await gatherResults([
            runCommand(reactor, ["chat-admin", "--data-dir", data, *argv]) for argv, _, _ in cases
        ])
        for (argv, code, mentions), result in zip(cases, results):
            line = oneLineFailure(self, result, *mentions, code=code)
            self.assertTrue(line.startswith("netservices chat-admin"), line)
        self.assertFalse((directory / "state").exists())
