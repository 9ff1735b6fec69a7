"""
Tests for L{netservices.chat.protocol}: each command's exact replies, with
fake transports and a fake clock (L{netservices.testing.FakeChatServer}).
"""

from twisted.trial.unittest import SynchronousTestCase

from netservices.chat.protocol import ConnectionSettings
from netservices.chat.service import ChatLimits
from netservices.testing import FakeChatServer, offeredCapabilities

ALICE = "alice!~alice@192.0.2.1"
BOB = "bob!~bob@192.0.2.1"


class ChatTestCase(SynchronousTestCase):
    """
    A fake chat server per test.
    """

    settings = ConnectionSettings(floodRate=0)
    motd = None

    def setUp(self) -> None:
        self.server = FakeChatServer(self.settings, motd=self.motd)
        self.addCleanup(self.server.stop)

    def twoInChannel(self, channel: str = "#a"):
        """
        @return: alice (operator) and bob, both in C{channel}, with all
            their input read.
        """
        alice, bob = self.server.user("alice"), self.server.user("bob")
        alice.send(f"JOIN {channel}")
        bob.send(f"JOIN {channel}")
        alice.received(), bob.received()
        return alice, bob


class RegistrationTests(ChatTestCase):
    """
    CAP, NICK, USER and the welcome burst.
    """

    motd = ("Hello", "World")

    def test_welcomeOrder(self) -> None:
        """
        001-005, LUSERS, then the MOTD, in the order clients expect.
        """
        client = self.server.connect()
        client.send("NICK alice", "USER alice 0 * :Alice Example")
        lines = client.received()
        numerics = [line.split()[1] for line in lines]
        self.assertEqual(
            numerics,
            ["001", "002", "003", "004", "005", "005", "251", "252", "254", "255",
             "265", "266", "375", "372", "372", "376"],
        )
        self.assertEqual(
            lines[0], f":irc.test 001 alice :Welcome to the netservices IRC Network {ALICE}"
        )
        self.assertEqual(lines[13], ":irc.test 372 alice :- Hello")
        isupport = " ".join(lines[4:6])
        for token in ("CASEMAPPING=ascii", "CHANTYPES=#", "PREFIX=(ov)@+",
                      "CHANMODES=b,k,l,imnst", "NICKLEN=30", "CHANNELLEN=50",
                      "TOPICLEN=390", "NETWORK=netservices"):
            self.assertIn(" " + token + " ", isupport)

    def test_capabilityNegotiation(self) -> None:
        """
        C{CAP LS 302} holds registration until C{CAP END}; without
        accounts C{sasl} is not offered (C{cap-notify} is, and implied by
        302), so a request for it is refused.
        """
        client = self.server.connect()
        client.send("CAP LS 302", "NICK alice", "USER alice 0 * :A")
        self.assertEqual(client.received(), [f":irc.test CAP * LS :{offeredCapabilities()}"])
        client.send("CAP REQ :sasl", "CAP LIST")
        self.assertEqual(
            client.received(),
            [":irc.test CAP alice NAK :sasl", ":irc.test CAP alice LIST :cap-notify"],
        )
        client.send("CAP END")
        self.assertEqual(client.received()[0].split()[1], "001")
        client.send("CAP BOGUS")
        self.assertEqual(client.received(), [":irc.test 410 alice BOGUS :Invalid CAP command"])

    def test_userFirst(self) -> None:
        """
        USER before NICK registers once the nick arrives.
        """
        client = self.server.connect()
        client.send("USER alice 0 * :A")
        self.assertEqual(client.received(), [])
        client.send("NICK alice")
        self.assertEqual(client.received()[0].split()[1], "001")

    def test_notRegistered(self) -> None:
        """
        Commands before registration get 451; unknown ones 421.
        """
        client = self.server.connect()
        client.send("JOIN #a", "FOO")
        self.assertEqual(
            client.received(),
            [":irc.test 451 * :You have not registered",
             ":irc.test 421 * FOO :Unknown command"],
        )

    def test_nickErrors(self) -> None:
        """
        No nick, an erroneous nick and a nick in use (under the case
        mapping) get 431, 432 and 433.
        """
        self.server.user("alice")
        client = self.server.connect()
        client.send("NICK", "NICK 1bad", "NICK ALICE")
        self.assertEqual(
            client.received(),
            [":irc.test 431 * :No nickname given",
             ":irc.test 432 * 1bad :Erroneous nickname",
             ":irc.test 433 * ALICE :Nickname is already in use"],
        )

    def test_reregister(self) -> None:
        """
        USER and PASS after registration get 462.
        """
        client = self.server.user("alice")
        client.send("USER a 0 * :A", "PASS x")
        self.assertEqual(
            client.received(),
            [":irc.test 462 alice :You may not reregister"] * 2,
        )

    def test_needMoreParams(self) -> None:
        """
        A command without its parameters gets 461.
        """
        client = self.server.connect()
        client.send("USER a 0")
        self.assertEqual(client.received(), [":irc.test 461 * USER :Not enough parameters"])
        client.register("alice")
        for command in ("JOIN", "PART", "TOPIC", "KICK #a", "INVITE bob", "MODE", "ISON", "USERHOST"):
            client.send(command)
            self.assertEqual(
                client.received(),
                [f":irc.test 461 alice {command.split()[0]} :Not enough parameters"],
            )

    def test_noMotd(self) -> None:
        """
        Without a MOTD the burst ends with 422.
        """
        self.server = FakeChatServer()
        self.addCleanup(self.server.stop)
        client = self.server.connect()
        lines = client.register("alice")
        self.assertEqual(lines[-1], ":irc.test 422 alice :MOTD File is missing")

    def test_ipv6Host(self) -> None:
        """
        An IPv6 host starting with C{:} is written with a leading 0, so it
        can be a middle parameter.
        """
        client = self.server.connect(host="::1")
        client.register("alice")
        client.send("WHO alice")
        self.assertEqual(
            client.received()[0],
            ":irc.test 352 alice * ~alice 0::1 irc.test alice H :0 Alice Example",
        )


class NickTests(ChatTestCase):
    """
    Nick changes.
    """

    def test_change(self) -> None:
        """
        The user and everybody sharing a channel (once each) see the change.
        """
        alice, bob = self.twoInChannel()
        alice.send("JOIN #b")
        bob.send("JOIN #b")
        alice.received(), bob.received()
        alice.send("NICK Alicia")
        self.assertEqual(alice.received(), [f":{ALICE} NICK :Alicia"])
        self.assertEqual(bob.received(), [f":{ALICE} NICK :Alicia"])
        bob.send("PRIVMSG alicia :hi")
        self.assertEqual(alice.received(), [f":{BOB} PRIVMSG Alicia :hi"])

    def test_caseChange(self) -> None:
        """
        A user may change the case of their own nick.
        """
        alice = self.server.user("alice")
        alice.send("NICK ALICE")
        self.assertEqual(alice.received(), [f":{ALICE} NICK :ALICE"])

    def test_collision(self) -> None:
        """
        A nick held by someone else, in any case, is refused.
        """
        alice = self.server.user("alice")
        self.server.user("bob")
        alice.send("NICK BoB")
        self.assertEqual(alice.received(), [":irc.test 433 alice BoB :Nickname is already in use"])

    def test_freedOnQuit(self) -> None:
        """
        A nick is free as soon as its user quits.
        """
        alice = self.server.user("alice")
        alice.send("QUIT")
        self.assertEqual(alice.received(), ["ERROR :Closing Link: 192.0.2.1 (Client Quit)"])
        self.assertTrue(alice.closed)
        other = self.server.connect()
        self.assertEqual(other.register("alice")[0].split()[1], "001")


class ChannelTests(ChatTestCase):
    """
    JOIN, PART, NAMES, TOPIC, LIST and KICK.
    """

    def test_join(self) -> None:
        """
        The creator gets C{@}; a second member sees the topic and names;
        the members see the JOIN.
        """
        alice = self.server.user("alice")
        alice.send("JOIN #a")
        self.assertEqual(
            alice.received(),
            [f":{ALICE} JOIN :#a", ":irc.test 353 alice = #a :@alice",
             ":irc.test 366 alice #a :End of /NAMES list"],
        )
        alice.send("TOPIC #a :Welcome all")
        alice.received()
        self.server.clock.advance(5)
        bob = self.server.user("bob")
        bob.send("JOIN #A")
        self.assertEqual(
            bob.received(),
            [f":{BOB} JOIN :#a", ":irc.test 332 bob #a :Welcome all",
             f":irc.test 333 bob #a {ALICE} :0",
             ":irc.test 353 bob = #a :@alice bob",
             ":irc.test 366 bob #a :End of /NAMES list"],
        )
        self.assertEqual(alice.received(), [f":{BOB} JOIN :#a"])

    def test_joinSeveralAndZero(self) -> None:
        """
        Several channels with keys in one JOIN; C{JOIN 0} leaves them all.
        """
        alice, bob = self.twoInChannel("#k")
        alice.send("MODE #k +k sekrit")
        bob.send("PART #k")
        alice.received(), bob.received()
        bob.send("JOIN #k,#other sekrit")
        lines = bob.received()
        self.assertIn(f":{BOB} JOIN :#k", lines)
        self.assertIn(f":{BOB} JOIN :#other", lines)
        bob.send("JOIN 0")
        self.assertEqual(
            sorted(bob.received()), sorted([f":{BOB} PART :#k", f":{BOB} PART :#other"])
        )

    def test_joinErrors(self) -> None:
        """
        Bad names, bans, +i, +k and +l refuse a JOIN with their numerics.
        """
        alice = self.server.user("alice")
        bob = self.server.user("bob")
        alice.send("JOIN #a", "MODE #a +b bob", "JOIN #i", "MODE #i +i",
                   "JOIN #k", "MODE #k +k key", "JOIN #l", "MODE #l +l 1")
        bob.send("JOIN a", "JOIN #a", "JOIN #i", "JOIN #k wrong", "JOIN #l")
        self.assertEqual(
            bob.received(),
            [":irc.test 403 bob a :No such channel",
             ":irc.test 474 bob #a :Cannot join channel (+b)",
             ":irc.test 473 bob #i :Cannot join channel (+i)",
             ":irc.test 475 bob #k :Cannot join channel (+k)",
             ":irc.test 471 bob #l :Cannot join channel (+l)"],
        )
        self.assertEqual(set(self.server.service.findChannel("#a").members), {alice.protocol.user})

    def test_tooManyChannels(self) -> None:
        """
        A user can be in at most C{maxChannels} channels.
        """
        self.server = FakeChatServer(limits=ChatLimits(maxChannels=2))
        self.addCleanup(self.server.stop)
        alice = self.server.user("alice")
        alice.send("JOIN #a,#b,#c")
        self.assertEqual(
            alice.received()[-1], ":irc.test 405 alice #c :You have joined too many channels"
        )

    def test_part(self) -> None:
        """
        PART with a reason reaches every member; errors for unknown
        channels and non-members; an empty channel disappears.
        """
        alice, bob = self.twoInChannel()
        bob.send("PART #a :bye now")
        self.assertEqual(bob.received(), [f":{BOB} PART #a :bye now"])
        self.assertEqual(alice.received(), [f":{BOB} PART #a :bye now"])
        bob.send("PART #a", "PART #nope")
        self.assertEqual(
            bob.received(),
            [":irc.test 442 bob #a :You're not on that channel",
             ":irc.test 403 bob #nope :No such channel"],
        )
        alice.send("PART #a")
        self.assertIsNone(self.server.service.findChannel("#a"))

    def test_names(self) -> None:
        """
        NAMES lists members with prefixes; invisible users are hidden from
        non-members; secret channels look empty to them.
        """
        alice, bob = self.twoInChannel()
        bob.send("MODE bob +i")
        alice.send("MODE #a +v bob")
        carol = self.server.user("carol")
        carol.send("NAMES #a")
        self.assertEqual(
            carol.received(),
            [":irc.test 353 carol = #a :@alice", ":irc.test 366 carol #a :End of /NAMES list"],
        )
        alice.send("MODE #a +s")
        carol.send("NAMES #a", "NAMES")
        self.assertEqual(
            carol.received(),
            [":irc.test 366 carol #a :End of /NAMES list",
             ":irc.test 366 carol * :End of /NAMES list"],
        )
        alice.received()
        alice.send("NAMES #a")
        self.assertEqual(alice.received()[0], ":irc.test 353 alice @ #a :@alice +bob")

    def test_namesSplit(self) -> None:
        """
        Long member lists are split into lines that fit.
        """
        users = [self.server.user(f"user{i:03d}{'x' * 20}") for i in range(60)]
        for user in users:
            user.send("JOIN #big")
        users[0].received()
        users[0].send("NAMES #big")
        lines = users[0].received()
        self.assertGreater(len(lines), 2)
        names = " ".join(line.split(" :", 1)[1] for line in lines[:-1]).split()
        self.assertEqual(len(names), 60)
        self.assertTrue(all(len(line) <= 510 for line in lines))

    def test_topic(self) -> None:
        """
        Topics are queried, set by operators under +t, relayed, cleared.
        """
        alice, bob = self.twoInChannel()
        bob.send("TOPIC #a", "TOPIC #a :mine")
        self.assertEqual(
            bob.received(),
            [":irc.test 331 bob #a :No topic is set",
             ":irc.test 482 bob #a :You're not channel operator"],
        )
        alice.send("TOPIC #a :the topic")
        self.assertEqual(bob.received(), [f":{ALICE} TOPIC #a :the topic"])
        alice.send("MODE #a -t")
        bob.received()
        bob.send("TOPIC #a :")
        self.assertEqual(alice.received()[-1], f":{BOB} TOPIC #a :")
        carol = self.server.user("carol")
        carol.send("TOPIC #a :x", "TOPIC #nope")
        self.assertEqual(
            carol.received(),
            [":irc.test 442 carol #a :You're not on that channel",
             ":irc.test 403 carol #nope :No such channel"],
        )

    def test_list(self) -> None:
        """
        LIST shows visible channels with member counts and topics.
        """
        alice, bob = self.twoInChannel()
        alice.send("TOPIC #a :hello", "JOIN #secret", "MODE #secret +s")
        carol = self.server.user("carol")
        carol.send("LIST")
        self.assertEqual(
            carol.received(),
            [":irc.test 321 carol Channel :Users  Name",
             ":irc.test 322 carol #a 2 :hello",
             ":irc.test 323 carol :End of /LIST"],
        )

    def test_kick(self) -> None:
        """
        Operators kick members; everybody sees it; non-operators and
        absent targets are refused.
        """
        alice, bob = self.twoInChannel()
        bob.send("KICK #a alice")
        self.assertEqual(bob.received(), [":irc.test 482 bob #a :You're not channel operator"])
        alice.send("KICK #a carol", "KICK #a bob :behave")
        self.assertEqual(
            alice.received(),
            [":irc.test 441 alice carol #a :They aren't on that channel",
             f":{ALICE} KICK #a bob :behave"],
        )
        self.assertEqual(bob.received(), [f":{ALICE} KICK #a bob :behave"])
        self.assertNotIn("#a", bob.protocol.user.channels)


class ModeTests(ChatTestCase):
    """
    Channel and user modes.
    """

    def test_query(self) -> None:
        """
        MODE on a channel shows its modes; key and limit values only to
        members.
        """
        alice, bob = self.twoInChannel()
        alice.send("MODE #a +kl key 10")
        alice.received(), bob.received()
        bob.send("MODE #a")
        self.assertEqual(
            bob.received(),
            [":irc.test 324 bob #a +ntkl key :10", ":irc.test 329 bob #a :0"],
        )
        carol = self.server.user("carol")
        carol.send("MODE #a")
        self.assertEqual(carol.received()[0], ":irc.test 324 carol #a +ntkl :*")

    def test_changes(self) -> None:
        """
        An operator's changes are applied and announced in one line.
        """
        alice, bob = self.twoInChannel()
        alice.send("MODE #a +mov-t bob bob")
        expected = [f":{ALICE} MODE #a +mov-t bob :bob"]
        self.assertEqual(alice.received(), expected)
        self.assertEqual(bob.received(), expected)
        self.assertEqual(self.server.service.findChannel("#a").members[bob.protocol.user], "ov")

    def test_nonOperator(self) -> None:
        """
        A non-operator cannot change modes.
        """
        alice, bob = self.twoInChannel()
        bob.send("MODE #a +i")
        self.assertEqual(bob.received(), [":irc.test 482 bob #a :You're not channel operator"])
        self.assertNotIn("i", self.server.service.findChannel("#a").modes)

    def test_bans(self) -> None:
        """
        Bans are listed, added in full mask form, removed, and capped.
        """
        self.server = FakeChatServer(limits=ChatLimits(maxBans=2))
        self.addCleanup(self.server.stop)
        alice = self.server.user("alice")
        alice.send("JOIN #a")
        alice.received()
        alice.send("MODE #a +bbb x y z")
        self.assertEqual(
            alice.received(),
            [f":{ALICE} MODE #a +bb x!*@* :y!*@*",
             ":irc.test 478 alice #a b :Channel ban list is full"],
        )
        alice.send("MODE #a b")
        self.assertEqual(
            alice.received(),
            [":irc.test 367 alice #a :x!*@*", ":irc.test 367 alice #a :y!*@*",
             ":irc.test 368 alice #a :End of channel ban list"],
        )
        alice.send("MODE #a -b X!*@*")
        self.assertEqual(alice.received(), [f":{ALICE} MODE #a -b :x!*@*"])

    def test_errors(self) -> None:
        """
        Unknown modes, missing and bad parameters, absent targets.
        """
        alice, bob = self.twoInChannel()
        alice.send("MODE #a +zl", "MODE #a +l nope", "MODE #a +o carol", "MODE #nope +i",
                   "MODE #a +k a,b")
        self.assertEqual(
            alice.received(),
            [":irc.test 696 alice #a l * :You must specify a parameter for this mode",
             ":irc.test 472 alice z :is an unknown mode char to me",
             ":irc.test 696 alice #a l nope :Invalid limit: a number from 1 to 999999",
             ":irc.test 401 alice carol :No such nick/channel",
             ":irc.test 403 alice #nope :No such channel",
             ":irc.test 525 alice #a :Key is not well-formed"],
        )

    def test_fourParameterModes(self) -> None:
        """
        At most four parameter modes are applied per command (MODES=4).
        """
        alice = self.server.user("alice")
        alice.send("JOIN #a")
        alice.received()
        alice.send("MODE #a +bbbbb a b c d e")
        self.assertEqual(
            alice.received(), [f":{ALICE} MODE #a +bbbb a!*@* b!*@* c!*@* :d!*@*"]
        )

    def test_userModes(self) -> None:
        """
        User modes +i and +w, +o only through OPER, queries, unknown
        flags, other users.
        """
        alice = self.server.user("alice")
        self.server.user("bob")
        alice.send("MODE alice", "MODE alice +iwox", "MODE alice", "MODE bob +i", "MODE ghost")
        self.assertEqual(
            alice.received(),
            [":irc.test 221 alice :+", ":alice MODE alice :+iw",
             ":irc.test 501 alice :Unknown MODE flag", ":irc.test 221 alice :+iw",
             ":irc.test 502 alice :Can't change mode for other users",
             ":irc.test 401 alice ghost :No such nick/channel"],
        )


class MessageTests(ChatTestCase):
    """
    PRIVMSG and NOTICE.
    """

    def test_channel(self) -> None:
        """
        A channel message reaches the other members, not the sender.
        """
        alice, bob = self.twoInChannel()
        carol = self.server.user("carol")
        alice.send("PRIVMSG #a :hello, world")
        self.assertEqual(bob.received(), [f":{ALICE} PRIVMSG #a :hello, world"])
        self.assertEqual(alice.received(), [])
        self.assertEqual(carol.received(), [])

    def test_severalTargets(self) -> None:
        """
        Several targets each get one copy; too many are refused.
        """
        alice, bob = self.twoInChannel()
        self.server.user("carol")
        alice.send("PRIVMSG bob,#a,bob,carol,ghost,dave,eve :x")
        self.assertEqual(
            bob.received(),
            [f":{ALICE} PRIVMSG bob :x", f":{ALICE} PRIVMSG #a :x"],
        )
        self.assertEqual(
            alice.received(),
            [":irc.test 401 alice ghost :No such nick/channel",
             ":irc.test 407 alice dave :Too many recipients",
             ":irc.test 407 alice eve :Too many recipients"],
        )

    def test_errors(self) -> None:
        """
        No recipient, no text, no such nick, and outsiders on +n.
        """
        alice, bob = self.twoInChannel()
        carol = self.server.user("carol")
        carol.send("PRIVMSG", "PRIVMSG bob", "PRIVMSG bob :", "PRIVMSG ghost :x", "PRIVMSG #a :x")
        self.assertEqual(
            carol.received(),
            [":irc.test 411 carol :No recipient given (PRIVMSG)",
             ":irc.test 412 carol :No text to send",
             ":irc.test 412 carol :No text to send",
             ":irc.test 401 carol ghost :No such nick/channel",
             ":irc.test 404 carol #a :Cannot send to channel"],
        )
        self.assertEqual(bob.received(), [])

    def test_noticeNeverAnswered(self) -> None:
        """
        NOTICE errors are never sent back (two bots cannot loop).
        """
        alice, bob = self.twoInChannel()
        carol = self.server.user("carol")
        carol.send("NOTICE", "NOTICE bob", "NOTICE ghost :x", "NOTICE #a :x")
        self.assertEqual(carol.received(), [])
        carol.send("NOTICE bob :psst")
        self.assertEqual(bob.received(), [":carol!~carol@192.0.2.1 NOTICE bob :psst"])

    def test_moderated(self) -> None:
        """
        On +m only voiced members and operators speak; bans mute members.
        """
        alice, bob = self.twoInChannel()
        alice.send("MODE #a +m")
        bob.received()
        bob.send("PRIVMSG #a :quiet?")
        self.assertEqual(bob.received(), [":irc.test 404 bob #a :Cannot send to channel"])
        alice.send("MODE #a +v bob")
        bob.received()
        bob.send("PRIVMSG #a :now")
        self.assertEqual(alice.received()[-1], f":{BOB} PRIVMSG #a :now")
        alice.send("MODE #a -mv+b bob bob")
        bob.received()
        bob.send("PRIVMSG #a :banned")
        self.assertEqual(bob.received(), [":irc.test 404 bob #a :Cannot send to channel"])

    def test_away(self) -> None:
        """
        A private message to an away user answers 301; AWAY toggles.
        """
        alice, bob = self.twoInChannel()
        bob.send("AWAY :lunch")
        self.assertEqual(bob.received(), [":irc.test 306 bob :You have been marked as being away"])
        alice.send("PRIVMSG bob :hi", "NOTICE bob :hi")
        self.assertEqual(alice.received(), [":irc.test 301 alice bob :lunch"])
        bob.send("AWAY")
        self.assertEqual(bob.received()[-1], ":irc.test 305 bob :You are no longer marked as being away")

    def test_sourceBuiltByServer(self) -> None:
        """
        A source sent by the client is ignored: the server's is used.
        """
        alice, bob = self.twoInChannel()
        alice.send(":admin!root@server PRIVMSG #a :trust me")
        self.assertEqual(bob.received(), [f":{ALICE} PRIVMSG #a :trust me"])


class QueryTests(ChatTestCase):
    """
    WHO, WHOIS, ISON, USERHOST, INVITE, PING.
    """

    def test_who(self) -> None:
        """
        WHO on a channel lists members with H/G and prefixes.
        """
        alice, bob = self.twoInChannel()
        bob.send("AWAY :gone")
        alice.send("WHO #a")
        self.assertEqual(
            alice.received(),
            [":irc.test 352 alice #a ~alice 192.0.2.1 irc.test alice H@ :0 Alice Example",
             ":irc.test 352 alice #a ~bob 192.0.2.1 irc.test bob G :0 Bob Example",
             ":irc.test 315 alice #a :End of WHO list"],
        )
        alice.send("WHO b*")
        self.assertEqual(alice.received()[0].split()[7], "bob")

    def test_whois(self) -> None:
        """
        WHOIS shows user, channels, server, away, TLS and idle time.
        """
        alice, bob = self.twoInChannel()
        secure = self.server.connect(secure=True)
        secure.register("carol")
        secure.send("AWAY :brb")
        self.server.clock.advance(42)
        alice.send("WHOIS carol", "WHOIS bob", "WHOIS ghost")
        self.assertEqual(
            alice.received(),
            [":irc.test 311 alice carol ~carol 192.0.2.1 * :Carol Example",
             ":irc.test 312 alice carol irc.test :netservices chat",
             ":irc.test 301 alice carol :brb",
             ":irc.test 671 alice carol :is using a secure connection",
             ":irc.test 317 alice carol 42 0 :seconds idle, signon time",
             ":irc.test 318 alice carol :End of /WHOIS list",
             ":irc.test 311 alice bob ~bob 192.0.2.1 * :Bob Example",
             ":irc.test 319 alice bob :#a",
             ":irc.test 312 alice bob irc.test :netservices chat",
             ":irc.test 317 alice bob 42 0 :seconds idle, signon time",
             ":irc.test 318 alice bob :End of /WHOIS list",
             ":irc.test 401 alice ghost :No such nick/channel",
             ":irc.test 318 alice ghost :End of /WHOIS list"],
        )

    def test_isonUserhost(self) -> None:
        """
        ISON and USERHOST report who is here.
        """
        alice = self.server.user("alice")
        bob = self.server.user("bob")
        bob.send("AWAY :x")
        alice.send("ISON BOB ghost alice", "USERHOST bob alice ghost")
        self.assertEqual(
            alice.received(),
            [":irc.test 303 alice :bob alice",
             ":irc.test 302 alice :bob=-~bob@192.0.2.1 alice=+~alice@192.0.2.1"],
        )

    def test_invite(self) -> None:
        """
        An operator's INVITE lets a user into a +i channel once.
        """
        alice = self.server.user("alice")
        bob = self.server.user("bob")
        alice.send("JOIN #a", "MODE #a +i")
        alice.received()
        alice.send("INVITE bob #a", "INVITE ghost #a", "INVITE bob #nope")
        self.assertEqual(
            alice.received(),
            [":irc.test 341 alice bob :#a",
             ":irc.test 401 alice ghost :No such nick/channel",
             ":irc.test 403 alice #nope :No such channel"],
        )
        self.assertEqual(bob.received(), [f":{ALICE} INVITE bob :#a"])
        bob.send("JOIN #a", "PART #a", "JOIN #a")
        self.assertEqual(
            bob.received()[-1], ":irc.test 473 bob #a :Cannot join channel (+i)"
        )
        bob.send("INVITE alice #a")
        self.assertEqual(bob.received(), [":irc.test 442 bob #a :You're not on that channel"])

    def test_ping(self) -> None:
        """
        PING is answered with PONG and the same token.
        """
        alice = self.server.user("alice")
        alice.send("PING :abc def", "PING")
        self.assertEqual(
            alice.received(),
            [":irc.test PONG irc.test :abc def", ":irc.test 409 alice :No origin specified"],
        )


class QuitTests(ChatTestCase):
    """
    QUIT and lost connections.
    """

    def test_quit(self) -> None:
        """
        Peers see the QUIT once, with the reason; the user gets ERROR.
        """
        alice, bob = self.twoInChannel()
        alice.send("JOIN #b")
        bob.send("JOIN #b")
        alice.received(), bob.received()
        bob.send("QUIT :see you")
        self.assertEqual(alice.received(), [f":{BOB} QUIT :Quit: see you"])
        self.assertEqual(bob.received(), ["ERROR :Closing Link: 192.0.2.1 (Quit: see you)"])
        self.assertEqual(set(self.server.service.findChannel("#b").members), {alice.protocol.user})

    def test_connectionLost(self) -> None:
        """
        A dropped connection is a QUIT for the others.
        """
        alice, bob = self.twoInChannel()
        bob.protocol.connectionLost(None)
        self.assertEqual(alice.received(), [f":{BOB} QUIT :Connection closed"])
        self.assertIsNone(self.server.service.findUser("bob"))
        self.assertEqual(self.server.factory.connections, {alice.protocol})


class InputTests(ChatTestCase):
    """
    Hostile or broken input never costs the connection.
    """

    def test_tooLong(self) -> None:
        """
        A line over 512 bytes gets 417 and is dropped.
        """
        alice = self.server.user("alice")
        alice.send("PRIVMSG #a :" + "x" * 600)
        self.assertEqual(alice.received(), [":irc.test 417 alice :Input line was too long"])
        self.assertFalse(alice.closed)

    def test_refusedLines(self) -> None:
        """
        NUL and bare CR lines are dropped and counted.
        """
        alice, bob = self.twoInChannel()
        alice.send(b"PRIVMSG #a :a\0b", b"PRIVMSG #a :a\rKICK #a bob")
        self.assertEqual(bob.received(), [])
        self.assertEqual(self.server.factory.refusals.counts["nul"], 1)
        self.assertEqual(self.server.factory.refusals.counts["bare-cr"], 1)
        self.assertFalse(alice.closed)

    def test_invalidUTF8(self) -> None:
        """
        Invalid UTF-8 is relayed with replacement characters.
        """
        alice, bob = self.twoInChannel()
        alice.send(b"PRIVMSG #a :caf\xe9!")
        self.assertEqual(bob.received(), [f":{ALICE} PRIVMSG #a :caf\ufffd!"])

    def test_commandFailure(self) -> None:
        """
        A bug in a command handler costs that command, not the connection.
        """
        alice = self.server.user("alice")

        def broken(params):
            raise RuntimeError("bug")

        alice.protocol.irc_LIST = broken
        alice.send("LIST", "PING x")
        self.assertEqual(
            alice.received(),
            [":irc.test 400 alice LIST :Internal error", ":irc.test PONG irc.test :x"],
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class FloodTests(ChatTestCase):
    """
    Flood control by fake lag.
    """

    settings = ConnectionSettings(floodBurst=5, floodRate=2, recvq=8192)

    def twoInChannel(self, channel: str = "#a"):
        """
        As for L{ChatTestCase}, then wait until the flood budget that
        registering and joining took is back.
        """
        clients = super().twoInChannel(channel)
        self.server.clock.advance(10)
        return clients

    def test_burstThenRate(self) -> None:
        """
        Five lines at once, then two a second.
        """
        alice, bob = self.twoInChannel()
        alice.send(*[f"PRIVMSG #a :{i}" for i in range(12)])
        self.assertEqual(len(bob.received()), 5)
        self.server.clock.advance(1)
        self.assertEqual(len(bob.received()), 2)
        self.server.clock.advance(2.5)
        self.assertEqual([line.split(":")[-1] for line in bob.received()], ["7", "8", "9", "10", "11"][:5])

    def test_excessFlood(self) -> None:
        """
        1,000 lines in one burst: five relayed, then Excess Flood and a
        QUIT for the others.
        """
        alice, bob = self.twoInChannel()
        alice.send(*[f"PRIVMSG #a :message {i}" for i in range(1000)])
        lines = bob.received()
        self.assertEqual(len(lines), 6)
        self.assertEqual(lines[-1], f":{ALICE} QUIT :Excess Flood")
        self.assertTrue(alice.closed)
        self.assertEqual(alice.received()[-1], "ERROR :Closing Link: 192.0.2.1 (Excess Flood)")
        self.assertEqual(self.server.factory.refusals.counts["excess-flood"], 1)


class SendQueueTests(ChatTestCase):
    """
    A client that stops reading is disconnected; nobody else waits.
    """

    settings = ConnectionSettings(floodRate=0, sendq=10_000)

    def test_sendqExceeded(self) -> None:
        """
        Once the transport pauses, lines queue up to C{sendq} bytes; past
        that the client is aborted and the others lose nothing.
        """
        alice, bob = self.twoInChannel()
        carol = self.server.user("carol")
        carol.send("JOIN #a")
        carol.received(), alice.received(), bob.received()
        bob.protocol.pauseProducing()  # bob's transport buffer is full
        sent = 0
        line = f":{ALICE} PRIVMSG #a :" + "x" * 60 + "\r\n"
        received = []
        while not bob.transport.disconnected and sent < 1000:
            alice.send("PRIVMSG #a :" + "x" * 60)
            sent += 1
            received += carol.received()  # one reactor turn per message
        self.assertEqual(sent, 10_000 // len(line.encode()) + 1)
        received += carol.received()
        self.assertEqual(received.count(line[:-2]), sent)
        self.assertEqual(received.count(f":{BOB} QUIT :SendQ exceeded"), 1)
        self.assertEqual(len(received), sent + 1)
        self.assertEqual(self.server.factory.refusals.counts["sendq-exceeded"], 1)

    def test_resume(self) -> None:
        """
        Lines queued while paused go out in order on resume.
        """
        alice, bob = self.twoInChannel()
        bob.protocol.pauseProducing()
        alice.send("PRIVMSG #a :1", "PRIVMSG #a :2")
        self.assertEqual(bob.received(), [])
        bob.protocol.resumeProducing()
        self.assertEqual(
            bob.received(), [f":{ALICE} PRIVMSG #a :1", f":{ALICE} PRIVMSG #a :2"]
        )


class TimeoutTests(ChatTestCase):
    """
    Registration timeout and keep-alive, on the fake clock.
    """

    settings = ConnectionSettings(
        floodRate=0, registrationTimeout=30, pingInterval=120, pongTimeout=20
    )

    def test_registrationTimeout(self) -> None:
        """
        A client that does not register within 30 s is disconnected.
        """
        client = self.server.connect()
        client.send("NICK alice")
        self.server.clock.advance(29)
        self.assertFalse(client.closed)
        self.server.clock.advance(1)
        self.assertEqual(client.received(), ["ERROR :Closing Link: 192.0.2.1 (Registration timed out)"])
        self.assertTrue(client.closed)
        self.assertIsNone(self.server.service.users.get("alice"))

    def test_pingPong(self) -> None:
        """
        After 120 s of silence the server sends PING; an answer keeps the
        client; no answer within 20 s disconnects it.
        """
        alice, bob = self.twoInChannel()
        self.server.clock.advance(119)
        bob.send("PONG x")
        self.server.clock.advance(1)
        self.assertEqual(alice.received(), ["PING :irc.test"])
        self.assertEqual(bob.received(), [])
        alice.send("PONG :irc.test")
        self.server.clock.advance(20)
        self.assertFalse(alice.closed)
        self.server.clock.advance(100)
        self.assertEqual(alice.received(), ["PING :irc.test"])
        self.assertEqual(bob.received(), ["PING :irc.test"])
        bob.send("PONG :irc.test")
        self.server.clock.advance(20)
        self.assertTrue(alice.closed)
        self.assertEqual(alice.received(), ["ERROR :Closing Link: 192.0.2.1 (Ping timeout: 140 seconds)"])
        self.assertEqual(bob.received(), [f":{ALICE} QUIT :Ping timeout: 140 seconds"])

    def test_closeTimeout(self) -> None:
        """
        A closing client that does not take its last lines is aborted.
        """
        alice = self.server.user("alice")
        alice.send("QUIT")
        self.server.clock.advance(10)
        self.assertTrue(alice.transport.disconnected)  # StringTransport: aborted
