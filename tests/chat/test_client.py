"""
Tests for L{netservices.chat.client}, C{netservices chat-client}: its
pieces in this process (addresses, fingerprints, what is printed, what
typed lines send, registration and SASL on a fake transport), and the
command as a child process driven through its standard input and output:
against C{twistd -n netservices chat} over plaintext and TLS, and against
a scripted SASL server on loopback in this process.
"""

from __future__ import annotations

import base64
import json
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from netservices._common.client import ClientError
from netservices.chat.client import (
    SASL_CHUNK,
    ChatConnection,
    ChatSession,
    describeEvent,
    jsonEvent,
    parseFingerprint,
    parseServer,
    printable,
    saslPlain,
    sourceOf,
    splitText,
)
from netservices.chat.wire import LineFramer, Message, encode, parseLine
from netservices.testing import (
    netservicesCommand,
    oneLineFailure,
    runCommand,
    startInteractive,
    writeCertificate,
)
from tests.chat.test_integration import ALICE, ChatTestCase, tcp

#: The time in front of every line printed for people.
TIME = re.compile(r"\d\d:\d\d:\d\d ")


def said(text: str):
    """
    @return: a predicate true of a printed line that is C{text} after its
        time.
    """
    return lambda line: TIME.match(line) is not None and line[9:] == text


def wireLines(transport: StringTransport) -> list[str]:
    """
    @return: the lines written to C{transport} since the last call.
    """
    data = transport.value()
    transport.clear()
    return data.decode("utf-8").splitlines()


class ParseServerTests(SynchronousTestCase):
    """
    L{parseServer} reads C{[ircs://|irc://]HOST[:PORT]}.
    """

    def test_defaults(self) -> None:
        """
        No scheme is TLS on port 6697; C{irc://} is plaintext on 6667;
        C{ircs://} is TLS; a port and a trailing C{/} may follow; IPv6
        addresses go in brackets.
        """
        self.assertEqual(parseServer("irc.example"), (True, "irc.example", 6697))
        self.assertEqual(parseServer("irc://irc.example"), (False, "irc.example", 6667))
        self.assertEqual(parseServer("IRCS://irc.example:7000/"), (True, "irc.example", 7000))
        self.assertEqual(parseServer("irc://[::1]:6668"), (False, "::1", 6668))

    def test_refused(self) -> None:
        """
        Other schemes, paths, user names and bad ports are refused with a
        message for the user.
        """
        for text, message in [
            ("http://irc.example", "unknown scheme http://"),
            ("irc://irc.example/#room", "expected only HOST[:PORT]"),
            ("ircs://me@irc.example", "expected only HOST[:PORT]"),
            ("irc.example:0", "bad port"),
            ("ircs://", "no host"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parseServer(text)
            self.assertIn(message, str(caught.exception))


class FingerprintTests(SynchronousTestCase):
    """
    L{parseFingerprint} takes the fingerprint as the server logs it, or
    without colons, in either case.
    """

    def test_forms(self) -> None:
        """
        C{AB:CD:...}, the same without colons and in lower case are the
        same 32 bytes.
        """
        digest = bytes(range(32))
        logged = digest.hex(":").upper()
        for text in (logged, logged.replace(":", ""), logged.lower().replace(":", "")):
            self.assertEqual(parseFingerprint(text), digest)

    def test_refused(self) -> None:
        """
        Too short, too long or not hex: refused.
        """
        for text in ("AB:CD", "00" * 33, "zz" * 32, ""):
            self.assertRaises(ValueError, parseFingerprint, text)


class PrintableTests(SynchronousTestCase):
    """
    L{printable} makes what the server sends safe for a terminal.
    """

    def test_controls(self) -> None:
        """
        C0 controls and DEL are shown in caret notation, so an escape
        sequence arrives as text; C1 controls, line separators and
        bidirectional overrides as C{\\u} escapes.
        """
        self.assertEqual(printable("\x1b[2J\x1b]0;owned\x07"), "^[[2J^[]0;owned^G")
        self.assertEqual(printable("a\tb\rc\x7f"), "a^Ib^Mc^?")
        self.assertEqual(printable("\x9b31m \u202eevil \u2028x"), "\\u009b31m \\u202eevil \\u2028x")

    def test_formatting(self) -> None:
        """
        mIRC formatting (bold, colours with their numbers, reset...) is
        dropped; other text, accents included, is kept.
        """
        self.assertEqual(printable("\x02bold\x02 \x0304,12red\x03 \x1fé\x0f"), "bold red é")


class SASLTests(SynchronousTestCase):
    """
    L{saslPlain} encodes C{PLAIN} credentials in C{AUTHENTICATE} chunks.
    """

    def test_short(self) -> None:
        """
        Credentials that fit in one chunk: C{account NUL account NUL
        password} in base64, one parameter.
        """
        [chunk] = saslPlain("alice", "s3cret")
        self.assertEqual(base64.b64decode(chunk), b"alice\0alice\0s3cret")

    def test_chunks(self) -> None:
        """
        Longer ones are cut into chunks of 400 bytes; when the last is
        full, C{+} follows.
        """
        chunks = saslPlain("alice", "x" * 700)
        self.assertEqual([len(c) for c in chunks], [SASL_CHUNK, SASL_CHUNK, len(chunks[2])])
        self.assertEqual(base64.b64decode("".join(chunks)), b"alice\0alice\0" + b"x" * 700)
        # 12 + 288 bytes make exactly 400 characters of base64.
        full = saslPlain("alice", "y" * 288)
        self.assertEqual([len(c) for c in full], [SASL_CHUNK, 1])
        self.assertEqual(full[1], "+")


class TextTests(SynchronousTestCase):
    """
    Sources, long lines and events as printed.
    """

    def test_sourceOf(self) -> None:
        """
        L{sourceOf} finds the source after tags, if there is one.
        """
        self.assertEqual(sourceOf(b":bob!~b@h PRIVMSG #r :hi"), "bob!~b@h")
        self.assertEqual(sourceOf(b"@time=x;msgid=1 :irc.test NOTICE * :hi"), "irc.test")
        self.assertIsNone(sourceOf(b"PING :x"))
        self.assertIsNone(sourceOf(b"@a=b PING :x"))

    def test_splitText(self) -> None:
        """
        L{splitText} cuts at a space in the second half of a piece, else at
        a character boundary, never inside a UTF-8 character.
        """
        self.assertEqual(splitText("aaaa bbbb cccc", 10), ["aaaa bbbb", "cccc"])
        self.assertEqual(splitText("é" * 5, 4), ["éé", "éé", "é"])
        self.assertEqual(splitText("", 10), [""])

    def test_describe(self) -> None:
        """
        Each kind of event is one line after its time: the sender, then the
        room or whether it was private.
        """
        def line(kind, source=None, target=None, text=None, **more):
            event = {"time": 0.0, "kind": kind, "source": source, "target": target, "text": text, **more}
            return describeEvent(event, "me", utc=True)

        self.assertEqual(line("message", "bob", "#room", "hi"), "00:00:00 <bob> #room: hi")
        self.assertEqual(line("message", "bob", "me", "psst"), "00:00:00 <bob> (private) psst")
        self.assertEqual(line("message", "me", "bob", "psst"), "00:00:00 <me> (to bob) psst")
        self.assertEqual(line("action", "bob", "#room", "waves"), "00:00:00 * bob #room: waves")
        self.assertEqual(line("notice", "irc.test", "me", "hello"), "00:00:00 -irc.test- hello")
        self.assertEqual(line("kick", "op", "#room", "out", nick="bob"), "00:00:00 <-- op kicked bob from #room (out)")
        self.assertEqual(line("topic", None, "#room", "news"), "00:00:00 --- topic of #room: news")
        self.assertEqual(line("error", None, "#x", "No such channel"), "00:00:00 !!! #x: No such channel")
        self.assertEqual(line("message", "b\x1bob", "#room", "\x1b[1m"), "00:00:00 <b^[ob> #room: ^[[1m")

    def test_json(self) -> None:
        """
        L{jsonEvent} gives the time in ISO 8601 UTC and the text as sent.
        """
        event = {"time": 1.5, "kind": "message", "source": "bob", "target": "#r", "text": "\x1b!"}
        self.assertEqual(
            json.loads(jsonEvent(event)),
            {"time": "1970-01-01T00:00:01.500Z", "kind": "message", "source": "bob", "target": "#r", "text": "\x1b!"},
        )
        self.assertNotIn("\x1b", jsonEvent(event))


class RegistrationTests(SynchronousTestCase):
    """
    L{ChatConnection} registers: C{CAP LS 302}, C{NICK}, C{USER}; with
    SASL, C{CAP REQ}, C{AUTHENTICATE PLAIN} and the credentials before
    C{CAP END}.
    """

    def connect(self, nick: str = "alice", sasl=None, nickTries: int = 0):
        """
        @return: a L{ChatConnection} on a L{StringTransport}
            (C{self.transport}) that has started registering; how
            registration ends goes to C{self.outcome}.
        """
        connection = ChatConnection(nick, "irc.test:6697", sasl=sasl, nickTries=nickTries)
        self.transport = StringTransport()
        connection.makeConnection(self.transport)
        self.outcome: list = []
        connection.register().addBoth(self.outcome.append)
        self.assertEqual(
            wireLines(self.transport),
            ["CAP LS :302", f"NICK :{nick}", f"USER {nick} 0 * :netservices chat-client"],
        )
        return connection

    def test_plain(self) -> None:
        """
        Without SASL, C{CAP END} answers C{CAP LS}; C{001} registers, with
        the nick the server gives; a C{PING} is answered at once.
        """
        connection = self.connect()
        connection.dataReceived(b":irc.test CAP * LS :multi-prefix\r\n:irc.test PING :x1\r\n")
        self.assertEqual(wireLines(self.transport), ["CAP :END", "PONG :x1"])
        connection.dataReceived(b":irc.test 001 alice :Welcome\r\n")
        self.assertEqual(self.outcome, ["alice"])

    def test_nickInUse(self) -> None:
        """
        With tries left, a nick in use at registration is tried again with
        C{_} (and said); without, registration fails.
        """
        connection = self.connect(nickTries=1)
        said = []
        connection.notify = said.append
        connection.dataReceived(b":irc.test 433 * alice :Nickname is already in use\r\n")
        self.assertEqual(wireLines(self.transport), ["NICK :alice_"])
        self.assertEqual(said, ["nick alice is in use, trying alice_"])
        connection.dataReceived(b":irc.test 433 * alice_ :Nickname is already in use\r\n")
        [failure] = self.outcome
        self.assertEqual(
            str(failure.value), "irc.test:6697: nick alice_ is in use (choose another --nick)"
        )
        self.assertTrue(self.transport.disconnecting)

    def test_sasl(self) -> None:
        """
        The exchange of IRCv3 SASL 3.1 with C{PLAIN}, a C{CAP LS} reply on
        two lines, credentials in two chunks; C{CAP END} once 903 says it
        succeeded.
        """
        password = "p" * 300
        connection = self.connect(sasl=("alice", password))
        connection.dataReceived(b":irc.test CAP * LS * :multi-prefix\r\n")
        self.assertEqual(wireLines(self.transport), [])
        connection.dataReceived(b":irc.test CAP * LS :sasl=PLAIN,EXTERNAL\r\n")
        self.assertEqual(wireLines(self.transport), ["CAP REQ :sasl"])
        connection.dataReceived(b":irc.test CAP * ACK :sasl\r\n")
        self.assertEqual(wireLines(self.transport), ["AUTHENTICATE :PLAIN"])
        connection.dataReceived(b"AUTHENTICATE +\r\n")
        sent = wireLines(self.transport)
        self.assertEqual([line.split(" :")[0] for line in sent], ["AUTHENTICATE"] * 2)
        payload = "".join(line.split(" :")[1] for line in sent)
        self.assertEqual(base64.b64decode(payload), f"alice\0alice\0{password}".encode())
        connection.dataReceived(
            b":irc.test 900 alice alice!a@h alice :You are now logged in as alice\r\n"
            b":irc.test 903 alice :SASL authentication successful\r\n"
        )
        self.assertEqual(wireLines(self.transport), ["CAP :END"])
        connection.dataReceived(b":irc.test 001 alice :Welcome\r\n")
        self.assertEqual(self.outcome, ["alice"])

    def assertFails(self, lines: bytes, message: str) -> None:
        """
        With SASL asked for, C{lines} from the server fail registration with
        C{message}.
        """
        connection = self.connect(sasl=("alice", "pw"))
        connection.dataReceived(lines)
        [failure] = self.outcome
        failure.trap(ClientError)
        self.assertEqual(str(failure.value), f"irc.test:6697: {message}")

    def test_saslFailures(self) -> None:
        """
        No C{sasl} capability, no C{PLAIN} among its mechanisms, a refused
        C{CAP REQ}, 904, and a welcome without authentication all fail.
        """
        self.assertFails(b"CAP * LS :multi-prefix\r\n", "the server does not offer SASL (no sasl capability)")
        self.assertFails(b"CAP * LS :sasl=EXTERNAL\r\n", "the server offers SASL EXTERNAL, not PLAIN")
        self.assertFails(b"CAP * LS :sasl\r\nCAP * NAK :sasl\r\n", "the server refused the sasl capability")
        self.assertFails(
            b"908 alice PLAIN :are available SASL mechanisms\r\n904 alice :SASL authentication failed\r\n",
            "SASL authentication failed (it offers PLAIN)",
        )
        self.assertFails(
            b"001 alice :Welcome\r\n", "registered without SASL authentication; not going on"
        )


class SessionTests(SynchronousTestCase):
    """
    L{ChatSession}: typed lines become messages, what arrives becomes
    events; the current room follows C{/join} and C{/part}.
    """

    def setUp(self) -> None:
        self.connection = ChatConnection("alice", "irc.test:6667")
        self.transport = StringTransport()
        self.connection.makeConnection(self.transport)
        self.connection.registered.callback("alice")
        self.events: list[dict] = []
        self.session = ChatSession(self.connection, Clock(), self.events.append)

    def typed(self, *lines: str) -> list[str]:
        """
        @return: the lines sent for C{lines} typed.
        """
        for line in lines:
            self.session.typed(line + "\n")
        return wireLines(self.transport)

    def shown(self) -> list[str]:
        """
        @return: the events since the last call, as printed.
        """
        events, self.events[:] = list(self.events), []
        return [describeEvent(event, "alice")[9:] for event in events]

    def receive(self, *lines: str) -> None:
        """
        The server sends C{lines}.
        """
        self.connection.dataReceived("".join(line + "\r\n" for line in lines).encode())

    def test_commands(self) -> None:
        """
        Each command sends its message; text goes to the current room (the
        last joined), C{/me} as a CTCP ACTION; what was said is shown as
        sent.
        """
        self.assertEqual(
            self.typed(
                "/join #room", "hello", "/me waves", "/msg bob psst", "/nick carol",
                "/names", "/topic", "/topic #room new topic", "/away lunch", "/away",
                "//slash", "/part #room bye", "/quit gone",
            ),
            [
                "JOIN :#room", "PRIVMSG #room :hello", "PRIVMSG #room :\x01ACTION waves\x01",
                "PRIVMSG bob :psst", "NICK :carol", "NAMES :#room", "TOPIC :#room",
                "TOPIC #room :new topic", "AWAY :lunch", "AWAY", "PRIVMSG #room :/slash",
                "PART #room :bye", "QUIT :gone",
            ],
        )
        self.assertEqual(
            self.shown(),
            [
                "<alice> #room: hello", "* alice #room: waves", "<alice> (to bob) psst",
                "<alice> #room: /slash", "--- not in any room",
            ],
        )
        self.assertTrue(self.session.quitting)

    def test_localErrors(self) -> None:
        """
        Unknown commands, text or C{/me} with no current room, and bad
        arguments are refused here: nothing is sent.
        """
        self.assertEqual(self.typed("/frobnicate", "hi", "/me x", "/msg bob", "/join", "/join #a,#b", "/nick a b"), [])
        self.assertEqual(
            self.shown(),
            [
                "!!! unknown command /frobnicate (see /help)",
                "!!! no current room: /join #room first, or /msg NICK text",
                "!!! no current room: /join #room first",
                "!!! usage: /msg NICK|#room text",
                "!!! usage: /join #room [key]",
                "!!! usage: /join #room [key]",
                "!!! usage: /nick NEW",
            ],
        )

    def test_currentRoom(self) -> None:
        """
        C{/join} makes a room current at once, and C{/part} the one joined
        before it; a join that fails gives the current room back; joining a
        room again only makes it current.
        """
        self.typed("/join #a", "/join b", "/join #c")
        self.assertEqual((self.session.channels, self.session.current), (["#a", "#b", "#c"], "#c"))
        self.receive(":irc.test 475 alice #c :Cannot join channel (+k)")
        self.assertEqual(self.session.current, "#b")
        self.assertEqual(self.typed("/join #a", "in a"), ["PRIVMSG #a :in a"])
        self.typed("/part")
        self.assertEqual(self.session.current, "#b")
        self.receive(":alice!~a@h JOIN #a", ":alice!~a@h JOIN #b", ":alice!~a@h PART #a")
        self.assertEqual((self.session.channels, self.session.current), (["#b"], "#b"))
        self.receive(":op!~o@h KICK #b alice :out")
        self.assertEqual(self.session.current, None)
        self.assertEqual(
            self.shown(),
            [
                "!!! #c: Cannot join channel (+k)", "--- now talking in #b",
                "--- now talking in #a", "<alice> #a: in a", "--- now talking in #b",
                "--> alice joined #a", "--> alice joined #b", "--- now talking in #b",
                "<-- alice left #a", "<-- op kicked alice from #b (out)", "--- not in any room",
            ],
        )

    def test_received(self) -> None:
        """
        What arrives is shown with its sender; errors with their target;
        C{ERROR} after our C{QUIT} is no error.
        """
        self.typed("/join #room")
        self.receive(
            ":bob!~b@h PRIVMSG #room :hi all",
            ":bob!~b@h PRIVMSG alice :psst",
            ":bob!~b@h PRIVMSG #room :\x01ACTION nods\x01",
            ":bob!~b@h PRIVMSG alice :\x01VERSION\x01",
            ":bob!~b@h NOTICE #room :note",
            ":bob!~b@h TOPIC #room :news",
            ":bob!~b@h MODE #room +o alice",
            ":bob!~b@h NICK robert",
            ":robert!~b@h PART #room :later",
            ":irc.test 353 alice = #room :@alice robert",
            ":irc.test 366 alice #room :End of /NAMES list",
            ":irc.test 401 alice nobody :No such nick/channel",
            ":carol!~c@h QUIT :Quit: bye",
        )
        self.assertEqual(
            self.shown(),
            [
                "<bob> #room: hi all", "<bob> (private) psst", "* bob #room: nods",
                "--- bob sent CTCP VERSION", "-bob- #room: note",
                "--- bob set the topic of #room: news", "--- bob set mode +o alice on #room",
                "--- bob is now known as robert", "<-- robert left #room (later)",
                "--- #room: @alice robert", "!!! nobody: No such nick/channel",
                "<-- carol quit (Quit: bye)",
            ],
        )
        self.typed("/quit")
        self.receive("ERROR :Closing Link: h (Client Quit)")
        self.assertEqual(self.shown(), ["--- Closing Link: h (Client Quit)"])


class FakeSASLServer(Protocol):
    """
    The server's side of registration with SASL C{PLAIN}, scripted: offers
    the capabilities of its factory (on two C{CAP LS} lines), accepts the
    factory's password, welcomes after C{CAP END}, answers C{PING} and
    C{QUIT}.  Every message received is kept in C{factory.received}.
    """

    def connectionMade(self) -> None:
        self.framer = LineFramer()
        self.payload = ""

    def send(self, command: str, *params: str) -> None:
        self.transport.write(encode("fake.test", command, *params))

    def dataReceived(self, data: bytes) -> None:
        for line in self.framer.feed(data):
            message = parseLine(line)
            if isinstance(message, Message):
                self.factory.received.append(message)
                getattr(self, f"irc_{message.command}", lambda params: None)(message.params)

    def irc_CAP(self, params) -> None:
        if params[0] == "LS":
            self.send("CAP", "*", "LS", "*", "multi-prefix")
            self.send("CAP", "*", "LS", self.factory.capabilities)
        elif params[0] == "REQ":
            self.send("CAP", "*", "ACK", params[1])
        elif params[0] == "END":
            self.send("001", "alice", "Welcome to the fake network")

    def irc_AUTHENTICATE(self, params) -> None:
        if params[0] == "PLAIN":
            self.transport.write(b"AUTHENTICATE +\r\n")
            return
        if params[0] != "+":
            self.payload += params[0]
        if len(params[0]) < 400:
            if base64.b64decode(self.payload) == b"alice\0alice\0" + self.factory.password:
                self.send("900", "alice", "alice!alice@127.0.0.1", "alice", "You are now logged in as alice")
                self.send("903", "alice", "SASL authentication successful")
            else:
                self.send("904", "alice", "SASL authentication failed")

    def irc_PING(self, params) -> None:
        self.send("PONG", "fake.test", params[-1])

    def irc_QUIT(self, params) -> None:
        self.send("ERROR", "Closing Link: 127.0.0.1 (Client Quit)")
        self.transport.loseConnection()


class FakeSASLFactory(Factory):
    """
    Makes L{FakeSASLServer}s offering C{capabilities} and accepting
    C{password}.
    """

    protocol = FakeSASLServer

    def __init__(self, capabilities: str, password: bytes) -> None:
        self.capabilities = capabilities
        self.password = password
        self.received: list[Message] = []


class ClientCommands:
    """
    Running C{netservices chat-client} from a test.
    """

    def chatClient(self, *args: str):
        """
        Run C{netservices chat-client ARGS} with nothing on its standard
        input.
        """
        return runCommand(reactor, ["chat-client", *args])

    def startClient(self, *args: str):
        """
        Start C{netservices chat-client ARGS} with its standard input open;
        it is killed after the test if still running.
        """
        process = startInteractive(reactor, netservicesCommand(["chat-client", *args]))
        self.addCleanup(process.kill)
        return process


class CommandTests(ClientCommands, ChatTestCase):
    """
    C{netservices chat-client} as a child process.
    """

    async def test_usageAndRefused(self) -> None:
        """
        Bad usage is one line on stderr and status 2 (SASL without a
        password file when standard input is not a terminal included); a
        refused connection is one line and status 1.
        """
        cases = [
            (["irc.example"], "--nick NICK is required"),
            (["http://irc.example", "--nick", "a"], "unknown scheme http://"),
            (["irc.example", "--nick", "a b"], "is not a nick"),
            (["irc.example", "--nick", "a", "--send", "#room"], "--send needs the TEXT"),
            (["irc.example", "--nick", "a", "--fingerprint", "12:34"], "64 hex digits"),
            (["irc://irc.example", "--nick", "a", "--ca", "ca.pem"], "are for TLS"),
            (["irc.example", "--nick", "a", "--sasl", "a"], "give --password-file"),
            (["irc://irc.example", "--nick", "a", "--sasl", "a", "--password-file", "pw"], "in clear"),
        ]
        results = await gatherResults(
            [self.chatClient(*args) for args, _ in cases]
            + [self.chatClient("irc://127.0.0.1:1", "--nick", "a", "--send", "#room", "hi")]
        )
        for (args, mention), result in zip(cases, results):
            line = oneLineFailure(self, result, mention, code=2)
            self.assertTrue(line.startswith("netservices chat-client: "), line)
        oneLineFailure(self, results[-1], "connection refused by 127.0.0.1:1", code=1)

    async def test_interactive(self) -> None:
        """
        Through pipes, against the server over plaintext, with Twisted's
        IRC client as Bob: what Alice types reaches Bob with her name (in
        the room, in private, as an action); what Bob says is printed with
        his, escape sequences escaped; C{/nick}, C{/part}, C{/join} and
        C{/quit} do what they say; she exits 0.  Meanwhile a second
        client asking for Bob's nick becomes C{bob_} interactively, while
        C{--send} with it fails with one line.
        """
        server = await self.startChat("tcp:0:interface=127.0.0.1")
        [(host, port)] = server.addresses
        url = f"irc://{host}:{port}"
        bob = await self.connect(tcp(port, host), "bob")
        bob.join("#room")
        await bob.next("joined")
        taken = gatherResults(
            [
                self.chatClient(url, "--nick", "bob"),
                self.chatClient(url, "--nick", "bob", "--send", "#room", "hi"),
            ]
        )
        alice = self.startClient(url, "--nick", "alice")

        alice.write("/join #room\nhello bob\n")
        self.assertEqual(await bob.next("userJoined"), ("alice", "#room"))
        self.assertEqual(await bob.next("privmsg"), (ALICE, "#room", "hello bob"))
        action = bob.linesUntil(lambda line: "ACTION" in line)
        alice.write("/me waves\n")
        self.assertEqual((await action)[-1], f":{ALICE} PRIVMSG #room :\x01ACTION waves\x01")
        alice.write("/msg bob psst\n")
        self.assertEqual(await bob.next("privmsg"), (ALICE, "bob", "psst"))
        await alice.nextLine(said("<alice> #room: hello bob"))

        bob.msg("#room", "hi alice")
        await alice.nextLine(said("<bob> #room: hi alice"))
        bob.msg("alice", "just you")
        await alice.nextLine(said("<bob> (private) just you"))
        bob.describe("#room", "nods")
        await alice.nextLine(said("* bob #room: nods"))
        bob.msg("#room", "\x1b[2Jgotcha\x07")
        await alice.nextLine(said("<bob> #room: ^[[2Jgotcha^G"))

        alice.write("/nick carol\n")
        self.assertEqual(await bob.next("userRenamed"), ("alice", "carol"))
        alice.write("/part #room see you\n")
        self.assertEqual(await bob.next("userLeft"), ("carol", "#room"))
        await alice.nextLine(said("<-- carol left #room (see you)"))
        alice.write("/join #room\n/quit bye now\n")
        self.assertEqual(await bob.next("userJoined"), ("carol", "#room"))
        self.assertEqual(await bob.next("userQuit"), ("carol", "Quit: bye now"))
        self.assertEqual(await alice.finish(), 0, alice.stderr)
        self.assertEqual(alice.stderr, b"")
        self.assertNotIn(b"\x1b", alice.stdout)
        self.assertEqual([line for line in alice.lines if not TIME.match(line)], [])
        self.assertIn("--- alice is now known as carol", [line[9:] for line in alice.lines])

        (out, err, code), refused = await taken
        self.assertEqual(code, 0, err)
        self.assertIn("--- nick bob is in use, trying bob_", [line[9:] for line in out.decode().splitlines()])
        oneLineFailure(self, refused, "nick bob is in use", code=1)

    async def test_tls(self) -> None:
        """
        Over TLS: C{--listen --json} with the certificate pinned by its
        fingerprint (lower case, no colons) prints, as JSON, what a
        C{--send} verified with C{--ca} sent; SIGTERM makes it quit
        cleanly with status 0.  A wrong fingerprint, and a certificate the
        system does not trust, are refused with one line and status 1.
        """
        directory = self.temporaryDirectory()
        pem, ca = writeCertificate(directory)
        certificate = x509.load_pem_x509_certificate(ca.read_bytes())
        fingerprint = certificate.fingerprint(hashes.SHA256())
        server = await self.startChat(f"ssl:0:privateKey={pem}:interface=127.0.0.1")
        [(_, port)] = server.addresses

        listener = self.startClient(
            f"127.0.0.1:{port}", "--nick", "reader", "--listen", "#news", "--json",
            "--fingerprint", fingerprint.hex(),
        )
        listener.closeStdin()
        joined = json.loads(await listener.nextLine(lambda line: '"join"' in line))
        self.assertEqual((joined["source"], joined["target"]), ("reader", "#news"))

        wrong = bytes([fingerprint[0] ^ 1]) + fingerprint[1:]
        sent, mismatched, untrusted = await gatherResults(
            [
                self.chatClient(
                    f"ircs://localhost:{port}", "--nick", "writer", "--ca", str(ca),
                    "--send", "#news", "headline one\nheadline two",
                ),
                self.chatClient(
                    f"127.0.0.1:{port}", "--nick", "mallory", "--fingerprint", wrong.hex(":"),
                    "--send", "#news", "x",
                ),
                self.chatClient(f"localhost:{port}", "--nick", "mallory", "--send", "#news", "x"),
            ]
        )
        self.assertEqual(sent, (b"", b"", 0))
        line = oneLineFailure(self, mismatched, "not the one pinned", code=1)
        self.assertIn(fingerprint.hex(":").upper(), line)
        oneLineFailure(self, untrusted, "certificate verify failed", code=1)

        for text in ("headline one", "headline two"):
            event = json.loads(await listener.nextLine(lambda line: '"message"' in line))
            self.assertEqual(
                {key: event[key] for key in ("kind", "source", "target", "text")},
                {"kind": "message", "source": "writer", "target": "#news", "text": text},
            )
            self.assertRegex(event["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        listener.sendSignal("TERM")
        self.assertEqual(await listener.finish(), 0, listener.stderr)
        self.assertEqual(listener.stderr, b"")
        self.assertEqual(len(listener.lines), len([json.loads(line) for line in listener.lines]))

    async def test_sasl(self) -> None:
        """
        Against a scripted SASL server on loopback: the right password logs
        in (CAP LS, NICK, USER, CAP REQ, AUTHENTICATE, CAP END, in that
        order) and the message is sent, status 0; a wrong one, or a server
        without C{sasl}, is one line and status 1.
        """
        password = self.temporaryDirectory() / "password"
        password.write_text("s3cret\n")
        good = FakeSASLFactory("sasl=PLAIN", b"s3cret")
        bad = FakeSASLFactory("sasl=PLAIN", b"other")
        none = FakeSASLFactory("away-notify", b"s3cret")
        ports = []
        for factory in (good, bad, none):
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            ports.append(port.getHost().port)
        results = await gatherResults(
            [
                self.chatClient(
                    f"irc://127.0.0.1:{port}", "--nick", "alice", "--sasl", "alice",
                    "--password-file", str(password), "--send", "bob", "hi",
                )
                for port in ports
            ]
        )
        self.assertEqual(results[0], (b"", b"", 0))
        self.assertEqual(
            [m.command for m in good.received],
            ["CAP", "NICK", "USER", "CAP", "AUTHENTICATE", "AUTHENTICATE", "CAP", "PRIVMSG", "PING", "QUIT"],
        )
        self.assertEqual(good.received[3].params, ("REQ", "sasl"))
        self.assertEqual(good.received[6].params, ("END",))
        self.assertEqual(good.received[7].params, ("bob", "hi"))
        oneLineFailure(self, results[1], "SASL authentication failed", code=1)
        oneLineFailure(self, results[2], "does not offer SASL", code=1)


class RealServerSASLTests(ClientCommands, ChatTestCase):
    """
    C{--sasl} against the real chat server and an account made with
    C{netservices chat-admin}.
    """

    async def test_saslOverTLS(self) -> None:
        """
        Over TLS the right password logs in and the message is sent (status
        0); a wrong one is refused with one line and status 1; the listener
        sees the message from the logged-in user.
        """
        directory = self.temporaryDirectory()
        pem, ca = writeCertificate(directory)
        state, password, wrong = directory / "state", directory / "pw", directory / "wrong"
        password.write_text("correct horse\n")
        wrong.write_text("incorrect horse\n")
        added = await runCommand(
            reactor,
            ["chat-admin", "--data-dir", str(state), "user", "add", "alice",
             "--password-file", str(password)],
        )
        self.assertEqual(added[2], 0, added)
        server = await self.startServer(
            ["chat", "--data-dir", str(state), "--server-name", "irc.test",
             "--listen", f"ssl:0:privateKey={pem}:interface=127.0.0.1"],
            1,
        )
        [(_, port)] = server.addresses
        address = f"ircs://localhost:{port}"
        listener = self.startClient(
            address, "--nick", "reader", "--ca", str(ca), "--listen", "#room", "--json"
        )
        listener.closeStdin()
        await listener.nextLine(lambda line: '"join"' in line)
        sent = await self.chatClient(
            address, "--nick", "alice", "--ca", str(ca), "--sasl", "alice",
            "--password-file", str(password), "--send", "#room", "logged in",
        )
        self.assertEqual(sent, (b"", b"", 0))
        event = json.loads(await listener.nextLine(lambda line: '"message"' in line))
        self.assertEqual((event["source"], event["text"]), ("alice", "logged in"))
        refused = await self.chatClient(
            address, "--nick", "alice", "--ca", str(ca), "--sasl", "alice",
            "--password-file", str(wrong), "--send", "#room", "x",
        )
        oneLineFailure(self, refused, "SASL authentication failed", code=1)
        listener.sendSignal("TERM")
        self.assertEqual(await listener.finish(), 0, listener.stderr)
