"""
Property tests of the chat server with hypothesis (fixed seeds, no
example database): whatever comes in, nothing escapes the protocol and
every line sent is exactly one well-formed message; L{encode} round-trips
and refuses what would inject a line; and a state machine over five users
checks the channel authorization invariants against a reference model.
"""

from __future__ import annotations

import string
import time

import hypothesis
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from netservices.chat.protocol import ConnectionSettings
from netservices.chat.wire import (
    MAX_LINE,
    EncodingError,
    Message,
    encode,
    foldCase,
    maskPattern,
    parseLine,
)
from netservices.testing import FakeChatServer

#: Shared by every property: reproducible, quiet, no example database.
BASE = settings(
    database=None,
    deadline=None,
    derandomize=True,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class LogFailures:
    """
    Collects failures (and errors) logged anywhere while installed on the
    global log publisher.
    """

    def __init__(self, testCase: SynchronousTestCase | None = None) -> None:
        """
        @param testCase: stop observing when its test ends; without one,
            call L{stop}.
        """
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self)
        if testCase is not None:
            testCase.addCleanup(self.stop)

    def stop(self) -> None:
        globalLogPublisher.removeObserver(self)

    def __call__(self, event: dict) -> None:
        level = event.get("log_level")
        if event.get("log_failure") is not None or level in (
            LogLevel.error,
            LogLevel.critical,
        ):
            self.events.append(event)

    def check(self, testCase: SynchronousTestCase | None, context: object) -> None:
        """
        Fail C{testCase} (or raise L{AssertionError} without one) if
        anything was logged as a failure; forget it.
        """
        events, self.events = self.events, []
        if events:
            event = events[0]
            failure = event.get("log_failure")
            detail = failure.getTraceback() if failure is not None else event
            message = f"{len(events)} failure(s) logged for {context!r}:\n{detail}"
            if testCase is None:
                raise AssertionError(message)
            testCase.fail(message)


def checkOutput(testCase: SynchronousTestCase, data: bytes, context: object) -> int:
    """
    Check that C{data}, everything a client was sent, is whole lines of at
    most L{MAX_LINE} bytes with their CR LF, each one message.

    @return: the number of lines.
    """
    if not data:
        return 0
    testCase.assertTrue(data.endswith(b"\r\n"), (context, data[-80:]))
    lines = data[:-2].split(b"\r\n")
    for line in lines:
        for forbidden in (b"\r", b"\n", b"\0"):
            testCase.assertNotIn(forbidden, line, (context, line))
        testCase.assertLessEqual(len(line), MAX_LINE - 2, (context, line))
        testCase.assertTrue(line, (context, "empty line"))
        line.decode("utf-8")  # the server only sends UTF-8
        message = parseLine(line)
        testCase.assertIsInstance(message, Message, (context, line))
    return len(lines)


# Strategies for the input property.

#: Any character that can be encoded (no lone surrogates); explicit, as
#: hypothesis's default alphabet rewrites a cache file in .hypothesis.
UNICODE = st.characters(blacklist_categories=("Cs",))

COMMANDS = [
    "NICK", "USER", "JOIN", "PART", "PRIVMSG", "NOTICE", "MODE", "TOPIC",
    "KICK", "INVITE", "NAMES", "LIST", "WHO", "WHOIS", "AWAY", "ISON",
    "USERHOST", "PING", "PONG", "CAP", "PASS", "MOTD", "LUSERS", "QUIT",
]

#: Parameters that have broken IRC servers.
NASTY = [
    "", " ", ":", "::", ":x", ": x", "\r", "\n", "\0", "\r\n", "a\rb", "a\0b",
    ",", ",,", "*", "0", "-1", "1", "3", "999999", "1000000", "9" * 40,
    "\u00b2", "\u0663", "\u00e9", "\U0001f600", "\ufffd", "\x01ACTION x\x01",
    "a b", ":a b", "#", "#a", "#b", "#a,#b", "#a,:x", "#a b", "#\u00e9" * 30,
    "alice", "bob", "carol", "ALICE", "nobody", "alice,bob,:x", "x,:y",
    "+o", "-o", "+v", "+b", "-b", "+k", "-k", "+l", "-l", "+i", "+m", "+imnst",
    "-imnst", "+ov", "+bbbb", "+k-l+b", "+lk", "+ooooo", "+xyz", "+\u00e9",
    "*!*@*", "alice!*@*", ":x!*@*", "*!~alice@*", "LS", "REQ", "END", "302",
    "x" * 100, "x" * 300, "\u00e9" * 200, "x" * 509,
]

#: Parameters a well-behaved client would send.
USUAL = [
    "#a", "#b", "#new", "alice", "bob", "carol", "*", "0", "hello", "+o", "-o",
    "+v", "+b", "+k", "+l", "+m", "+i", "+t", "-t", "+n", "-n", "+s", "key",
    "2", "*!*@*", "LS", "END",
]

token = st.one_of(
    st.sampled_from(NASTY),
    st.sampled_from(NASTY).map(lambda s: ":" + s),
    st.sampled_from(USUAL),
    st.sampled_from(USUAL),
    st.text(UNICODE, max_size=12),
    st.text(alphabet="#:,!@*?+-ovbiklmnst aA\u00e9\r\n\0", max_size=10),
    st.integers(-5, 2_000_000).map(str),
)

command = st.one_of(
    st.sampled_from(COMMANDS),
    st.sampled_from(COMMANDS),
    st.sampled_from(COMMANDS),
    st.sampled_from(COMMANDS).map(str.lower),
    st.sampled_from(["001", "999", "12", "1234", "P1NG", "", "\u00e9", ":x", "NICK\0"]),
    st.text(alphabet="ABCXYZ", min_size=1, max_size=8),
)


@st.composite
def ircLine(draw) -> bytes:
    """
    A line that looks like an IRC command with random parameters, with a
    random line end (or none).
    """
    parts = []
    if draw(st.integers(0, 9)) == 0:
        parts.append("@" + draw(st.sampled_from(["a=b", "x;y=z", "", "@"])))
    if draw(st.integers(0, 5)) == 0:
        parts.append(":" + draw(st.sampled_from(["alice!a@h", "irc.test", "", "x y"])))
    parts.append(draw(command))
    params = draw(st.lists(token, max_size=draw(st.sampled_from([3, 3, 3, 20]))))
    if params and draw(st.booleans()):
        params[-1] = ":" + params[-1]
    parts.extend(params)
    separator = draw(st.sampled_from([" ", " ", " ", "  ", "\t"]))
    data = separator.join(parts).encode("utf-8")
    end = draw(st.sampled_from([b"\r\n"] * 6 + [b"\n", b"\n", b"\r", b"", b"\r\r\n"]))
    return data + end


invalidUTF8 = st.sampled_from(
    [
        b"\xff", b"\xfe", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80\x80", b"\xe9t\xe9",
    ]
)


@st.composite
def invalidLine(draw) -> bytes:
    """
    A command whose parameters carry invalid UTF-8, NUL or a bare CR.
    """
    head = draw(st.sampled_from([b"PRIVMSG #a :", b"JOIN ", b"NICK ", b"TOPIC #a :", b"PRIVMSG "]))
    body = b"".join(draw(st.lists(st.one_of(invalidUTF8, st.sampled_from([b"x", b"\0", b"\r", b" "])), min_size=1, max_size=8)))
    return head + body + draw(st.sampled_from([b"\r\n", b"\n", b""]))


@st.composite
def longLine(draw) -> bytes:
    """
    A line longer than 512 bytes (or just around the limit), terminated or
    not, possibly of multi-byte characters.
    """
    size = draw(st.sampled_from([508, 509, 510, 511, 512, 513, 600, 1000, 3000, 9000]))
    fill = draw(st.sampled_from([b"x", "\u00e9".encode(), "\U0001f600".encode(), b"\xff"]))
    head = draw(st.sampled_from([b"PRIVMSG #a :", b"PRIVMSG ", b"JOIN ", b"MODE #a +b ", b""]))
    body = head + fill * ((size - len(head)) // len(fill) + 1)
    body = body[: size - 2]
    return body + draw(st.sampled_from([b"\r\n", b"\n", b""]))


manyParams = st.integers(14, 40).map(
    lambda n: b"PRIVMSG " + b" ".join(b"#a" if i % 3 else b"x:y" for i in range(n)) + b" :end\r\n"
)

piece = st.one_of(
    ircLine(), ircLine(), ircLine(), ircLine(),
    invalidLine(), longLine(), manyParams,
    st.binary(max_size=40),
    invalidUTF8,
    st.sampled_from([b"\r\n", b"\n", b"\r", b"\0", b"\r\r", b" \r\n", b":\r\n", b"@\r\n"]),
)


@st.composite
def chunked(draw, data: bytes) -> list[bytes]:
    """
    C{data} cut at random places (anywhere: inside characters, between CR
    and LF).
    """
    if not data:
        return []
    cuts = sorted(set(draw(st.lists(st.integers(1, len(data)), max_size=4))))
    chunks, start = [], 0
    for cut in cuts + [len(data)]:
        if cut > start:
            chunks.append(data[start:cut])
            start = cut
    return chunks


@st.composite
def operation(draw, clients: int) -> tuple:
    """
    One thing that happens: a client sends bytes (in chunks), the clock
    moves, or a client stops or starts reading.
    """
    kind = draw(st.sampled_from(["send"] * 12 + ["advance", "pause", "resume"]))
    who = draw(st.integers(0, clients - 1))
    if kind == "send":
        return ("send", who, draw(chunked(draw(piece))))
    if kind == "advance":
        return ("advance", who, draw(st.sampled_from([0.1, 0.5, 1.0, 3.0, 31.0, 130.0])))
    return (kind, who, None)


@st.composite
def session(draw) -> tuple:
    """
    How many clients, which of them start registered, flood control on or
    off, and what happens.
    """
    clients = draw(st.integers(1, 3))
    registered = [draw(st.sampled_from([True, True, True, False])) for _ in range(clients)]
    flood = draw(st.booleans())
    operations = draw(st.lists(operation(clients), min_size=3, max_size=25))
    return clients, registered, flood, operations


# Strategies for the encoder.

middle = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters=" \r\n\0"),
    min_size=1,
    max_size=30,
).filter(lambda s: s[0] != ":")
longMiddle = st.one_of(middle, middle.map(lambda s: (s * 100)[:400]))
lastParam = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"), max_size=40),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"), min_size=100, max_size=600),
    st.sampled_from(["\u00e9", "\U0001f600", "\u20ac", "x"]).map(lambda c: c * 600),
)
commandName = st.one_of(
    st.text(string.ascii_letters, min_size=1, max_size=12),
    st.text(string.digits, min_size=3, max_size=3),
)
source = st.one_of(
    st.none(), middle, longMiddle, st.just("irc.test"), st.just("alice!~alice@192.0.2.1")
)


class InputPropertyTests(SynchronousTestCase):
    """
    No input makes an exception escape the protocol or get logged, and
    every line the server writes is one message.
    """

    def setUp(self) -> None:
        self.logged = LogFailures(self)

    @hypothesis.seed(20261125)
    @settings(BASE, max_examples=300)
    @given(session())
    def test_anyInput(self, scenario: tuple) -> None:
        """
        Random bytes, lines that look like commands with nasty parameters,
        invalid UTF-8, NUL, bare CR, over-long lines (terminated or not),
        many parameters, cut at random places, fed to one to three clients
        (registered or not, in channels or not, with flood control on or
        off, reading or not, as time passes): nothing escapes
        C{dataReceived}, nothing is logged as a failure, and every line
        written to every client parses back to exactly one message of at
        most 510 bytes without CR, LF or NUL.
        """
        clients, registered, flood, operations = scenario
        server = FakeChatServer(settings=ConnectionSettings() if flood else None)
        self.addCleanup(server.stop)
        peers = []
        for index in range(clients):
            if registered[index]:
                peer = server.user(["alice", "bob", "carol"][index])
                peer.send("JOIN #a,#b" if index == 0 else "JOIN #a")
            else:
                peer = server.connect()
            peers.append(peer)
        for kind, who, argument in operations:
            peer = peers[who]
            if kind == "send":
                for chunk in argument:
                    peer.protocol.dataReceived(chunk)
            elif kind == "advance":
                server.clock.advance(argument)
            elif kind == "pause":
                peer.protocol.pauseProducing()
            else:
                peer.protocol.resumeProducing()
        for _ in range(3):
            server.clock.advance(1.0)
        for peer in peers:
            peer.protocol.resumeProducing()
        self.logged.check(self, operations)
        for peer in peers:
            checkOutput(self, peer.transport.value(), operations)

    def test_foundInputs(self) -> None:
        """
        Inputs that the property found making an exception escape a command
        (a name given as a last parameter, with spaces or a leading C{:},
        or too long, echoed as a middle parameter of a numeric; a limit
        that is a digit but not ASCII) get their numeric, with the name cut
        or replaced by C{*}, and the client stays connected.
        """
        server = FakeChatServer()
        self.addCleanup(server.stop)
        alice = server.user("alice")
        alice.send("JOIN #a")
        alice.received()
        cases = [
            ("JOIN :a b", ["403 alice * :No such channel"]),
            ("NICK :a b", ["432 alice * :Erroneous nickname"]),
            ("NICK ::x", ["432 alice * :Erroneous nickname"]),
            ("PRIVMSG x,:y hi", ["401 alice x :No such nick/channel", "401 alice * :No such nick/channel"]),
            ("KICK #a :b c", ["441 alice * #a :They aren't on that channel"]),
            ("TOPIC :#a b", ["403 alice * :No such channel"]),
            ("PART :#a b", ["403 alice * :No such channel"]),
            ("MODE :a b", ["401 alice * :No such nick/channel"]),
            ("CAP :a b", ["410 alice * :Invalid CAP command"]),
            ("JOIN " + "x" * 500, [f"403 alice {'x' * 64} :No such channel"]),
            ("PRIVMSG " + "y" * 495 + " :hi", [f"401 alice {'y' * 64} :No such nick/channel"]),
            ("MODE #a +l \u00b2", ["696 alice #a l \u00b2 :Invalid limit: a number from 1 to 999999"]),
            ("MODE #a +l \u0663", ["696 alice #a l \u0663 :Invalid limit: a number from 1 to 999999"]),
        ]
        for line, expected in cases:
            alice.send(line)
            self.assertEqual(
                alice.received(), [f":irc.test {reply}" for reply in expected], line
            )
            self.logged.check(self, line)
        self.assertFalse(alice.closed)
        self.assertIsNone(server.service.channels["#a"].limit)

    def test_splitEverywhere(self) -> None:
        """
        A message with characters of two, three and four bytes, cut in two
        reads at every place, or sent one byte per read, is relayed whole.
        """
        server = FakeChatServer()
        self.addCleanup(server.stop)
        alice, bob = server.user("alice"), server.user("bob")
        alice.send("JOIN #a")
        bob.send("JOIN #a")
        bob.received()
        text = "\u00e9t\u00e9 \u20ac \U0001f600!"
        data = f"PRIVMSG #a :{text}\r\n".encode()
        expected = [f":alice!~alice@192.0.2.1 PRIVMSG #a :{text}"]
        for cut in range(1, len(data)):
            alice.protocol.dataReceived(data[:cut])
            alice.protocol.dataReceived(data[cut:])
            self.assertEqual(bob.received(), expected, cut)
        for byte in range(len(data)):
            alice.protocol.dataReceived(data[byte : byte + 1])
        self.assertEqual(bob.received(), expected)
        self.logged.check(self, text)

    @hypothesis.seed(20261126)
    @settings(BASE, max_examples=150)
    @given(
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"),
            min_size=1,
            max_size=60,
        ),
        st.lists(st.integers(1, 300), max_size=6),
    )
    def test_splitCharacters(self, text: str, cuts: list[int]) -> None:
        """
        A message cut anywhere, including inside a multi-byte character or
        between CR and LF, is relayed exactly as if it came in one read.
        """
        server = FakeChatServer()
        self.addCleanup(server.stop)
        alice, bob = server.user("alice"), server.user("bob")
        alice.send("JOIN #a")
        bob.send("JOIN #a")
        alice.received()
        bob.received()
        data = f"PRIVMSG #a :{text}\r\n".encode()
        start = 0
        for cut in sorted({c for c in cuts if c < len(data)}):
            alice.protocol.dataReceived(data[start:cut])
            start = cut
        alice.protocol.dataReceived(data[start:])
        self.assertEqual(
            bob.received(), [f":alice!~alice@192.0.2.1 PRIVMSG #a :{text}"]
        )
        self.assertEqual(alice.received(), [])
        self.logged.check(self, text)


class EncodePropertyTests(SynchronousTestCase):
    """
    L{encode} builds one line that parses back to what was given, or
    refuses.
    """

    @hypothesis.seed(20261127)
    @settings(BASE, max_examples=500)
    @given(source, commandName, st.lists(longMiddle, max_size=14), st.one_of(st.none(), lastParam))
    def test_roundTrip(
        self, source: str | None, command: str, middles: list[str], last: str | None
    ) -> None:
        """
        C{parseLine(encode(...)[:-2])} gives back the command (in upper
        case) and the parameters; the last one may be cut, at a character
        boundary and only as far as needed to keep the line to 512 bytes.
        Only middle parameters that alone fill the line are refused.
        """
        params = middles + ([last] if last is not None else [])
        # The last parameter, whatever it is, takes the ':' form.
        middles, last = params[:-1], (params[-1] if params else None)
        head = (f":{source} " if source else "") + " ".join([command] + middles)
        fixed = len(head.encode("utf-8"))
        try:
            line = encode(source, command, *params)
        except EncodingError:
            if last is None:
                self.assertGreater(fixed + 2, MAX_LINE)
            else:
                room = MAX_LINE - 4 - fixed
                self.assertTrue(room < 0 or (room == 0 and last), (room, last))
            return
        self.assertLessEqual(len(line), MAX_LINE)
        self.assertTrue(line.endswith(b"\r\n"))
        self.assertEqual(line.count(b"\n"), 1)
        self.assertEqual(line.count(b"\r"), 1)
        self.assertNotIn(b"\0", line)
        body = line[:-2]
        body.decode("utf-8")  # never cut inside a character
        message = parseLine(body)
        self.assertIsInstance(message, Message)
        self.assertEqual(message.command, command.upper())
        if last is None:
            self.assertEqual(message.params, tuple(middles))
            return
        self.assertEqual(message.params[:-1], tuple(middles))
        got = message.params[-1]
        self.assertTrue(last.startswith(got), (got, last))
        if got != last:
            # Cut only because the next character would not fit.
            following = last[len(got)].encode("utf-8")
            self.assertGreater(len(line) + len(following), MAX_LINE)

    @hypothesis.seed(20261128)
    @settings(BASE, max_examples=300)
    @given(
        st.lists(middle, max_size=5),
        lastParam,
        st.sampled_from(["middle-space", "middle-colon", "middle-empty", "middle-control", "last-control"]),
        st.sampled_from(["\r", "\n", "\0", "\r\n"]),
        st.integers(0, 5),
        st.text(UNICODE, max_size=5),
    )
    def test_refuses(
        self,
        middles: list[str],
        last: str,
        where: str,
        control: str,
        index: int,
        extra: str,
    ) -> None:
        """
        A CR, LF or NUL in any parameter, or a space, a leading C{:} or
        nothing in a middle one, makes L{encode} raise L{EncodingError},
        and a connection sending it writes nothing.
        """
        middles = list(middles)
        position = index % (len(middles) + 1)
        if where == "middle-space":
            bad = extra.replace("\0", "") + " " + extra.replace("\0", "")
        elif where == "middle-colon":
            bad = ":" + extra.replace(" ", "")
        elif where == "middle-empty":
            bad = ""
        elif where == "middle-control":
            bad = extra[:2] + control + extra[2:]
        else:
            cut = index % (len(last) + 1)
            last = last[:cut] + control + last[cut:]
        if where != "last-control":
            middles.insert(position, bad)
        with self.assertRaises(EncodingError):
            encode("irc.test", "PRIVMSG", *middles, last)
        with self.assertRaises(EncodingError):
            encode(None, "NOTICE", *middles, last)
        server = FakeChatServer()
        self.addCleanup(server.stop)
        alice = server.user("alice")
        before = alice.transport.value()
        with self.assertRaises(EncodingError):
            alice.protocol.send("PRIVMSG", *middles, last)
        if where == "last-control":
            with self.assertRaises(EncodingError):
                alice.protocol.sendNumeric("401", *middles, last)
        self.assertEqual(alice.transport.value(), before)

    def test_refusesInHead(self) -> None:
        """
        A source or command that is not one word is refused, and so is a
        source too long for any line.
        """
        for source, command in [
            ("a b", "PRIVMSG"), ("a\rb", "PRIVMSG"), ("irc.test", "PRIV MSG"),
            ("irc.test", ""), ("irc.test", ":x"), ("irc.test", "A\0"),
            ("x" * 600, "PING"),
        ]:
            with self.assertRaises(EncodingError, msg=(source, command)):
                encode(source, command, "x")


class MaskPropertyTests(SynchronousTestCase):
    """
    Ban and C{WHO} masks (L{maskPattern}) match like shell globs, in time
    proportional to the sizes, whatever the mask.
    """

    @hypothesis.seed(20261129)
    @settings(BASE, max_examples=400)
    @given(st.text("ab?*!@.", max_size=12), st.text("abAB!@.", max_size=14))
    def test_globs(self, mask: str, text: str) -> None:
        """
        L{maskPattern} agrees with a reference glob matcher on folded text.
        """
        folded = foldCase(text)
        self.assertEqual(
            bool(maskPattern(mask).match(folded)), globMatch(mask, folded), (mask, text)
        )

    def test_noBacktracking(self) -> None:
        """
        Masks with many C{*} (which took a backtracking regular expression
        seconds to minutes: C{*a*a*a*a*a*a*a*a*a*aX} took 12 s against a
        nick of thirty C{a}, fifteen C{*} and an C{X} 98 s) are matched at
        once, through C{WHO} and through a ban checked on C{JOIN} and
        C{PRIVMSG}.
        """
        masks = ["*" * 15 + "X", "*a" * 10 + "X", "*a" * 200 + "X", "*" * 400]
        victim = "a" * 30 + "!~aaaaaaaaa@192.0.2.1"
        started = time.perf_counter()
        for mask in masks:
            maskPattern(mask).match(victim)
        server = FakeChatServer()
        self.addCleanup(server.stop)
        op, nick = server.user("alice"), server.user("a" * 30)
        op.send("JOIN #a")
        for mask in masks[:3]:
            op.send(f"WHO {mask}", f"MODE #a +b {mask}")
        nick.send("JOIN #a", "PRIVMSG #a :hello")
        self.assertLess(time.perf_counter() - started, 2.0)
        self.assertEqual(
            [line.split()[1] for line in nick.received()], ["JOIN", "353", "366"]
        )


# The state machine.

NICKS = ["alice", "bob", "carol", "dave", "eve"]
HOSTS = {nick: f"192.0.2.{i + 1}" for i, nick in enumerate(NICKS)}
CHANNELS = ["#a", "#b", "#c"]
KEYS = ["k1", "k2", "Secret"]
TOPICS = ["hello", "a b c", ":colon", "\u00e9t\u00e9"]
#: Ban masks, short and full forms, matching one, several or nobody.
MASKS = [
    "alice!*@*", "BOB!*@*", "carol", "*!~dave@*", "*!*@192.0.2.5", "*@192.0.2.2",
    "?o?!*@*", "*a*!*@*", "*", "e*", "nobody!*@*", "*!*@192.0.2.1?",
]


def normalizeMask(mask: str) -> str:
    """
    The model's own reading of a ban mask: C{nick} is C{nick!*@*},
    C{user@host} is C{*!user@host}, C{nick!user} is C{nick!user@*}.
    """
    if "!" not in mask and "@" not in mask:
        return mask + "!*@*"
    if "!" not in mask:
        return "*!" + mask
    if "@" not in mask:
        return mask + "@*"
    return mask


def globMatch(pattern: str, text: str) -> bool:
    """
    The model's own wildcard match (C{*} any run, C{?} one character),
    case-insensitive (everything here is ASCII).
    """
    pattern, text = pattern.lower(), text.lower()
    # Classic two-pointer glob with backtracking on the last star.
    p = t = 0
    star, mark = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] in ("?", text[t]):
            p += 1
            t += 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark = p, t
            p += 1
        elif star >= 0:
            p = star + 1
            mark += 1
            t = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


class ModelChannel:
    """
    What the reference model expects of one channel.
    """

    def __init__(self) -> None:
        self.members: dict[str, str] = {}
        self.modes = {"n", "t"}
        self.key: str | None = None
        self.limit: int | None = None
        self.bans: list[str] = []
        self.invited: set[str] = set()
        self.topic = ""

    def banned(self, nick: str) -> bool:
        prefix = f"{nick}!~{nick}@{HOSTS[nick]}"
        return any(globMatch(mask, prefix) for mask in self.bans)

    def snapshot(self) -> tuple:
        return (
            dict(self.members), sorted(self.modes), self.key, self.limit,
            sorted(foldCase(m) for m in self.bans), sorted(self.invited), self.topic,
        )


def modeChange(signs: str) -> st.SearchStrategy:
    """
    @param signs: the signs to draw from (repeat one to favour it).
    @return: one mode change: a sign, a letter and a fitting argument
        (some invalid: an unknown nick, limit C{0} or C{x}), L{None} for
        the flag modes.
    """
    sign = st.sampled_from(signs)
    return st.one_of(
        st.tuples(sign, st.sampled_from("ov"), st.sampled_from(NICKS + ["zed"])),
        st.tuples(sign, st.just("b"), st.sampled_from(MASKS)),
        st.tuples(sign, st.just("k"), st.sampled_from(KEYS)),
        st.tuples(sign, st.just("l"), st.sampled_from(["1", "2", "3", "0", "x"])),
        st.tuples(sign, st.sampled_from("imnt"), st.none()),
    )


#: What anybody tries, and what operators try (mostly setting modes).
ANY_CHANGES = st.lists(modeChange("+-"), min_size=1, max_size=3)
OPERATOR_CHANGES = st.lists(modeChange("+++-"), min_size=1, max_size=3)


def pick(data, choices: list):
    """
    @return: one of C{choices} (not empty), drawn by index so that no new
        strategy is built for every step.
    """
    return choices[data.draw(st.integers(0, len(choices) - 1))]


class ChatMachine(RuleBasedStateMachine):
    """
    Five users and three channels driven through the protocol with JOIN,
    PART, MODE, KICK, INVITE, TOPIC and PRIVMSG lines; after every step the
    server's channels must be what a simple reference model says, and what
    clients received must agree.

    Each command has a rule with any user and channel (mostly refusals:
    no such channel, not on it, not an operator) and a rule drawing from
    the model (an operator of an existing channel, a non-member trying to
    join it), so that restrictive modes and refused joins happen often.
    """

    def __init__(self) -> None:
        super().__init__()
        self.logged = LogFailures()
        self.server = FakeChatServer()
        self.clients = {}
        for nick in NICKS:
            client = self.server.connect(host=HOSTS[nick])
            client.register(nick)
            self.clients[nick] = client
        self.model: dict[str, ModelChannel] = {}
        self.serial = 0
        self.operatorModeOn: str | None = None
        self.previousStatuses: dict[str, dict[str, str]] | None = None
        for nick, name in zip(NICKS, CHANNELS):
            self.doJoin(nick, name, None)

    def teardown(self) -> None:
        self.server.stop()
        self.logged.stop()

    # Helpers

    def send(self, nick: str, line: str) -> dict[str, list[str]]:
        """
        Send C{line} as C{nick}.

        @return: the lines every client received because of it.
        """
        for client in self.clients.values():
            client.received()
        self.clients[nick].send(line)
        return {other: client.received() for other, client in self.clients.items()}

    def statuses(self) -> dict[str, dict[str, str]]:
        """
        @return: the server's members and their status, by channel.
        """
        return {
            name: {user.nick: status for user, status in channel.members.items()}
            for name, channel in self.server.service.channels.items()
        }

    def isOp(self, nick: str, name: str) -> bool:
        channel = self.model.get(name)
        return channel is not None and "o" in channel.members.get(nick, "")

    def operators(self) -> list[tuple[str, str]]:
        """
        @return: (channel, nick) for every operator in the model.
        """
        return [
            (name, nick)
            for name, channel in sorted(self.model.items())
            for nick, status in channel.members.items()
            if "o" in status
        ]

    def outsiders(self) -> list[tuple[str, str]]:
        """
        @return: (channel, nick) for every user not in an existing channel.
        """
        return [
            (name, nick)
            for name, channel in sorted(self.model.items())
            for nick in NICKS
            if nick not in channel.members
        ]

    def removeMember(self, name: str, nick: str) -> None:
        channel = self.model[name]
        del channel.members[nick]
        if not channel.members:
            del self.model[name]

    def assertUnchanged(self, before: tuple, name: str, why: str) -> None:
        server = self.server.service.channels.get(name)
        assert server is not None, why
        assert snapshotOf(server) == before, (why, snapshotOf(server), before)

    def prefix(self, nick: str) -> str:
        return f"{nick}!~{nick}@{HOSTS[nick]}"

    # Commands, each with the model's expectation

    def doJoin(self, nick: str, name: str, key: str | None) -> None:
        channel = self.model.get(name)
        if key == "right":
            key = channel.key if channel is not None and channel.key else "k1"
        line = f"JOIN {name}" + (f" {key}" if key else "")
        wasMember = channel is not None and nick in channel.members
        refusal = None
        if channel is None:
            channel = self.model[name] = ModelChannel()
            channel.members[nick] = "o"
        elif wasMember:
            pass
        elif channel.banned(nick):
            refusal = "474"
        elif "i" in channel.modes and nick not in channel.invited:
            refusal = "473"
        elif channel.key is not None and key != channel.key:
            refusal = "475"
        elif channel.limit is not None and len(channel.members) >= channel.limit:
            refusal = "471"
        else:
            channel.members[nick] = ""
            channel.invited.discard(nick)
        got = self.send(nick, line)
        joinLine = f":{self.prefix(nick)} JOIN :{name}"
        if refusal is not None:
            # Refused: not a member, told why, nobody sees a JOIN.
            assert nick not in self.statuses().get(name, {}), (line, refusal)
            assert [reply.split()[1] for reply in got[nick]] == [refusal], (line, got[nick])
            for other in NICKS:
                assert joinLine not in got[other], (line, other)
        elif wasMember:
            assert got[nick] == [], (line, got[nick])
        else:
            for other in channel.members:
                assert joinLine in got[other], (line, other, got[other])

    def doMode(self, nick: str, name: str, changes: list[tuple]) -> None:
        channel = self.model.get(name)
        flags, arguments, sign = "", [], ""
        for wanted, mode, argument in changes:
            if wanted != sign:
                flags += wanted
                sign = wanted
            flags += mode
            if argument is not None and (mode != "l" or wanted == "+"):
                arguments.append(argument)
        line = f"MODE {name} {flags}" + "".join(f" {a}" for a in arguments)
        before = None if channel is None else snapshotOf(self.server.service.channels[name])
        op = self.isOp(nick, name)
        if op:
            self.operatorModeOn = name
            for wanted, mode, argument in changes:
                self.applyMode(channel, wanted, mode, argument)
        got = self.send(nick, line)
        if channel is None:
            assert name not in self.server.service.channels
        elif not op:
            # A non-operator changes nothing, and is told so.
            self.assertUnchanged(before, name, f"{nick}: {line}")
            numeric = "442" if nick not in channel.members else "482"
            assert [reply.split()[1] for reply in got[nick]] == [numeric], (line, got[nick])
            for other in NICKS:
                if other != nick:
                    assert got[other] == [], (line, other, got[other])
        elif snapshotOf(self.server.service.channels[name]) != before:
            modeLine = f":{self.prefix(nick)} MODE {name} "
            for other in channel.members:
                assert any(l.startswith(modeLine) for l in got[other]), (line, other)

    def applyMode(self, channel: ModelChannel, sign: str, mode: str, argument: str | None) -> None:
        adding = sign == "+"
        if mode in "imnt":
            (channel.modes.add if adding else channel.modes.discard)(mode)
        elif mode in "ov":
            status = channel.members.get(argument)
            if status is None:
                return
            channel.members[argument] = (
                "".join(sorted(set(status + mode))) if adding else status.replace(mode, "")
            )
        elif mode == "b":
            mask = normalizeMask(argument)
            existing = [m for m in channel.bans if foldCase(m) == foldCase(mask)]
            if adding and not existing:
                channel.bans.append(mask)
            elif not adding and existing:
                channel.bans.remove(existing[0])
        elif mode == "k":
            channel.key = argument if adding else None
        elif mode == "l":
            if not adding:
                channel.limit = None
            elif argument.isdigit() and int(argument) > 0:
                channel.limit = int(argument)

    def doKick(self, nick: str, name: str, target: str) -> None:
        channel = self.model.get(name)
        before = None if channel is None else snapshotOf(self.server.service.channels[name])
        removed = self.isOp(nick, name) and target in channel.members
        got = self.send(nick, f"KICK {name} {target} :out")
        kickLine = f":{self.prefix(nick)} KICK {name} {target} :out"
        if removed:
            for other in channel.members:
                assert kickLine in got[other], (nick, target, other)
            self.removeMember(name, target)
        else:
            if channel is not None:
                self.assertUnchanged(before, name, f"{nick} KICK {target}")
            assert not any(kickLine in lines for lines in got.values())

    def doInvite(self, nick: str, target: str, name: str) -> None:
        channel = self.model.get(name)
        allowed = (
            channel is not None
            and nick in channel.members
            and ("i" not in channel.modes or self.isOp(nick, name))
            and target not in channel.members
        )
        got = self.send(nick, f"INVITE {target} {name}")
        inviteLine = f":{self.prefix(nick)} INVITE {target} :{name}"
        if allowed:
            channel.invited.add(target)
            assert inviteLine in got[target], (nick, target, got[target])
        else:
            assert inviteLine not in got[target]

    def doTopic(self, nick: str, name: str, text: str) -> None:
        channel = self.model.get(name)
        self.serial += 1
        text = f"{text} {self.serial}"
        allowed = (
            channel is not None
            and nick in channel.members
            and ("t" not in channel.modes or self.isOp(nick, name))
        )
        server = self.server.service.channels.get(name)
        before = None if server is None else server.topic
        got = self.send(nick, f"TOPIC {name} :{text}")
        topicLine = f":{self.prefix(nick)} TOPIC {name} :{text}"
        if allowed:
            channel.topic = text
            for other in channel.members:
                assert topicLine in got[other], (nick, other)
        else:
            if server is not None:
                assert server.topic == before, (nick, name, before, server.topic)
            assert not any(topicLine in lines for lines in got.values())

    def doPrivmsg(self, nick: str, name: str) -> None:
        channel = self.model.get(name)
        self.serial += 1
        text = f"message {self.serial}"
        if channel is None:
            allowed = False
        else:
            status = channel.members.get(nick)
            if status is None:
                allowed = not ({"n", "m"} & channel.modes) and not channel.banned(nick)
            elif status:
                allowed = True
            else:
                allowed = "m" not in channel.modes and not channel.banned(nick)
        got = self.send(nick, f"PRIVMSG {name} :{text}")
        messageLine = f":{self.prefix(nick)} PRIVMSG {name} :{text}"
        for other in NICKS:
            delivered = messageLine in got[other]
            expected = allowed and other != nick and other in channel.members
            assert delivered == expected, (nick, name, other, allowed, got[other])
        if channel is not None and not allowed:
            assert [reply.split()[1] for reply in got[nick]] == ["404"], got[nick]

    def pickChannel(self, data) -> str:
        """
        @return: an existing channel three times in four, else any.
        """
        existing = sorted(self.model)
        if existing and data.draw(st.integers(0, 3)):
            return pick(data, existing)
        return pick(data, CHANNELS)

    # Rules: anybody, mostly in an existing channel

    @rule(
        data=st.data(),
        nick=st.sampled_from(NICKS),
        key=st.sampled_from([None, None, "right", "k1", "k2", "Secret", "wrong"]),
    )
    def join(self, data, nick: str, key: str | None) -> None:
        self.doJoin(nick, self.pickChannel(data), key)

    @rule(data=st.data(), nick=st.sampled_from(NICKS))
    def part(self, data, nick: str) -> None:
        name = self.pickChannel(data)
        channel = self.model.get(name)
        member = channel is not None and nick in channel.members
        got = self.send(nick, f"PART {name} :bye")
        partLine = f":{self.prefix(nick)} PART {name} :bye"
        if member:
            for other in channel.members:
                assert partLine in got[other], (nick, name, other)
            self.removeMember(name, nick)
        else:
            assert not any(partLine in lines for lines in got.values())

    @rule(
        data=st.data(),
        nick=st.sampled_from(NICKS),
        changes=ANY_CHANGES,
    )
    def mode(self, data, nick: str, changes: list[tuple]) -> None:
        self.doMode(nick, self.pickChannel(data), changes)

    @rule(data=st.data(), nick=st.sampled_from(NICKS), victim=st.sampled_from(NICKS + ["zed"]))
    def kick(self, data, nick: str, victim: str) -> None:
        self.doKick(nick, self.pickChannel(data), victim)

    @rule(data=st.data(), nick=st.sampled_from(NICKS), guest=st.sampled_from(NICKS))
    def invite(self, data, nick: str, guest: str) -> None:
        self.doInvite(nick, guest, self.pickChannel(data))

    @rule(data=st.data(), nick=st.sampled_from(NICKS), text=st.sampled_from(TOPICS))
    def topic(self, data, nick: str, text: str) -> None:
        self.doTopic(nick, self.pickChannel(data), text)

    @rule(data=st.data(), nick=st.sampled_from(NICKS))
    def privmsg(self, data, nick: str) -> None:
        self.doPrivmsg(nick, self.pickChannel(data))

    # Rules drawing from the model

    @precondition(lambda self: self.outsiders())
    @rule(data=st.data(), key=st.sampled_from([None, "right", "right", "wrong"]))
    def outsiderJoins(self, data, key: str | None) -> None:
        name, nick = pick(data, self.outsiders())
        self.doJoin(nick, name, key)

    @precondition(lambda self: self.operators())
    @rule(
        data=st.data(),
        changes=OPERATOR_CHANGES,
    )
    def operatorMode(self, data, changes: list[tuple]) -> None:
        name, nick = pick(data, self.operators())
        self.doMode(nick, name, changes)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def memberActs(self, data) -> None:
        name = pick(data, sorted(self.model))
        nick = pick(data, sorted(self.model[name].members))
        other = pick(data, NICKS)
        action = pick(data, ["kick", "invite", "topic", "privmsg", "mode"])
        if action == "kick":
            self.doKick(nick, name, other)
        elif action == "invite":
            self.doInvite(nick, other, name)
        elif action == "topic":
            self.doTopic(nick, name, pick(data, TOPICS))
        elif action == "mode":
            changes = data.draw(ANY_CHANGES)
            self.doMode(nick, name, changes)
        else:
            self.doPrivmsg(nick, name)

    # Invariants

    @invariant()
    def matchesModel(self) -> None:
        """
        Members and their status, modes, key, limit, bans, invitations and
        topic of every channel are what the model says.
        """
        channels = self.server.service.channels
        assert sorted(channels) == sorted(self.model), (sorted(channels), sorted(self.model))
        for name, expected in self.model.items():
            actual = snapshotOf(channels[name])
            assert actual == expected.snapshot(), (name, actual, expected.snapshot())

    @invariant()
    def statusesChangeOnlyByOperatorModes(self) -> None:
        """
        Members keep their status except through an operator's C{MODE} in
        that channel; newcomers are plain members, creators operators.
        """
        now = self.statuses()
        previous, self.previousStatuses = self.previousStatuses, now
        skip, self.operatorModeOn = self.operatorModeOn, None
        if previous is None:
            return
        for name, members in now.items():
            if name == skip:
                continue
            for nick, status in members.items():
                if nick in previous.get(name, {}):
                    assert status == previous[name][nick], (name, nick, previous[name][nick], status)
                elif name in previous:
                    assert status == "", (name, nick, status)
                else:
                    assert (status, len(members)) == ("o", 1), (name, nick, status)

    @invariant()
    def nothingLogged(self) -> None:
        """
        No command made the server log a failure.
        """
        self.logged.check(None, "the last step")

    @invariant()
    def everybodyConnected(self) -> None:
        """
        Nobody is disconnected by anything here.
        """
        for nick, client in self.clients.items():
            assert not client.closed, nick


def snapshotOf(channel) -> tuple:
    """
    @return: the server's channel in the form of L{ModelChannel.snapshot}.
    """
    return (
        {user.nick: status for user, status in channel.members.items()},
        sorted(channel.modes),
        channel.key,
        channel.limit,
        sorted(foldCase(m) for m in channel.bans),
        sorted(channel.invited),
        channel.topic,
    )


class StateMachineTests(SynchronousTestCase):
    """
    The authorization invariants hold over random sequences of channel
    commands from five users.
    """

    def setUp(self) -> None:
        self.logged = LogFailures(self)

    def test_authorization(self) -> None:
        """
        Run L{ChatMachine}: banned, uninvited and wrong-key users never
        join; non-operators never change modes, kick, or set a C{+t}
        topic; C{+m} and bans mute the unvoiced; statuses change only by an
        operator's C{MODE}; all as the reference model says.

        Sized to run in about 9 s: 250 runs of up to 50 steps (12,500
        steps; derandomized, so the same runs every time).  The research
        target of 500 x 50 in CI took 18 s here, over the 15 s budget;
        raise C{max_examples} to 500 where time allows.  At 250 x 50 every
        refusal occurs (474, 473, 475 and 471 on JOIN; 482 on MODE, KICK
        and TOPIC; 404 for the muted) and each of eight deliberately broken
        versions of L{authorize} tried while writing this was caught.
        """
        run_state_machine_as_test(
            ChatMachine,
            settings=settings(BASE, max_examples=250, stateful_step_count=50),
        )
        self.logged.check(self, "state machine")
