"""
Integration tests of chat: C{twistd -n netservices chat} as a child
process, over real loopback sockets (plaintext and TLS), with Twisted's own
IRC client (L{twisted.words.protocols.irc.IRCClient}) on the other side;
the zero configuration inside a network namespace of its own.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess

from cryptography import x509
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS

from netservices._common.tls import loadServerCertificate
from netservices.testing import (
    CLEAN_STOP,
    ListeningAddress,
    TwistdTestCase,
    connectIRCClient,
    enterNamespace,
    eventText,
    fetchStream,
    offeredCapabilities,
    oneLineFailure,
    runCommand,
    runTwistd,
    scrapeMetrics,
    writeCertificate,
)

#: The server name the tests give, so that whole lines can be compared.
SERVER = "irc.test"

#: The prefixes the server builds for the two users (the user name is the
#: client's claim, hence the C{~}).
ALICE = "alice!~alice@127.0.0.1"
BOB = "bob!~bob@127.0.0.1"


def tcp(port: int, host: str = "127.0.0.1") -> TCP4ClientEndpoint:
    """
    @return: a plaintext endpoint to C{host:port}.
    """
    return TCP4ClientEndpoint(reactor, host, port, timeout=10)


def tls(port: int, trusted: bytes, name: str = "localhost") -> object:
    """
    @param trusted: the PEM certificate trusted as the only root.
    @return: a TLS endpoint to C{127.0.0.1:port} that checks that the
        server's certificate is C{trusted}'s and valid for C{name}.
    """
    options = optionsForClientTLS(name, trustRoot=Certificate.loadPEM(trusted))
    return wrapClientTLS(options, tcp(port))


def numerics(lines: list[str]) -> list[str]:
    """
    @return: the command (numeric) of each line, all with a prefix.
    """
    return [line.split(" ", 2)[1] for line in lines]


def isNumeric(numeric: str):
    """
    @return: a predicate true of the lines with command C{numeric}.
    """
    return lambda line: line.split(" ", 2)[1:2] == [numeric]


class ChatTestCase(TwistdTestCase):
    """
    Clients connected by a test are closed after it.
    """

    async def connect(self, endpoint, nickname: str, register: bool = True):
        """
        Connect (and register, if C{register}) a
        L{netservices.testing.RecordingIRCClient}, closed after the test.
        """
        client = await connectIRCClient(reactor, endpoint, nickname, register, timeout=10)
        self.addCleanup(client.close)
        return client

    async def startChat(self, *listen: str):
        """
        Start the chat server with these C{--listen} descriptions, a state
        directory of its own and the name L{SERVER}.
        """
        args = ["chat", "--data-dir", str(self.temporaryDirectory()), "--server-name", SERVER]
        for description in listen:
            args += ["--listen", description]
        return await self.startServer(args, len(listen))

    async def aliceInClearBobOverTLS(self):
        """
        Start the server with a plaintext and a TLS listener; connect and
        register alice on the first and bob on the second.

        @return: the server, the CA certificate's path, alice and bob.
        """
        pem, ca = writeCertificate(self.temporaryDirectory())
        server = await self.startChat(
            "tcp:0:interface=127.0.0.1", f"ssl:0:privateKey={pem}:interface=127.0.0.1"
        )
        (_, plainPort), (_, tlsPort) = server.addresses
        alice = await self.connect(tcp(plainPort), "alice")
        bob = await self.connect(tls(tlsPort, ca.read_bytes()), "bob")
        return server, ca, alice, bob

    async def whois(self, asker, nick: str) -> list[str]:
        """
        @return: the lines of the answer to C{asker}'s C{WHOIS nick}, up to
            C{318} (end of WHOIS).
        """
        answer = asker.linesUntil(isNumeric("318"))
        asker.whois(nick)
        return await answer

    async def converse(self, alice, bob) -> None:
        """
        Alice and Bob, registered, join C{#room}, talk there and in
        private; Alice becomes Carol, leaves and comes back; Bob quits.
        Each sees exactly what the other did.
        """
        alice.join("#room")
        self.assertEqual(await alice.next("joined"), ("#room",))
        bob.join("#room")
        self.assertEqual(await bob.next("joined"), ("#room",))
        self.assertEqual(await alice.next("userJoined"), ("bob", "#room"))

        alice.msg("#room", "hello, room")
        self.assertEqual(await bob.next("privmsg"), (ALICE, "#room", "hello, room"))
        bob.msg("#room", "hi Alice")
        self.assertEqual(await alice.next("privmsg"), (BOB, "#room", "hi Alice"))

        alice.msg("bob", "just between us")
        self.assertEqual(await bob.next("privmsg"), (ALICE, "bob", "just between us"))
        bob.msg("alice", "agreed")
        self.assertEqual(await alice.next("privmsg"), (BOB, "alice", "agreed"))

        alice.setNick("carol")
        self.assertEqual(await bob.next("userRenamed"), ("alice", "carol"))
        self.assertEqual(await alice.next("nickChanged"), ("carol",))
        alice.msg("#room", "new name")
        self.assertEqual(
            await bob.next("privmsg"), ("carol!~alice@127.0.0.1", "#room", "new name")
        )

        alice.leave("#room", "brb")
        self.assertEqual(await bob.next("userLeft"), ("carol", "#room"))
        self.assertEqual(bob.lines[-1], ":carol!~alice@127.0.0.1 PART #room :brb")
        self.assertEqual(await alice.next("left"), ("#room",))
        alice.join("#room")
        self.assertEqual(await alice.next("joined"), ("#room",))
        self.assertEqual(await bob.next("userJoined"), ("carol", "#room"))

        bob.quit("goodbye")
        self.assertEqual(await alice.next("userQuit"), ("bob", "Quit: goodbye"))
        self.assertIsInstance(await bob.whenLost(), ConnectionDone)
        self.assertEqual(bob.lines[-1], "ERROR :Closing Link: 127.0.0.1 (Quit: goodbye)")

        # Nobody had their own messages echoed, or anything else left over.
        for client in (alice, bob):
            self.assertEqual(
                {name: client.pending(name) for name in client.RECORDED if client.pending(name)},
                {},
            )


class ConversationTests(ChatTestCase):
    """
    Two users talking through the server, over plaintext and TLS.
    """

    async def test_plaintext(self) -> None:
        """
        Over plaintext TCP on 127.0.0.1: both register (welcomed with their
        server-built prefix), then join, talk in the room and in private,
        rename, part and quit, each seeing exactly what the other did.
        """
        server = await self.startChat("tcp:0:interface=127.0.0.1")
        [(host, port)] = server.addresses
        alice = await self.connect(tcp(port, host), "alice")
        bob = await self.connect(tcp(port, host), "bob")
        self.assertIn(
            f":{SERVER} 001 alice :Welcome to the netservices IRC Network {ALICE}", alice.lines
        )
        await self.converse(alice, bob)

    async def test_tls(self) -> None:
        """
        Alice over plaintext, Bob over TLS (the certificate verified for
        C{localhost}): the same conversation works, and Bob's QUIT closes
        his TLS connection cleanly; WHOIS shows the secure numeric 671 for
        Bob and not for Alice.  A client that trusts another certificate,
        or expects another name, refuses the server's.
        """
        server, ca, alice, bob = await self.aliceInClearBobOverTLS()
        (_, plainPort), (_, tlsPort) = server.addresses

        aboutBob = await self.whois(alice, "bob")
        self.assertEqual(numerics(aboutBob), ["311", "312", "671", "317", "318"])
        self.assertEqual(
            aboutBob[:3],
            [
                f":{SERVER} 311 alice bob ~bob 127.0.0.1 * :bob test",
                f":{SERVER} 312 alice bob {SERVER} :netservices chat",
                f":{SERVER} 671 alice bob :is using a secure connection",
            ],
        )
        aboutAlice = await self.whois(bob, "alice")
        self.assertEqual(numerics(aboutAlice), ["311", "312", "317", "318"])

        await self.converse(alice, bob)

        _, otherCA = writeCertificate(self.temporaryDirectory())
        untrusted = connectIRCClient(
            reactor, tls(tlsPort, otherCA.read_bytes()), "mallory", timeout=10
        )
        await self.assertFailure(untrusted, SSL.Error)
        misnamed = connectIRCClient(
            reactor, tls(tlsPort, ca.read_bytes(), "example.com"), "mallory", timeout=10
        )
        await self.assertFailure(misnamed, VerificationError)


class NamespaceTestCase(ChatTestCase):
    """
    Each test runs the chat server in a network namespace of its own.
    """

    def setUp(self) -> None:
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise self.skipTest("network namespaces need root and iproute2")
        self.namespace = f"chat{os.getpid()}"
        self.ip("netns", "add", self.namespace)
        self.addCleanup(self.ip, "netns", "del", self.namespace)
        self.ip("-n", self.namespace, "link", "set", "lo", "up")

    def ip(self, *argv: str) -> None:
        """
        Run C{ip ARGV}.
        """
        completed = subprocess.run(["ip", *argv], capture_output=True, timeout=30)
        if completed.returncode:
            raise RuntimeError(f"ip {' '.join(argv)}: {completed.stderr.decode().strip()}")

    def connectInside(self, endpoint, nickname: str, register: bool = True) -> Deferred:
        """
        Connect a client from inside the namespace (its socket is made
        there; the reactor drives it like any other).
        """
        with enterNamespace(self.namespace):
            return Deferred.fromCoroutine(self.connect(endpoint, nickname, register))

    async def startInside(self, state, *args: str, listeners: int = 2) -> object:
        """
        Start C{twistd -n --pidfile= netservices chat --data-dir STATE}
        inside the namespace, and wait for its two listeners.
        """
        return await self.startServer(
            ["chat", "--data-dir", str(state), *args],
            listeners,
            prefix=["ip", "netns", "exec", self.namespace],
        )


class ZeroConfigurationTests(NamespaceTestCase):
    """
    C{twistd -n netservices chat} with no listen options, in a network
    namespace of its own, so that ports 6667 and 6697 are free.
    """

    def certificateEvent(self, server) -> dict:
        """
        @return: the one event that gives the certificate's fingerprint.
        """
        [event] = server.eventsMatching(lambda e: "fingerprint" in e)
        self.assertIn(event["fingerprint"], eventText(event))
        return event

    async def test_defaults(self) -> None:
        """
        With no options but the state directory: the log says where the
        state is, lists plaintext on 127.0.0.1:6667 and TLS on 0.0.0.0:6697,
        and gives the SHA-256 fingerprint of the self-signed certificate
        created in the state directory (key readable by the owner only).
        A client registers on both ports, over TLS trusting that
        certificate for C{localhost}.  A second start reuses it.
        """
        state = self.temporaryDirectory() / "state"
        server = await self.startInside(state)
        keyPath, certificatePath = state / "tls-key.pem", state / "tls-cert.pem"

        self.assertEqual(len(server.eventsMatching(lambda e: e.get("dataDir") == str(state))), 1)
        self.assertEqual(
            [(a.transport, a.host, a.port) for a in server.listening],
            [("tcp", "127.0.0.1", 6667), ("tcp", "0.0.0.0", 6697)],
        )
        self.assertEqual(
            server.listening[0],
            ListeningAddress("tcp", "127.0.0.1", 6667, "tcp:6667:interface=127.0.0.1"),
        )
        self.assertTrue(server.listening[1].description.startswith("ssl:6697"))
        created = self.certificateEvent(server)
        fingerprint = loadServerCertificate(keyPath, certificatePath).fingerprint
        self.assertEqual(
            (created["state"], created["path"], created["fingerprint"]),
            ("created", str(certificatePath), fingerprint),
        )
        self.assertEqual(stat.S_IMODE(keyPath.stat().st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(state.stat().st_mode), 0o700)
        certificate = certificatePath.read_bytes()

        plain, secure = await gatherResults(
            [
                self.connectInside(tcp(6667), "alice"),
                self.connectInside(tls(6697, certificate), "bob"),
            ]
        )
        for client, prefix in [(plain, ALICE), (secure, BOB)]:
            welcome = [line for line in client.lines if line.split(" ", 2)[1] == "001"]
            self.assertEqual(len(welcome), 1)
            self.assertTrue(
                welcome[0].endswith(f" :Welcome to the netservices IRC Network {prefix}")
            )

        self.assertEqual(await server.stop(), CLEAN_STOP)
        again = await self.startInside(state)
        reused = self.certificateEvent(again)
        self.assertEqual((reused["state"], reused["fingerprint"]), ("existing", fingerprint))
        self.assertEqual(certificatePath.read_bytes(), certificate)


class OptionsTests(ChatTestCase):
    """
    What the listen and state options do to the defaults.
    """

    async def test_portAndListenReplaceDefaults(self) -> None:
        """
        With C{--port N} or C{--listen DESC} the server listens there only:
        no TLS listener, no certificate made; a client registers.
        """
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        byPort, byListen = self.temporaryDirectory(), self.temporaryDirectory()
        arguments = [
            ["chat", "--port", str(port), "--data-dir", str(byPort)],
            ["chat", "--listen", "tcp:0:interface=127.0.0.1", "--data-dir", str(byListen)],
        ]
        servers = await gatherResults(
            [Deferred.fromCoroutine(self.startServer(args, 1)) for args in arguments]
        )
        listened = servers[1].listening[0]
        self.assertEqual(
            [server.listening for server in servers],
            [
                [ListeningAddress("tcp", "127.0.0.1", port, f"tcp:{port}:interface=127.0.0.1")],
                [ListeningAddress("tcp", "127.0.0.1", listened.port, "tcp:0:interface=127.0.0.1")],
            ],
        )
        for server in servers:
            [(host, serverPort)] = server.addresses
            await self.connect(tcp(serverPort, host), "alice")
            self.assertEqual(await server.stop(), CLEAN_STOP)
            self.assertEqual(len(server.listening), 1)
            self.assertEqual(server.eventsMatching(lambda e: "fingerprint" in e), [])
        # The account database, and no certificate.
        database = ["chat.sqlite3"]
        self.assertEqual(
            (sorted(os.listdir(byPort)), sorted(os.listdir(byListen))), (database, database)
        )

    async def test_badStateDirectory(self) -> None:
        """
        A state directory that cannot be made (under a regular file) stops
        twistd with one line naming it, a non-zero status and no traceback.
        """
        blocker = self.temporaryDirectory() / "file"
        blocker.write_text("not a directory")
        result = await runTwistd(reactor, ["chat", "--data-dir", str(blocker / "state")])
        oneLineFailure(self, result, "state directory", str(blocker / "state"), "Not a directory")


class StopTests(ChatTestCase):
    """
    Stopping the server with clients connected.
    """

    async def test_clientsToldOnStop(self) -> None:
        """
        On SIGTERM every client, registered or not, over plaintext or TLS,
        gets an C{ERROR} line saying the server is shutting down and a
        clean close; the server exits with status 0 once they are closed.
        """
        server, ca, alice, bob = await self.aliceInClearBobOverTLS()
        (_, plainPort), (_, tlsPort) = server.addresses
        for client in (alice, bob):
            client.join("#room")
            await client.next("joined")
        newcomer = await self.connect(tcp(plainPort), "newcomer", register=False)
        # Answered: the server has accepted the unregistered connection.
        pong = newcomer.linesUntil(lambda line: " PONG " in line)
        newcomer.sendLine("PING :are you there")
        self.assertEqual(await pong, [f":{SERVER} PONG {SERVER} :are you there"])

        clients = (alice, bob, newcomer)
        ends = [client.whenLost() for client in clients]
        self.assertEqual(await server.stop(), CLEAN_STOP)
        reasons = await gatherResults(ends)
        for client, reason in zip(clients, reasons):
            self.assertIsInstance(reason, ConnectionDone, client.nickname)
            self.assertEqual(
                client.lines[-1], "ERROR :Closing Link: 127.0.0.1 (Server shutting down)"
            )
        self.assertTrue(
            server.eventsMatching(lambda e: "work in flight finished" in eventText(e))
        )


class MetricsTests(ChatTestCase):
    """
    C{--metrics-listen}: the chat counters match what the test did.
    """

    async def test_scrape(self) -> None:
        """
        Two users, one channel, three messages to it and one private: the
        scrape shows 2 users, 1 channel, 4 messages, 4 deliveries (each
        channel message reaches the one other member) plus the JOINs, and
        one line refused for a NUL.
        """
        args = [
            "chat", "--data-dir", str(self.temporaryDirectory()), "--server-name", SERVER,
            "--listen", "tcp:0:interface=127.0.0.1",
            "--metrics-listen", "tcp:0:interface=127.0.0.1",
        ]
        server = await self.startServer(args, 2)
        (host, port), metrics = server.addresses[0], server.addresses[-1]
        alice = await self.connect(tcp(port, host), "alice")
        bob = await self.connect(tcp(port, host), "bob")
        alice.join("#room")
        await alice.next("joined")
        bob.join("#room")
        await bob.next("joined")
        await alice.next("userJoined")
        for text in ("one", "two", "three"):
            alice.msg("#room", text)
            await bob.next("privmsg")
        bob.msg("alice", "private")
        await alice.next("privmsg")
        # IRCClient.sendLine would quote the NUL away: raw bytes instead.
        bob.transport.write(b"PRIVMSG alice :a\0b\r\n")
        answer = bob.linesUntil(lambda line: " PONG " in line)
        bob.sendLine("PING :sync")
        await answer
        scrape = await scrapeMetrics(reactor, *metrics)
        service = {"service": "chat"}
        self.assertEqual(scrape.value("netservices_chat_users", **service), 2)
        self.assertEqual(scrape.value("netservices_chat_channels", **service), 1)
        self.assertEqual(scrape.value("netservices_chat_messages_total", **service), 4)
        # JOINs: alice sees her own (1), then both see bob's (2).
        self.assertEqual(scrape.value("netservices_chat_deliveries_total", **service), 3 + 4)
        self.assertEqual(
            scrape.value("netservices_chat_input_refused_total", reason="nul"), 1
        )
        self.assertEqual(scrape.value("netservices_connections_accepted_total", **service), 2)
        self.assertEqual(scrape.value("netservices_connections_open", **service), 2)


class ReloadTests(ChatTestCase):
    """
    C{SIGHUP} reloads the message of the day without dropping anybody.
    """

    async def test_sighup(self) -> None:
        """
        After motd.txt is written and twistd gets SIGHUP, a connected user
        stays connected and the MOTD command shows the new text.
        """
        state = self.temporaryDirectory()
        server = await self.startServer(
            ["chat", "--data-dir", str(state), "--server-name", SERVER,
             "--listen", "tcp:0:interface=127.0.0.1"],
            1,
        )
        host, port = server.addresses[0]
        alice = await self.connect(tcp(port, host), "alice")
        (state / "motd.txt").write_text("Welcome back\n")
        server.sendSignal("HUP")
        await server.waitForEvent(lambda event: "reloaded the MOTD" in eventText(event))
        answer = alice.linesUntil(isNumeric("376"))
        alice.sendLine("MOTD")
        lines = await answer
        self.assertIn(f":{SERVER} 372 alice :- Welcome back", lines)


class ClearTextCredentialsTests(NamespaceTestCase):
    """
    Credentials in clear from an address that is not loopback are refused
    without being checked.
    """

    async def fetchInside(self, host: str, port: int, *lines: str) -> list[str]:
        """
        Send C{lines} from inside the namespace and read until the server
        closes the connection.

        @return: the lines received.
        """
        data = "".join(line + "\r\n" for line in lines).encode()
        with enterNamespace(self.namespace):
            answer = fetchStream(reactor, host, port, data, timeout=10)
        return (await answer).data.decode().split("\r\n")[:-1]

    async def test_refusedUnchecked(self) -> None:
        """
        From 10.77.0.1 (an address of the namespace that is not loopback)
        C{sasl} is not offered, C{AUTHENTICATE} gets 904 and C{PASS} 464
        and a close; from loopback the same password logs in.  The
        checker saw one attempt: the loopback one.
        """
        # An address outside 127.0.0.0/8 (on lo, which every namespace has):
        # connections to it come from it, so they are not from loopback.
        self.ip("-n", self.namespace, "addr", "add", "10.77.0.1/32", "dev", "lo")
        state = self.temporaryDirectory() / "state"
        password = self.temporaryDirectory() / "password"
        password.write_text("correct horse\n")
        added = await runCommand(
            reactor,
            ["chat-admin", "--data-dir", str(state), "user", "add", "alice",
             "--password-file", str(password)],
        )
        self.assertEqual(added, (b"added account alice\n", b"", 0))
        server = await self.startInside(
            state, "--server-name", SERVER,
            "--listen", "tcp:6667:interface=10.77.0.1",
            "--listen", "tcp:6668:interface=127.0.0.1",
        )
        outside = await self.fetchInside(
            "10.77.0.1", 6667, "CAP LS 302", "AUTHENTICATE PLAIN", "QUIT"
        )
        self.assertEqual(
            outside[:2],
            [f":{SERVER} CAP * LS :{offeredCapabilities()}",
             f":{SERVER} 904 * :SASL authentication failed"],
        )
        clear = await self.fetchInside(
            "10.77.0.1", 6667, "PASS :alice:correct horse", "NICK alice", "USER a 0 * :a"
        )
        self.assertEqual(
            clear,
            [f":{SERVER} 464 alice :Password incorrect",
             "ERROR :Closing Link: 10.77.0.1 (Credentials are only accepted over TLS)"],
        )
        local = await self.connectInside(tcp(6668, "127.0.0.1"), "z", register=False)
        answer = local.linesUntil(isNumeric("001"))
        for line in ("PASS :alice:correct horse", "NICK alice", "USER a 0 * :a"):
            local.sendLine(line)
        self.assertEqual(
            await answer,
            [f":{SERVER} 900 alice alice!*@127.0.0.1 alice :You are now logged in as alice",
             f":{SERVER} 001 alice :Welcome to the netservices IRC Network alice!~a@127.0.0.1"],
        )
        self.assertEqual(await server.stop(), CLEAN_STOP)
        [totals] = server.eventsMatching(lambda event: "hashed" in event)
        self.assertEqual((totals["attempts"], totals["succeeded"]), (1, 1))
        [refusals] = server.eventsMatching(
            lambda event: event.get("refusals", {}).get("credentials-in-clear") is not None
        )
        self.assertEqual(refusals["refusals"]["credentials-in-clear"], 2)


class GivenCheckerTests(ChatTestCase):
    """
    C{--auth}: passwords checked by a standard Twisted checker.
    """

    async def test_fileAndMemory(self) -> None:
        """
        With C{--auth file:USERS} and with C{--auth memory:...}, C{PASS}
        logs in with the password given there and a wrong one is refused.
        """
        users = self.temporaryDirectory() / "users"
        users.write_text("bob:secret-b\n")
        for auth, account, password in [
            (f"file:{users}", "bob", "secret-b"),
            ("memory:carol:secret-c", "carol", "secret-c"),
        ]:
            server = await self.startServer(
                ["chat", "--data-dir", str(self.temporaryDirectory()), "--server-name", SERVER,
                 "--listen", "tcp:0:interface=127.0.0.1", "--auth", auth],
                1,
            )
            [(host, port)] = server.addresses
            good = await self.connect(tcp(port, host), "x", register=False)
            answer = good.linesUntil(isNumeric("001"))
            for line in (f"PASS :{account}:{password}", "NICK x", "USER x 0 * :x"):
                good.sendLine(line)
            self.assertEqual(
                (await answer)[0],
                f":{SERVER} 900 x x!*@127.0.0.1 {account} :You are now logged in as {account}",
            )
            bad = await fetchStream(
                reactor, host, port, f"PASS :{account}:wrong\r\nNICK y\r\nUSER y 0 * :y\r\n".encode(),
                timeout=10,
            )
            self.assertEqual(
                bad.data.decode().split("\r\n")[0], f":{SERVER} 464 y :Password incorrect"
            )


class RegistrationTests(ChatTestCase):
    """
    C{--allow-registration}: accounts created in band, over TLS.
    """

    async def test_registerThenLogIn(self) -> None:
        """
        A TLS user registers an account (hashed and stored: C{chat-admin}
        lists it); another connection then logs in to it with PASS.
        """
        directory = self.temporaryDirectory()
        pem, ca = writeCertificate(directory)
        state = directory / "state"
        server = await self.startServer(
            ["chat", "--data-dir", str(state), "--server-name", SERVER, "--allow-registration",
             "--listen", f"ssl:0:privateKey={pem}:interface=127.0.0.1"],
            1,
        )
        [(_, port)] = server.addresses
        endpoint = tls(port, ca.read_bytes())
        dave = await self.connect(endpoint, "dave")
        answer = dave.linesUntil(lambda line: " 900 " in line)
        dave.sendLine("REGISTER * * :correct horse staple")
        self.assertEqual(
            await answer,
            [f":{SERVER} REGISTER SUCCESS dave :Account created",
             f":{SERVER} 900 dave dave!~dave@127.0.0.1 dave :You are now logged in as dave"],
        )
        listed = await runCommand(reactor, ["chat-admin", "--data-dir", str(state), "user", "list"])
        self.assertIn(b"\ndave ", listed[0])
        again = await self.connect(endpoint, "x", register=False)
        answer = again.linesUntil(isNumeric("001"))
        for line in ("PASS :dave:correct horse staple", "NICK x", "USER x 0 * :x"):
            again.sendLine(line)
        self.assertEqual((await answer)[0].split()[1], "900")


class ExternalTests(ChatTestCase):
    """
    SASL EXTERNAL with a TLS client certificate.
    """

    async def test_certificateLogsIn(self) -> None:
        """
        A client presenting the certificate whose fingerprint the account
        registered logs in with EXTERNAL; without one, EXTERNAL fails.
        """
        from cryptography.hazmat.primitives import hashes
        from twisted.internet.ssl import PrivateCertificate

        directory = self.temporaryDirectory()
        serverPEM, ca = writeCertificate(directory)
        (directory / "client").mkdir()
        clientPEM, clientCertificate = writeCertificate(directory / "client")
        fingerprint = x509.load_pem_x509_certificate(clientCertificate.read_bytes()).fingerprint(
            hashes.SHA256()
        ).hex(":")
        state, password = directory / "state", directory / "pw"
        password.write_text("correct horse\n")
        for argv in (["user", "add", "alice", "--password-file", str(password)],
                     ["user", "certfp", "alice", fingerprint]):
            done = await runCommand(reactor, ["chat-admin", "--data-dir", str(state), *argv])
            self.assertEqual(done[2], 0, done)
        server = await self.startServer(
            ["chat", "--data-dir", str(state), "--server-name", SERVER,
             "--listen", f"ssl:0:privateKey={serverPEM}:interface=127.0.0.1"],
            1,
        )
        [(_, port)] = server.addresses
        trust = Certificate.loadPEM(ca.read_bytes())
        withCertificate = wrapClientTLS(
            optionsForClientTLS(
                "localhost", trustRoot=trust,
                clientCertificate=PrivateCertificate.loadPEM(clientPEM.read_bytes()),
            ),
            tcp(port),
        )
        for endpoint, expected in [
            (withCertificate, f":{SERVER} 903 * :SASL authentication successful"),
            (tls(port, ca.read_bytes()), f":{SERVER} 904 * :SASL authentication failed"),
        ]:
            client = await self.connect(endpoint, "x", register=False)
            answer = client.linesUntil(lambda line: " 903 " in line or " 904 " in line)
            for line in ("CAP LS 302", "CAP REQ :sasl", "AUTHENTICATE EXTERNAL", "AUTHENTICATE +"):
                client.sendLine(line)
            self.assertEqual((await answer)[-1], expected)


class SettingsTests(ChatTestCase):
    """
    Settings kept in the store (C{chat-admin setting}) are applied on
    SIGHUP without dropping anybody.
    """

    async def test_settingsOnSighup(self) -> None:
        """
        The MOTD and network name set with C{chat-admin setting set} while
        the server runs reach new clients after SIGHUP; a connected client
        stays; C{setting list} shows them; a bad network name is refused
        with one line.
        """
        state = self.temporaryDirectory() / "state"
        password = self.temporaryDirectory() / "pw"
        password.write_text("correct horse\n")
        admin = ["chat-admin", "--data-dir", str(state)]
        await runCommand(reactor, [*admin, "user", "add", "root", "--password-file", str(password)])
        server = await self.startServer(
            ["chat", "--data-dir", str(state), "--server-name", SERVER,
             "--listen", "tcp:0:interface=127.0.0.1"],
            1,
        )
        [(host, port)] = server.addresses
        early = await self.connect(tcp(port, host), "early")
        for key, value in (("motd", "Line one\\nLine two"), ("network", "HomeNet")):
            done = await runCommand(reactor, [*admin, "setting", "set", key, value])
            self.assertEqual(done[2], 0, done)
        bad = await runCommand(reactor, [*admin, "setting", "set", "network", "Home Net"])
        oneLineFailure(self, bad, "cannot be a server name", code=1)
        listed = await runCommand(reactor, [*admin, "setting", "list"])
        self.assertEqual(
            listed[0].decode().splitlines(),
            ["SETTING  VALUE", "motd     Line one\\nLine two", "network  HomeNet"],
        )
        server.sendSignal("HUP")
        await server.waitForEvent(lambda event: "applied the settings" in eventText(event))
        late = await self.connect(tcp(port, host), "late", register=False)
        answer = late.linesUntil(isNumeric("376"))
        for line in ("NICK late", "USER late 0 * :late"):
            late.sendLine(line)
        lines = await answer
        self.assertEqual(
            lines[0], f":{SERVER} 001 late :Welcome to the HomeNet IRC Network late!~late@127.0.0.1"
        )
        self.assertEqual(
            lines[-3:],
            [f":{SERVER} 372 late :- Line one", f":{SERVER} 372 late :- Line two",
             f":{SERVER} 376 late :End of /MOTD command."],
        )
        answer = early.linesUntil(lambda line: " PONG " in line)
        early.sendLine("PING :still")
        self.assertEqual(await answer, [f":{SERVER} PONG {SERVER} :still"])
