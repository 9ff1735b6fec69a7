"""
Tests for the IRCv3 capabilities of the chat server
(L{netservices.chat.ircv3}, L{netservices.chat.extensions}), against the
examples of their specifications at ircv3.net, with exact lines.

The server always sends a last parameter in its C{:} form (C{JOIN :#a},
C{BATCH :-1}), which the specifications' examples often omit; the two
forms mean the same.
"""

from hypothesis import given, settings, strategies as st
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from netservices.chat.directory import MemoryDirectory, StoreDirectory
from netservices.chat.store import ChannelRecord, HistoryEntry

from netservices.chat.ircv3 import History, MessageIds, Relayed, formatTime, parseTime
from netservices.chat.service import ChatLimits
from netservices.chat.wire import (
    MAX_CLIENT_TAGS,
    TOO_LONG,
    EncodingError,
    LineFramer,
    Message,
    encode,
    encodeTags,
    escapeTagValue,
    parseLine,
    unescapeTagValue,
)
from netservices.testing import FakeChatServer

#: 2026-11-25T12:00:00.123Z
NOW = 1795608000.123
TIME = "time=2026-11-25T12:00:00.123Z"
ALICE = "alice!~alice@192.0.2.1"
BOB = "bob!~bob@192.0.2.1"
CAROL = "carol!~carol@192.0.2.1"


class TagWireTests(SynchronousTestCase):
    """
    Tags in L{netservices.chat.wire}: parsing, escaping, encoding and the
    size limits of message-tags.
    """

    def test_parseSpecificationExample(self) -> None:
        """
        The message-tags example: keys with and without values and a
        vendor prefix.
        """
        self.assertEqual(
            parseLine(b"@aaa=bbb;ccc;example.com/ddd=eee :nick!ident@host.com PRIVMSG me :Hello"),
            Message("PRIVMSG", ("me", "Hello"),
                    (("aaa", "bbb"), ("ccc", ""), ("example.com/ddd", "eee"))),
        )

    def test_escaping(self) -> None:
        """
        The specification's escaping example, both ways; a backslash
        before another character is dropped, a trailing one too.
        """
        self.assertEqual(unescapeTagValue("raw+:=,escaped\\:\\s\\\\"), "raw+:=,escaped; \\")
        self.assertEqual(escapeTagValue("raw+:=,escaped; \\"), "raw+:=,escaped\\:\\s\\\\")
        self.assertEqual(unescapeTagValue("a\\b\\"), "ab")
        self.assertEqual(unescapeTagValue("\\r\\n"), "\r\n")
        self.assertEqual(escapeTagValue("\r\n"), "\\r\\n")

    def test_invalidKeysAndDuplicates(self) -> None:
        """
        Tags with invalid keys are left out; the last value of a key
        sent twice wins.
        """
        message = parseLine(b"@+a=1;b@d=2;=3;+a=4;/x=5;b_c=6;-=7 TAGMSG #a")
        self.assertEqual(message.tags, (("+a", "4"), ("-", "7")))
        self.assertEqual(message.tag("+a"), "4")
        self.assertIsNone(message.tag("b"))

    def test_encode(self) -> None:
        """
        L{encode} with tags puts the escaped tag section first; an empty
        value is a key alone; invalid keys are refused.
        """
        self.assertEqual(
            encode("n!u@h", "PRIVMSG", "#a", "hi", tags=[("+x", "a b;c"), ("y", "")]),
            b"@+x=a\\sb\\:c;y :n!u@h PRIVMSG #a :hi\r\n",
        )
        self.assertRaises(EncodingError, encodeTags, [("bad key", "x")])
        self.assertRaises(EncodingError, encodeTags, [("a", "x" * 9000)])
        self.assertEqual(encodeTags([]), b"")

    def test_framerAllowsTags(self) -> None:
        """
        With C{maxTags}, a tag section of up to 4094 bytes may come before
        the 512 bytes of a line; one byte more in either is too long.
        """
        framer = LineFramer(512, MAX_CLIENT_TAGS)
        tags = b"@+a=" + b"x" * (MAX_CLIENT_TAGS - 3) + b" "
        body = b"PRIVMSG #a :" + b"y" * (510 - 12)
        self.assertEqual(framer.feed(tags + body + b"\r\n"), [tags + body])
        self.assertEqual(framer.feed(b"@+a=x" + tags[4:] + body + b"\r\n"), [TOO_LONG])
        self.assertEqual(framer.feed(tags + body + b"yy\r\nNEXT\r\n"), [TOO_LONG, b"NEXT"])
        # An unterminated tag section is dropped once past its limit.
        self.assertEqual(framer.feed(b"@" + b"z" * 5000), [TOO_LONG])
        self.assertLessEqual(framer.buffered, 512 + MAX_CLIENT_TAGS + 2)
        # Without maxTags nothing changes.
        self.assertEqual(LineFramer().feed(tags + b"X\r\n"), [TOO_LONG])

    @given(st.lists(st.tuples(
        st.from_regex(r"\+?([a-z0-9]([a-z0-9.-]*[a-z0-9])?/)?[A-Za-z0-9-]+", fullmatch=True),
        st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",))),
    ), max_size=5))
    @settings(database=None, derandomize=True, deadline=None, max_examples=200)
    def test_tagsRoundTrip(self, tags) -> None:
        """
        Any tags with valid keys and values without NUL survive
        L{encodeTags} and L{parseLine} (empty values as keys alone; the
        last value of a repeated key).
        """
        line = encode("s", "TAGMSG", "#a", tags=tags)
        self.assertEqual(line.count(b"\r\n"), 1)
        self.assertEqual(parseLine(line[:-2]).tags, tuple(dict(tags).items()))

    def test_time(self) -> None:
        """
        server-time stamps have milliseconds and a Z, and parse back.
        """
        self.assertEqual(formatTime(NOW), "2026-11-25T12:00:00.123Z")
        self.assertEqual(formatTime(1318430451.62), "2011-10-12T14:40:51.620Z")
        self.assertAlmostEqual(parseTime("2026-11-25T12:00:00.123Z"), NOW, places=3)
        self.assertIsNone(parseTime("2026-11-25T12:00:00Z"))
        self.assertIsNone(parseTime("2026-13-25T12:00:00.123Z"))


class IRCv3TestCase(SynchronousTestCase):
    """
    A fake chat server at L{NOW}, with message ids C{m1}, C{m2}...
    """

    limits = ChatLimits()

    def setUp(self) -> None:
        self.server = FakeChatServer(limits=self.limits)
        self.addCleanup(self.server.stop)
        self.server.clock.advance(NOW)
        self.server.service.msgids = MessageIds("m")

    def user(self, nick: str, capabilities: str = "", host: str = "192.0.2.1"):
        """
        @return: a client registered as C{nick} with C{capabilities}, its
            input read.
        """
        client = self.server.connect(host=host)
        lines = [f"NICK {nick}", f"USER {nick} 0 * :{nick.title()} Example"]
        if capabilities:
            lines = ["CAP LS 302", f"CAP REQ :{capabilities}", *lines, "CAP END"]
        client.send(*lines)
        client.received()
        return client

    def inChannel(self, *clients, channel: str = "#a") -> None:
        for client in clients:
            client.send(f"JOIN {channel}")
        for client in clients:
            client.received()


class MessageTagsTests(IRCv3TestCase):
    """
    message-tags, server-time, msgid and echo-message.
    """

    def test_relayedPerVariant(self) -> None:
        """
        Client tags go to members with message-tags (with a msgid), times
        to those with server-time, nothing to the others; members with
        the same capabilities get the same bytes object.
        """
        alice = self.user("alice", "message-tags server-time")
        bob = self.user("bob", "message-tags")
        bob2 = self.user("bob2", "message-tags")
        carol = self.user("carol")
        self.inChannel(alice, bob, bob2, carol)
        alice.send("@+draft/reply=abc;+x=a\\sb\\:c;y=server PRIVMSG #a :hello")
        tags = "msgid=m1;+draft/reply=abc;+x=a\\sb\\:c"
        self.assertEqual(alice.received(), [])
        self.assertEqual(bob.received(), [f"@{tags} :{ALICE} PRIVMSG #a :hello"])
        self.assertEqual(bob2.received(), [f"@{tags} :{ALICE} PRIVMSG #a :hello"])
        self.assertEqual(carol.received(), [f":{ALICE} PRIVMSG #a :hello"])
        carol.send("PRIVMSG #a :plain")
        self.assertEqual(alice.received(), [f"@{TIME};msgid=m2 :{CAROL} PRIVMSG #a :plain"])
        self.assertEqual(bob.received(), [f"@msgid=m2 :{CAROL} PRIVMSG #a :plain"])
        delivered = []
        bob.protocol.deliver = delivered.append
        bob2.protocol.deliver = delivered.append
        alice.send("PRIVMSG #a :same")
        self.assertIs(delivered[0], delivered[1])

    def test_clientTagsNeedMessageTags(self) -> None:
        """
        Tags from a client that did not enable message-tags are not
        relayed.
        """
        alice = self.user("alice")
        bob = self.user("bob", "message-tags")
        self.inChannel(alice, bob)
        alice.send("@+x=1 PRIVMSG #a :hi")
        self.assertEqual(bob.received(), [f"@msgid=m1 :{ALICE} PRIVMSG #a :hi"])

    def test_serverTimePrivate(self) -> None:
        """
        The server-time example: a private message stamped with the time
        it was relayed.
        """
        angel = self.user("alice")
        wiz = self.user("bob", "server-time")
        angel.send("PRIVMSG bob :Hello")
        self.assertEqual(wiz.received(), [f"@{TIME} :{ALICE} PRIVMSG bob :Hello"])

    def test_tagmsg(self) -> None:
        """
        The TAGMSG example: relayed with its client tags to members with
        message-tags only; to a nick as well.
        """
        alice = self.user("alice", "message-tags")
        bob = self.user("bob", "message-tags")
        carol = self.user("carol")
        self.inChannel(alice, bob, carol)
        alice.send("@+example-client-tag=example-value TAGMSG #a")
        self.assertEqual(
            bob.received(),
            [f"@msgid=m1;+example-client-tag=example-value :{ALICE} TAGMSG :#a"],
        )
        self.assertEqual(carol.received(), [])
        alice.send("@+typing=active TAGMSG bob", "@+typing=active TAGMSG carol")
        self.assertEqual(bob.received(), [f"@msgid=m2;+typing=active :{ALICE} TAGMSG :bob"])
        self.assertEqual(carol.received(), [])
        alice.send("TAGMSG", "TAGMSG nobody")
        self.assertEqual(
            alice.received(),
            [":irc.test 411 alice :No recipient given (TAGMSG)",
             ":irc.test 401 alice nobody :No such nick/channel"],
        )

    def test_tagLimit(self) -> None:
        """
        A tag section over 4094 bytes gets 417 and is dropped; one of
        4094 bytes is relayed.
        """
        alice = self.user("alice", "message-tags")
        bob = self.user("bob", "message-tags")
        self.inChannel(alice, bob)
        alice.send("@+a=" + "x" * (MAX_CLIENT_TAGS - 2) + " PRIVMSG #a :hi")
        self.assertEqual(alice.received(), [":irc.test 417 alice :Input line was too long"])
        alice.send("@+a=" + "x" * (MAX_CLIENT_TAGS - 3) + " PRIVMSG #a :hi")
        (line,) = bob.received()
        self.assertTrue(line.endswith(f" :{ALICE} PRIVMSG #a :hi"))
        self.assertIn(";+a=" + "x" * (MAX_CLIENT_TAGS - 3) + " ", line)

    def test_echoMessage(self) -> None:
        """
        With echo-message the sender gets its PRIVMSG, NOTICE and TAGMSG
        back, with the tags it asked for, to channels and nicks.
        """
        alice = self.user("alice", "echo-message message-tags server-time")
        bob = self.user("bob")
        self.inChannel(alice, bob)
        alice.send("@+x=y PRIVMSG #a :hi", "NOTICE bob :psst", "@+t=1 TAGMSG #a")
        self.assertEqual(
            alice.received(),
            [f"@{TIME};msgid=m1;+x=y :{ALICE} PRIVMSG #a :hi",
             f"@{TIME};msgid=m2 :{ALICE} NOTICE bob :psst",
             f"@{TIME};msgid=m3;+t=1 :{ALICE} TAGMSG :#a"],
        )
        self.assertEqual(
            bob.received(), [f":{ALICE} PRIVMSG #a :hi", f":{ALICE} NOTICE bob :psst"]
        )
        plain = self.user("carol", "echo-message")
        plain.send("PRIVMSG bob :x")
        self.assertEqual(plain.received(), [f":{CAROL} PRIVMSG bob :x"])

    def test_capableCount(self) -> None:
        """
        Each channel counts its members with tag capabilities, through
        joins, parts, quits and capability changes.
        """
        alice = self.user("alice", "server-time")
        bob = self.user("bob")
        self.inChannel(alice, bob)
        channel = self.server.service.findChannel("#a")
        self.assertEqual(channel.capable, 1)
        bob.send("CAP REQ :message-tags")
        self.assertEqual(channel.capable, 2)
        bob.send("CAP REQ :-message-tags")
        self.assertEqual(channel.capable, 1)
        alice.send("PART #a")
        self.assertEqual(channel.capable, 0)
        bob.received()
        bob.send("PRIVMSG #a :alone")
        self.assertEqual(bob.received(), [])


class NotifyTests(IRCv3TestCase):
    """
    away-notify, account-notify, account-tag, extended-join, multi-prefix,
    userhost-in-names, invite-notify and setname.
    """

    def test_awayNotify(self) -> None:
        """
        The away-notify examples: AWAY with a message, AWAY alone when
        back, and AWAY after the JOIN of a user who is away.
        """
        alice = self.user("alice", "away-notify")
        bob, carol = self.user("bob"), self.user("carol")
        self.inChannel(alice, bob, carol)
        bob.send("AWAY :I'm not here right now")
        self.assertEqual(alice.received(), [f":{BOB} AWAY :I'm not here right now"])
        self.assertEqual(carol.received(), [])
        bob.send("AWAY")
        self.assertEqual(alice.received(), [f":{BOB} AWAY"])
        bob.send("AWAY :gone", "PART #a", "JOIN #a")
        self.assertEqual(
            alice.received(),
            [f":{BOB} AWAY :gone", f":{BOB} PART :#a", f":{BOB} JOIN :#a", f":{BOB} AWAY :gone"],
        )

    def test_extendedJoinAndAccountTag(self) -> None:
        """
        The extended-join example forms: account and real name, C{*} when
        not logged in; account-tag marks messages from a logged-in user.
        """
        alice = self.user("alice", "extended-join account-tag")
        self.inChannel(alice)
        bob = self.user("bob")
        self.server.service.login(self.server.service.findUser("bob"), "bobby")
        carol = self.user("carol")
        self.inChannel(bob, carol)
        self.assertEqual(
            alice.received(),
            [f":{BOB} JOIN #a bobby :Bob Example", f":{CAROL} JOIN #a * :Carol Example"],
        )
        bob.send("PRIVMSG #a :hi")
        carol.send("PRIVMSG #a :hi")
        self.assertEqual(
            alice.received(),
            [f"@account=bobby :{BOB} PRIVMSG #a :hi", f":{CAROL} PRIVMSG #a :hi"],
        )

    def test_accountNotify(self) -> None:
        """
        The account-notify example: ACCOUNT to those who share a channel
        and enabled it, and to the user itself.
        """
        alice = self.user("alice", "account-notify")
        bob, carol = self.user("bob", "account-notify"), self.user("carol")
        self.inChannel(alice, bob, carol)
        self.server.service.login(self.server.service.findUser("bob"), "bobby")
        self.assertEqual(alice.received(), [f":{BOB} ACCOUNT :bobby"])
        self.assertEqual(bob.received(), [f":{BOB} ACCOUNT :bobby"])
        self.assertEqual(carol.received(), [])

    def test_multiPrefixAndUserhostInNames(self) -> None:
        """
        multi-prefix shows every prefix in NAMES, WHO and WHOIS;
        userhost-in-names full masks in NAMES.
        """
        alice = self.user("alice", "multi-prefix")
        bob = self.user("bob", "userhost-in-names multi-prefix")
        carol = self.user("carol")
        self.inChannel(alice, bob, carol)
        alice.send("MODE #a +v alice")
        for client in (alice, bob, carol):
            client.received()
        alice.send("NAMES #a", "WHO #a", "WHOIS alice")
        lines = alice.received()
        self.assertEqual(lines[0], ":irc.test 353 alice = #a :@+alice bob carol")
        self.assertEqual(
            lines[2], ":irc.test 352 alice #a ~alice 192.0.2.1 irc.test alice H@+ :0 Alice Example"
        )
        self.assertIn(":irc.test 319 alice alice :@+#a", lines)
        bob.send("NAMES #a")
        self.assertEqual(
            bob.received()[0], f":irc.test 353 bob = #a :@+{ALICE} {BOB} {CAROL}"
        )
        carol.send("NAMES #a")
        self.assertEqual(carol.received()[0], ":irc.test 353 carol = #a :@alice bob carol")

    def test_inviteNotify(self) -> None:
        """
        The invite-notify example: members who enabled it see the INVITE
        the invitee gets; the inviter and others do not.
        """
        alice = self.user("alice", "invite-notify")
        bob = self.user("bob", "invite-notify")
        carol = self.user("carol")
        self.inChannel(alice, bob, carol)
        dave = self.user("dave")
        alice.send("INVITE dave #a")
        self.assertEqual(alice.received(), [":irc.test 341 alice dave :#a"])
        self.assertEqual(dave.received(), [f":{ALICE} INVITE dave :#a"])
        self.assertEqual(bob.received(), [f":{ALICE} INVITE dave :#a"])
        self.assertEqual(carol.received(), [])

    def test_setname(self) -> None:
        """
        The setname examples: SETNAME goes to the user and to those who
        share a channel, if they enabled setname; a real name over
        NAMELEN fails.
        """
        alice = self.user("alice", "setname")
        bob, carol = self.user("bob", "setname"), self.user("carol")
        self.inChannel(alice, bob, carol)
        alice.send("SETNAME :Real Name")
        self.assertEqual(alice.received(), [f":{ALICE} SETNAME :Real Name"])
        self.assertEqual(bob.received(), [f":{ALICE} SETNAME :Real Name"])
        self.assertEqual(carol.received(), [])
        self.assertEqual(self.server.service.findUser("alice").realname, "Real Name")
        alice.send("SETNAME :" + "x" * 101, "SETNAME")
        self.assertEqual(
            alice.received(),
            [":irc.test FAIL SETNAME INVALID_REALNAME :Realname is not valid"] * 2,
        )


class LabeledResponseTests(IRCv3TestCase):
    """
    batch and labeled-response.
    """

    def test_examples(self) -> None:
        """
        The labeled-response examples: one reply carries the label, several
        come in a labeled-response batch, none is an ACK; with
        echo-message the echo is the reply.
        """
        alice = self.user("alice", "batch labeled-response echo-message")
        bob = self.user("bob")
        alice.send("@label=pQraCjj82e PRIVMSG bob :Hello")
        self.assertEqual(
            alice.received(), [f"@label=pQraCjj82e :{ALICE} PRIVMSG bob :Hello"]
        )
        alice.send("@label=ADVClsl7aH PONG :irc.test")
        self.assertEqual(alice.received(), ["@label=ADVClsl7aH :irc.test ACK"])
        alice.send("@label=mGhe5V7RTV WHOIS bob")
        lines = alice.received()
        self.assertEqual(lines[0], "@label=mGhe5V7RTV :irc.test BATCH +1 :labeled-response")
        self.assertEqual(
            lines[1], "@batch=1 :irc.test 311 alice bob ~bob 192.0.2.1 * :Bob Example"
        )
        self.assertEqual(lines[-2], "@batch=1 :irc.test 318 alice bob :End of /WHOIS list")
        self.assertEqual(lines[-1], ":irc.test BATCH :-1")
        self.assertEqual(bob.received(), [f":{ALICE} PRIVMSG bob :Hello"])

    def test_withoutCapability(self) -> None:
        """
        A label from a client without labeled-response is ignored, and so
        is one over 64 bytes.
        """
        alice = self.user("alice", "batch")
        alice.send("@label=x PING a")
        self.assertEqual(alice.received(), [":irc.test PONG irc.test :a"])
        bob = self.user("bob", "batch labeled-response")
        bob.send("@label=" + "x" * 65 + " PING a")
        self.assertEqual(bob.received(), [":irc.test PONG irc.test :a"])

    def test_othersUnaffected(self) -> None:
        """
        During a labelled command, lines to other clients are not
        labelled, and the labelled client's own tags stay.
        """
        alice = self.user("alice", "labeled-response batch server-time")
        bob = self.user("bob", "server-time")
        self.inChannel(alice, bob)
        alice.send("@label=L1 TOPIC #a :news")
        self.assertEqual(
            alice.received(), [f"@label=L1;{TIME} :{ALICE} TOPIC #a :news"]
        )
        self.assertEqual(bob.received(), [f"@{TIME} :{ALICE} TOPIC #a :news"])


class HistoryTests(IRCv3TestCase):
    """
    Channel history: replay on join and CHATHISTORY.
    """

    limits = ChatLimits(history=5)

    def talk(self, count: int) -> tuple:
        """
        alice says C{count} numbered lines in #a, one second apart.
        """
        alice, bob = self.user("alice"), self.user("bob")
        self.inChannel(alice, bob)
        for n in range(1, count + 1):
            alice.send(f"PRIVMSG #a :line {n}")
            self.server.clock.advance(1)
        return alice, bob

    def test_bounded(self) -> None:
        """
        A channel keeps its last C{history} messages.
        """
        self.talk(8)
        history = self.server.service.findChannel("#a").history
        self.assertEqual(
            [entry.line for entry in history.entries],
            [f":{ALICE} PRIVMSG #a :line {n}\r\n".encode() for n in range(4, 9)],
        )

    def test_replayOnJoin(self) -> None:
        """
        A client with batch and server-time gets the recent messages in a
        chathistory batch, with their original time and, if it enabled
        message-tags, msgid; others get none.
        """
        self.talk(2)
        carol = self.user("carol", "batch server-time message-tags")
        carol.send("JOIN #a")
        lines = carol.received()
        self.assertEqual(
            lines[3:],
            [":irc.test BATCH +1 chathistory :#a",
             f"@batch=1;{TIME};msgid=m1 :{ALICE} PRIVMSG #a :line 1",
             f"@batch=1;time=2026-11-25T12:00:01.123Z;msgid=m2 :{ALICE} PRIVMSG #a :line 2",
             ":irc.test BATCH :-1"],
        )
        dave = self.user("dave", "server-time")
        dave.send("JOIN #a")
        self.assertEqual(len(dave.received()), 3)
        erin = self.user("erin", "batch server-time")
        erin.send("JOIN #a")
        self.assertEqual(
            erin.received()[4], f"@batch=1;{TIME} :{ALICE} PRIVMSG #a :line 1"
        )

    def test_chathistory(self) -> None:
        """
        CHATHISTORY LATEST, BEFORE, AFTER, AROUND and BETWEEN with msgid=
        and timestamp= references, oldest first in a batch.
        """
        self.talk(5)
        carol = self.user("carol", "batch server-time draft/chathistory message-tags")
        carol.send("JOIN #a")
        self.assertEqual(len(carol.received()), 3)

        def ask(command: str) -> list[str]:
            carol.send(command)
            lines = carol.received()
            self.assertEqual(lines[0].split()[1:4][:2], ["BATCH", lines[0].split()[2]])
            self.assertEqual(lines[0].split()[3], "chathistory")
            return [line.rsplit(":", 1)[1] for line in lines[1:-1]]

        self.assertEqual(ask("CHATHISTORY LATEST #a * 2"), ["line 4", "line 5"])
        self.assertEqual(ask("CHATHISTORY LATEST #a msgid=m3 10"), ["line 4", "line 5"])
        self.assertEqual(ask("CHATHISTORY BEFORE #a msgid=m4 2"), ["line 2", "line 3"])
        self.assertEqual(ask("CHATHISTORY AFTER #a msgid=m4 10"), ["line 5"])
        self.assertEqual(
            ask("CHATHISTORY AFTER #a timestamp=2026-11-25T12:00:01.123Z 2"),
            ["line 3", "line 4"],
        )
        self.assertEqual(
            ask("CHATHISTORY BEFORE #a timestamp=2026-11-25T12:00:01.500Z 5"),
            ["line 1", "line 2"],
        )
        self.assertEqual(ask("CHATHISTORY AROUND #a msgid=m3 3"), ["line 2", "line 3", "line 4"])
        self.assertEqual(
            ask("CHATHISTORY BETWEEN #a msgid=m1 msgid=m5 2"), ["line 2", "line 3"]
        )
        self.assertEqual(
            ask("CHATHISTORY BETWEEN #a msgid=m5 msgid=m1 2"), ["line 3", "line 4"]
        )
        carol.send("CHATHISTORY LATEST #a * 1")
        self.assertEqual(
            carol.received(),
            [":irc.test BATCH +10 chathistory :#a",
             f"@batch=10;time=2026-11-25T12:00:04.123Z;msgid=m5 :{ALICE} PRIVMSG #a :line 5",
             ":irc.test BATCH :-10"],
        )

    def test_chathistoryErrors(self) -> None:
        """
        Non-members, bad references, unknown msgids and subcommands get
        FAIL; without the capability the command is unknown.
        """
        self.talk(1)
        carol = self.user("carol", "batch server-time draft/chathistory message-tags")
        carol.send(
            "CHATHISTORY LATEST #a * 5", "CHATHISTORY LATEST #nope * 5",
            "CHATHISTORY BEFORE #a bogus 5", "CHATHISTORY LATEST #a * many",
            "CHATHISTORY FOO #a", "CHATHISTORY BEFORE #a",
        )
        self.assertEqual(
            carol.received(),
            [":irc.test FAIL CHATHISTORY INVALID_TARGET LATEST #a :Messages could not be retrieved",
             ":irc.test FAIL CHATHISTORY INVALID_TARGET LATEST #nope :Messages could not be retrieved",
             ":irc.test FAIL CHATHISTORY INVALID_PARAMS BEFORE :Invalid parameters",
             ":irc.test FAIL CHATHISTORY INVALID_PARAMS LATEST :Invalid parameters",
             ":irc.test FAIL CHATHISTORY INVALID_PARAMS FOO :Unknown subcommand",
             ":irc.test FAIL CHATHISTORY NEED_MORE_PARAMS BEFORE :Missing parameters"],
        )
        carol.send("JOIN #a")
        carol.received()
        carol.send("CHATHISTORY BEFORE #a msgid=zzz 5")
        self.assertEqual(
            carol.received(),
            [":irc.test FAIL CHATHISTORY MESSAGE_ERROR BEFORE #a :Messages could not be retrieved"],
        )
        dave = self.user("dave")
        dave.send("CHATHISTORY LATEST #a * 5")
        self.assertEqual(dave.received(), [":irc.test 421 dave CHATHISTORY :Unknown command"])

    def test_queries(self) -> None:
        """
        L{History.query} directly: limits and empty histories.
        """
        history = History(3, [Relayed(b"x\r\n", float(n), f"id{n}") for n in range(5)])
        self.assertEqual([e.msgid for e in history.query("LATEST", [None], 10)], ["id2", "id3", "id4"])
        self.assertEqual(history.query("LATEST", [None], 0), [])
        self.assertIsNone(history.query("BEFORE", [("msgid", "id0")], 5))
        self.assertEqual(History(3).query("AROUND", [("timestamp", 1.0)], 5), [])


class PersistentHistoryTests(SynchronousTestCase):
    """
    The history of registered channels outlives the channel.
    """

    def test_restored(self) -> None:
        """
        A registered channel's messages are saved through the directory
        and come back when the channel forms again; others' are not.
        """
        directory = MemoryDirectory(channels=[ChannelRecord("#Reg", "alice")])
        server = FakeChatServer(limits=ChatLimits(history=2), directory=directory)
        self.addCleanup(server.stop)
        server.clock.advance(NOW)
        alice = server.user("alice")
        alice.send("JOIN #reg,#free", "PRIVMSG #reg :one", "PRIVMSG #reg :two",
                   "PRIVMSG #reg :three", "PRIVMSG #free :gone")
        alice.send("PART #reg,#free")
        self.assertIsNone(server.service.findChannel("#reg"))
        self.assertEqual(
            [entry.line for entry in directory.channelHistory("#REG")],
            [f":{ALICE} PRIVMSG #Reg :two\r\n".encode(), f":{ALICE} PRIVMSG #Reg :three\r\n".encode()],
        )
        two, three = (entry.msgid for entry in directory.channelHistory("#reg"))
        bob = server.connect()
        bob.send(
            "CAP REQ :batch server-time message-tags", "NICK bob", "USER bob 0 * :B", "CAP END"
        )
        bob.received()
        bob.send("JOIN #reg")
        self.assertEqual(
            bob.received()[-4:],
            [":irc.test BATCH +1 chathistory :#Reg",
             f"@batch=1;{TIME};msgid={two} :{ALICE} PRIVMSG #Reg :two",
             f"@batch=1;{TIME};msgid={three} :{ALICE} PRIVMSG #Reg :three",
             ":irc.test BATCH :-1"],
        )
        bob.send("JOIN #free")
        self.assertNotIn("BATCH", " ".join(bob.received()))

    def test_storeRead(self) -> None:
        """
        L{StoreDirectory} reads the history of each registered channel once,
        when it first sees it.
        """
        asked = []
        entry = HistoryEntry(1.0, "id1", b"x\r\n")

        class FakeStore:
            def listAccounts(self):
                return succeed([])

            def listChannels(self):
                return succeed([ChannelRecord("#Reg", "alice")])

            def listSettings(self):
                return succeed({})

            def getHistory(self, name):
                asked.append(name)
                return succeed([entry])

        directory = StoreDirectory(FakeStore(), Clock())
        self.successResultOf(directory.refresh())
        self.successResultOf(directory.refresh())
        self.assertEqual(asked, ["#Reg"])
        self.assertEqual(directory.channelHistory("#reg"), [entry])
        self.assertEqual(list(directory.channels), ["#reg"])
        # A cluster node takes the records from the log instead.
        read = []
        directory.channels = {}
        directory.channelsRead = read.append
        self.successResultOf(directory.refresh())
        self.assertEqual(read, [[ChannelRecord("#Reg", "alice")]])
        self.assertEqual(directory.channels, {})

    def test_storeUnreachable(self) -> None:
        """
        A store that cannot be read (a L{StoreError}: unreachable,
        refusing) is one warning line, not a traceback, and the directory
        keeps what it had.
        """
        from twisted.internet.defer import fail
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import globalLogPublisher

        from netservices.chat.store import StoreError

        class FakeStore:
            def listAccounts(self):
                return fail(StoreError("chat store in Redis at redis://h:1/0: refused"))

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        directory = StoreDirectory(FakeStore(), Clock())
        directory.startService()
        self.addCleanup(directory._refresher.stop)
        [warning] = [e for e in events if e["log_level"].name == "warn"]
        self.assertEqual(warning["error"], "chat store in Redis at redis://h:1/0: refused")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_storeWrites(self) -> None:
        """
        L{StoreDirectory} writes history in one batch per interval, at most
        C{keep} entries per channel, and on stop.
        """
        written = []

        class FakeStore:
            def appendHistory(self, entries, keep):
                written.append((entries, keep))
                return succeed(None)

        clock = Clock()
        directory = StoreDirectory(FakeStore(), clock, historyInterval=1.0)
        entries = [HistoryEntry(float(n), f"id{n}", b"x\r\n") for n in range(4)]
        for entry in entries:
            directory.saveHistory("#a", entry, 3)
        directory.saveHistory("#b", entries[0], 3)
        self.assertEqual(written, [])
        clock.advance(1)
        self.assertEqual(
            written,
            [([("#a", entries[1]), ("#a", entries[2]), ("#a", entries[3]), ("#b", entries[0])], 3)],
        )
        self.assertEqual(directory.channelHistory("#A"), entries[1:])
        directory.saveHistory("#a", entries[0], 3)
        self.successResultOf(directory.stopService())
        self.assertEqual(written[-1], ([("#a", entries[0])], 3))
        self.assertEqual(clock.getDelayedCalls(), [])


class MonitorWhoxTests(IRCv3TestCase):
    """
    MONITOR and WHOX.
    """

    def test_monitor(self) -> None:
        """
        MONITOR + answers with who is on and off; the list is told when
        they come, go and change nicks; L, S, - and C.
        """
        alice = self.user("alice")
        self.user("bob")
        alice.send("MONITOR + bob,carol,Bad*Nick")
        self.assertEqual(
            alice.received(),
            [f":irc.test 730 alice :{BOB}", ":irc.test 731 alice :carol"],
        )
        carol = self.user("carol")
        self.assertEqual(alice.received(), [f":irc.test 730 alice :{CAROL}"])
        carol.send("NICK carol2")
        self.assertEqual(alice.received(), [":irc.test 731 alice :carol"])
        carol.send("QUIT")
        self.assertEqual(alice.received(), [])
        alice.send("MONITOR L", "MONITOR S", "MONITOR - bob", "MONITOR L", "MONITOR C", "MONITOR L")
        self.assertEqual(
            alice.received(),
            [":irc.test 732 alice :bob,carol", ":irc.test 733 alice :End of MONITOR list",
             f":irc.test 730 alice :{BOB}", ":irc.test 731 alice :carol",
             ":irc.test 732 alice :carol", ":irc.test 733 alice :End of MONITOR list",
             ":irc.test 733 alice :End of MONITOR list"],
        )
        self.assertEqual(self.server.service.watchers, {})

    def test_monitorFull(self) -> None:
        """
        Beyond C{MONITOR=} nicks, 734 names those refused.
        """
        server = FakeChatServer(limits=ChatLimits(monitor=2))
        self.addCleanup(server.stop)
        alice = server.user("alice")
        alice.send("MONITOR + a,b,c,d")
        self.assertEqual(
            alice.received(),
            [":irc.test 731 alice :a,b", ":irc.test 734 alice 2 c,d :Monitor list is full."],
        )
        alice.send("QUIT")
        self.assertEqual(server.service.watchers, {})

    def test_whox(self) -> None:
        """
        WHO with C{%} fields answers 354 with the fields in their fixed
        order and the token; C{a} is the account or C{0}.
        """
        alice, bob = self.user("alice"), self.user("bob")
        self.inChannel(alice, bob)
        self.server.service.login(self.server.service.findUser("bob"), "bobby")
        alice.send("WHO #a %tcuihsnfdlaor,42", "WHO bob %nat,abcd", "WHO bob %rn")
        self.assertEqual(
            alice.received(),
            [":irc.test 354 alice 42 #a ~alice 192.0.2.1 192.0.2.1 irc.test alice H@ 0 0 0 n/a :Alice Example",
             ":irc.test 354 alice 42 #a ~bob 192.0.2.1 192.0.2.1 irc.test bob H 0 0 bobby n/a :Bob Example",
             ":irc.test 315 alice #a :End of WHO list",
             ":irc.test 354 alice 0 bob :bobby",
             ":irc.test 315 alice bob :End of WHO list",
             ":irc.test 354 alice bob :Bob Example",
             ":irc.test 315 alice bob :End of WHO list"],
        )

    def test_isupport(self) -> None:
        """
        The welcome advertises CHATHISTORY, MONITOR, MSGREFTYPES, NAMELEN
        and WHOX.
        """
        client = self.server.connect()
        lines = client.register("alice")
        isupport = " ".join(line for line in lines if " 005 " in line)
        for token in ("CHATHISTORY=100", "MONITOR=100", "MSGREFTYPES=msgid,timestamp",
                      "NAMELEN=100", "WHOX"):
            self.assertIn(" " + token + " ", isupport)
