"""
Tests for L{netservices.chat.cluster}: several chat nodes that apply one
log, here in memory (L{netservices.testing.FakeClusterLog}); the Redis
log and real processes are tested in L{tests.chat.test_cluster_redis}.
"""

import json

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from netservices.chat.cluster import (
    PIPELINE_LIMIT,
    ClusterConnection,
    Entry,
    ShadowConnection,
    parseEntry,
)
from netservices.chat.service import ChatLimits
from netservices.testing import FakeChatServer, FakeClusterLog
from tests.chat.test_properties import BASE

UNAVAILABLE = "The cluster is unavailable; try again shortly"


class EntryTests(SynchronousTestCase):
    """
    The log entries' encoding.
    """

    def test_roundTrip(self) -> None:
        """
        An entry parses back to itself, its payload kept byte for byte
        (spaces included).
        """
        entry = Entry(b"L", "abc.1", 1234.5, b"3 PRIVMSG #a :hi there \xff")
        self.assertEqual(parseEntry(entry.encode()), entry)

    def test_malformed(self) -> None:
        """
        What is not an entry parses to L{None} instead of raising.
        """
        for data in [b"", b"L", b"L abc.1", b"LL abc.1 1.0 x", b"L abc.1 notatime x",
                     b"L \xff 1.0 x"]:
            self.assertIsNone(parseEntry(data), data)


class ClusterTestCase(SynchronousTestCase):
    """
    Two or three nodes on one in-memory log.
    """

    def setUp(self) -> None:
        self.log = FakeClusterLog()
        self.nodes = [self.node(f"n{i}") for i in (1, 2)]

    def node(self, name: str, **kwargs) -> FakeChatServer:
        server = FakeChatServer(cluster=self.log, nodeName=name, **kwargs)
        self.addCleanup(server.stop)
        return server

    def pair(self):
        """
        @return: alice on node 1 and bob on node 2, both in C{#room}.
        """
        alice, bob = self.nodes[0].user("alice"), self.nodes[1].user("bob")
        alice.send("JOIN #room")
        alice.received()
        bob.send("JOIN #room")
        bob.received()
        alice.received()
        return alice, bob


class ReplicationTests(ClusterTestCase):
    """
    Users on different nodes see one server.
    """

    def test_roomAndPrivate(self) -> None:
        """
        Users on two nodes join one room and talk in it and in private; each
        message reaches each recipient once, from the recipient's node.
        """
        alice, bob = self.nodes[0].user("alice"), self.nodes[1].user("bob")
        alice.send("JOIN #room")
        self.assertEqual(alice.received(), [
            ":alice!~alice@192.0.2.1 JOIN :#room",
            ":irc.test 353 alice = #room :@alice",
            ":irc.test 366 alice #room :End of /NAMES list",
        ])
        bob.send("JOIN #room")
        self.assertEqual(bob.received(), [
            ":bob!~bob@192.0.2.1 JOIN :#room",
            ":irc.test 353 bob = #room :@alice bob",
            ":irc.test 366 bob #room :End of /NAMES list",
        ])
        self.assertEqual(alice.received(), [":bob!~bob@192.0.2.1 JOIN :#room"])
        alice.send("PRIVMSG #room :hello", "PRIVMSG bob :psst")
        self.assertEqual(bob.received(), [
            ":alice!~alice@192.0.2.1 PRIVMSG #room :hello",
            ":alice!~alice@192.0.2.1 PRIVMSG bob :psst",
        ])
        self.assertEqual(alice.received(), [])

    def test_queriesSeeTheWholeCluster(self) -> None:
        """
        WHOIS, ISON and LIST answered on one node show the users and
        channels of the others.
        """
        alice, bob = self.pair()
        bob.send("WHOIS alice", "ISON alice carol", "LIST")
        lines = bob.received()
        self.assertIn(":irc.test 311 bob alice ~alice 192.0.2.1 * :Alice Example", lines)
        self.assertIn(":irc.test 319 bob alice :@#room", lines)
        self.assertIn(":irc.test 303 bob :alice", lines)
        self.assertIn(":irc.test 322 bob #room 2 :", lines)

    def test_nickRace(self) -> None:
        """
        Two clients on two nodes claim one nick in the same turn: the first
        in the log gets it, the other 433, on both nodes alike.
        """
        first, second = self.nodes[0].connect(), self.nodes[1].connect()
        first.send("NICK carol", "USER carol 0 * :Carol")
        second.send("NICK carol", "USER carol 0 * :Carol")
        self.assertIn(":irc.test 001 carol :Welcome to the netservices IRC Network"
                      " carol!~carol@192.0.2.1", first.received())
        self.assertEqual(second.received(), [":irc.test 433 * carol :Nickname is already in use"])
        for node in self.nodes:
            self.assertEqual(node.service.findUser("carol").client.uid, first.protocol.uid)

    def test_modesHoldEverywhere(self) -> None:
        """
        A key, a ban and +m set on one node are enforced on the other.
        """
        alice, bob = self.pair()
        alice.send("MODE #room +m")
        alice.received()
        bob.send("PRIVMSG #room :hi")
        self.assertEqual(bob.received(), [
            ":alice!~alice@192.0.2.1 MODE #room :+m",
            ":irc.test 404 bob #room :Cannot send to channel",
        ])
        alice.send("MODE #secret +k", "JOIN #secret", "MODE #secret +kb sesame carol!*@*")
        alice.received()
        bob.send("JOIN #secret wrong")
        self.assertEqual(bob.received(), [":irc.test 475 bob #secret :Cannot join channel (+k)"])
        carol = self.nodes[1].user("carol")
        carol.send("JOIN #secret sesame")
        self.assertEqual(carol.received(), [":irc.test 474 carol #secret :Cannot join channel (+b)"])

    def test_registerAndJoinAtOnce(self) -> None:
        """
        NICK, USER, CAP and JOIN in one read (as bots send them): the JOIN
        finds the user registered on every node, and the CAP is applied
        everywhere, not only on the user's node.
        """
        carol = self.nodes[0].connect()
        carol.send("NICK carol", "USER carol 0 * :Carol", "CAP REQ :message-tags", "JOIN #a")
        lines = carol.received()
        self.assertEqual(lines[0].split()[1], "001")
        self.assertIn(":carol!~carol@192.0.2.1 JOIN :#a", lines)
        self.assertNotIn("451", " ".join(line.split()[1] for line in lines))
        for node in self.nodes:
            user = node.service.findUser("carol")
            self.assertEqual((list(user.channels), user.caps), (["#a"], {"message-tags"}))

    def test_badLinesStayLocal(self) -> None:
        """
        An over-long line and a line with NUL are answered (or refused) by
        the user's node alone: nothing goes into the log.
        """
        alice = self.nodes[0].user("alice")
        entries = len(self.log.entries)
        alice.send(b"PRIVMSG #a :" + b"x" * 600, b"JOIN #a\0b")
        self.assertEqual(alice.received(), [":irc.test 417 alice :Input line was too long"])
        self.assertEqual(len(self.log.entries), entries)
        self.assertFalse(alice.closed)

    def test_orderKept(self) -> None:
        """
        A command answered on the user's node alone (NAMES) waits for the
        replicated commands sent before it (JOIN).
        """
        alice = self.nodes[0].user("alice")
        alice.send("JOIN #a", "NAMES #a", "PING x")
        self.assertEqual(alice.received(), [
            ":alice!~alice@192.0.2.1 JOIN :#a",
            ":irc.test 353 alice = #a :@alice",
            ":irc.test 366 alice #a :End of /NAMES list",
            ":irc.test 353 alice = #a :@alice",
            ":irc.test 366 alice #a :End of /NAMES list",
            ":irc.test PONG irc.test :x",
        ])

    def test_sameIdsAndTimes(self) -> None:
        """
        A message gets the same msgid and server time on every node,
        whatever the time a node applies it.
        """
        alice, bob = self.pair()
        for client in (alice, bob):
            client.send("CAP REQ :message-tags server-time")
            client.received()
        alice.send("PRIVMSG #room :tagged")
        self.log.clock.advance(5)
        bob.received()
        alice.send("CAP REQ echo-message", "PRIVMSG #room :again")
        [echoed] = [line for line in alice.received() if "again" in line]
        [relayed] = bob.received()
        self.assertEqual(echoed, relayed)
        self.assertIn("msgid=", relayed)

    def test_unavailable(self) -> None:
        """
        While the log takes nothing, replicated commands are refused with
        400; what needs nobody else is still answered.
        """
        alice = self.nodes[0].user("alice")
        self.log.available = False
        alice.send("JOIN #a", "PING x")
        self.assertEqual(alice.received(), [
            f":irc.test 400 alice JOIN :{UNAVAILABLE}",
            ":irc.test PONG irc.test :x",
        ])
        self.log.available = True
        alice.send("JOIN #a")
        self.assertEqual(alice.received()[0], ":alice!~alice@192.0.2.1 JOIN :#a")

    def test_quitWhileUnavailable(self) -> None:
        """
        A user who leaves while the log takes nothing leaves the cluster
        once it does again.
        """
        alice, bob = self.pair()
        self.log.available = False
        alice.protocol.connectionLost(None)
        self.assertIsNotNone(self.nodes[1].service.findUser("alice"))
        self.log.available = True
        self.nodes[0].factory.replica.publishPendingQuits()
        self.assertEqual(bob.received(), [":alice!~alice@192.0.2.1 QUIT :Connection closed"])
        self.assertIsNone(self.nodes[1].service.findUser("alice"))

    def test_pipelineBounded(self) -> None:
        """
        A client whose lines wait for the log is not read from while more
        than L{PIPELINE_LIMIT} wait.
        """
        alice = self.nodes[0].user("alice")
        alice.send(*["JOIN #a"] * (PIPELINE_LIMIT + 1))
        self.assertEqual(alice.transport.producerState, "paused")
        alice.received()
        self.assertEqual(alice.transport.producerState, "producing")


class NodeTests(ClusterTestCase):
    """
    Nodes joining and leaving.
    """

    def test_deadNode(self) -> None:
        """
        A node declared dead: its users quit on the others with a netsplit
        reason and their nicks are free again.
        """
        alice, bob = self.pair()
        dead = self.nodes[1].factory.replica
        self.log.detach(dead)
        self.log.append(Entry(b"D", dead.instance, 0, b"n2").encode())
        self.assertEqual(alice.received(), [":bob!~bob@192.0.2.1 QUIT :irc.test n2"])
        carol = self.nodes[0].connect()
        self.assertIn(":irc.test 001 bob :Welcome to the netservices IRC Network bob!~bob@192.0.2.1",
                      carol.register("bob"))

    def test_declaredDeadItself(self) -> None:
        """
        A node that finds itself declared dead (it was away too long)
        disconnects its users, whom the cluster no longer has, and joins
        again as a new instance.
        """
        alice, bob = self.pair()
        replica = self.nodes[1].factory.replica
        old = replica.instance
        self.log.append(Entry(b"D", old, 0, b"n2").encode())
        alice.received()
        self.assertTrue(bob.closed)
        self.assertIn("ERROR :Closing Link: 192.0.2.1 (This server lost contact with the cluster)",
                      bob.received())
        self.assertNotEqual(replica.instance, old)
        self.assertEqual(self.nodes[0].factory.replica.nodes["n2"], replica.instance)
        dave = self.nodes[1].user("dave")
        dave.send("JOIN #room")
        self.assertIn(":dave!~dave@192.0.2.1 JOIN :#room", alice.received())

    def test_differentSettings(self) -> None:
        """
        A node that joins with other chat settings than this node's (which
        would make the nodes disagree) is logged as an error by every node.
        """
        from twisted.logger import Logger

        events = []
        for node in self.nodes:
            node.factory.replica.logger = Logger(observer=events.append)
        self.node("n3", limits=ChatLimits(maxChannels=5))
        errors = [event for event in events if event["log_level"].name == "error"]
        self.assertEqual([event["node"] for event in errors], ["n3", "n3"])
        events.clear()
        self.node("n4")
        self.assertEqual([event for event in events if event["log_level"].name == "error"], [])

    def test_restartedNode(self) -> None:
        """
        A node that starts again under its name (a new instance) replaces
        the old one: the old one's users quit.
        """
        alice, bob = self.pair()
        self.log.detach(self.nodes[1].factory.replica)
        self.node("n2")
        self.assertEqual(alice.received(), [":bob!~bob@192.0.2.1 QUIT :irc.test n2"])

    def test_snapshot(self) -> None:
        """
        A node that starts from another's snapshot then applies the rest of
        the log and ends in the same state as the others.
        """
        alice, bob = self.pair()
        alice.send("CAP REQ :message-tags", "MODE #room +lk 10 key", "TOPIC #room :the topic",
                   "PRIVMSG #room :one", "MONITOR + bob", "AWAY :out")
        alice.received()
        state = self.nodes[0].factory.replica.snapshot()
        replica = self._lateNode(json.loads(json.dumps(state)))
        bob.send("PRIVMSG #room :two", "MODE #room +v alice", "NICK robert")
        bob.received()
        carol = self.nodes[1].user("carol")
        carol.send("JOIN #room key")
        carol.received()
        self.assertEqual(replica.snapshot(), self.nodes[0].factory.replica.snapshot())
        self.assertEqual(replica.snapshot(), self.nodes[1].factory.replica.snapshot())

    def test_connectedBeforeJoining(self) -> None:
        """
        A client that connected to a node before it joined (while it loads
        the snapshot) keeps its connection and registers once the node has
        joined.
        """
        from twisted.internet.testing import StringTransport

        from netservices.chat.cluster import ClusterFactory
        from netservices.chat.protocol import ServerInfo
        from netservices.chat.service import ChatService

        alice, bob = self.pair()
        state = json.loads(json.dumps(self.nodes[0].factory.replica.snapshot()))
        service = ChatService("irc.test", self.log.clock, ChatLimits())
        factory = ClusterFactory(service, ServerInfo(name="irc.test"), self.log.clock, nodeName="n3")
        transport = StringTransport()
        early = factory.buildProtocol(None)
        early.makeConnection(transport)
        factory.replica.load(state)
        factory.replica.log = self.log
        self.log._positions[factory.replica] = len(self.log.entries)
        self.log.announce(factory.replica)
        early.dataReceived(b"NICK carol\r\nUSER carol 0 * :Carol\r\nJOIN #room\r\n")
        self.log.clock.advance(0)
        self.assertIn(b" 001 carol ", transport.value())
        self.assertIn(b":irc.test 353 carol = #room :@alice bob carol", transport.value())
        self.assertIn(":carol!~carol@", alice.received()[0])

    def _lateNode(self, state):
        """
        @return: the replica of a third node that loaded C{state} and
            follows the log from there.
        """
        from netservices.chat.cluster import ClusterFactory
        from netservices.chat.protocol import ServerInfo
        from netservices.chat.service import ChatService

        service = ChatService("irc.test", self.log.clock, ChatLimits())
        replica = ClusterFactory(
            service, ServerInfo(name="irc.test"), self.log.clock, nodeName="n3"
        ).replica
        replica.load(state)
        replica.log = self.log
        position = [i for i, (entryId, _) in enumerate(self.log.entries)
                    if entryId == state["lastId"]][0] + 1
        self.log._positions[replica] = position
        self.log.announce(replica)
        return replica


class RegisteredChannelTests(SynchronousTestCase):
    """
    Registered channels in a cluster.
    """

    def test_storedOnce(self) -> None:
        """
        A change to a registered channel is stored by the node of the user
        who made it, and kept in memory by the others, so that every node
        restores the channel alike.
        """
        from netservices.chat.directory import MemoryDirectory
        from netservices.chat.store import ChannelRecord

        log = FakeClusterLog()
        directories = [MemoryDirectory(channels=[ChannelRecord("#reg", "alice", modes="n")]) for _ in range(2)]
        nodes = [FakeChatServer(cluster=log, nodeName=f"n{i}", directory=directory)
                 for i, directory in enumerate(directories)]
        for node in nodes:
            self.addCleanup(node.stop)
        alice = nodes[0].user("alice")
        alice.send("JOIN #reg", "TOPIC #reg :kept", "PRIVMSG #reg :remembered")
        alice.received()
        self.assertEqual([record.topic for record in directories[0].saved], ["kept"])
        self.assertEqual(directories[1].channelRecord("#reg").topic, "kept")
        self.assertEqual(directories[1].saved, [])
        self.assertEqual(directories[0].channels, directories[1].channels)
        self.assertEqual(directories[0].histories, directories[1].histories)


class RecordsTests(SynchronousTestCase):
    """
    Registered channels changed in the store (by C{chat-admin}) reach
    every node at one point of the log.
    """

    def test_leaderPublishes(self) -> None:
        """
        The records the node with the lowest name reads go into the log and
        every node takes them; what another node reads is not used; a
        snapshot carries them to a node that starts later.
        """
        from netservices.chat.directory import MemoryDirectory
        from netservices.chat.store import ChannelRecord

        log = FakeClusterLog()
        directories = [MemoryDirectory() for _ in range(2)]
        nodes = [FakeChatServer(cluster=log, nodeName=f"n{i}", directory=directory)
                 for i, directory in enumerate(directories)]
        for node in nodes:
            self.addCleanup(node.stop)
        record = ChannelRecord("#Reg", "alice", bans=("x!*@*",), operators=("bob",))
        nodes[1].factory.replica.recordsRead([ChannelRecord("#other", "bob")])
        log.deliver()
        self.assertEqual([d.channels for d in directories], [{}, {}])
        nodes[0].factory.replica.recordsRead([record])
        log.deliver()
        self.assertEqual([d.channels for d in directories], [{"#reg": record}] * 2)
        entries = len(log.entries)
        nodes[0].factory.replica.recordsRead([record])
        self.assertEqual(len(log.entries), entries)
        state = json.loads(json.dumps(nodes[0].factory.replica.snapshot()))
        late = FakeChatServer(nodeName="n2", directory=MemoryDirectory())
        self.addCleanup(late.stop)
        from netservices.chat.cluster import ClusterFactory
        from netservices.chat.protocol import ServerInfo

        replica = ClusterFactory(
            late.service, ServerInfo(name="irc.test"), log.clock, nodeName="n2"
        ).replica
        replica.load(state)
        self.assertEqual(late.service.directory.channels, {"#reg": record})

    def test_readBeforeJoining(self) -> None:
        """
        Records read before the node joined go into the log right after its
        C{U} entry, before anything its users send.
        """
        from netservices.chat.cluster import ClusterFactory
        from netservices.chat.directory import MemoryDirectory
        from netservices.chat.protocol import ServerInfo
        from netservices.chat.service import ChatService
        from netservices.chat.store import ChannelRecord

        log = FakeClusterLog()
        service = ChatService("irc.test", log.clock, ChatLimits(), MemoryDirectory())
        replica = ClusterFactory(
            service, ServerInfo(name="irc.test"), log.clock, nodeName="n1"
        ).replica
        record = ChannelRecord("#reg", "alice")
        replica.recordsRead([record])
        self.assertEqual(log.entries, [])
        log.attach(replica)
        self.assertEqual([data[:1] for _, data in log.entries], [b"U", b"X"])
        log.deliver()
        self.assertEqual(service.directory.channels, {"#reg": record})


class ShadowTests(ClusterTestCase):
    """
    Users of other nodes as a node sees them.
    """

    def test_shadowsSendNothing(self) -> None:
        """
        A node keeps every user of the others as a L{ShadowConnection}, and
        its own as L{ClusterConnection}s.
        """
        alice, bob = self.pair()
        connections = self.nodes[0].factory.replica.connections
        self.assertIs(type(connections[alice.protocol.uid]), ClusterConnection)
        self.assertIs(type(connections[bob.protocol.uid]), ShadowConnection)

    def test_relayedToOwnUsersOnly(self) -> None:
        """
        A node relays a channel's messages to its own members only (the
        others' nodes relay to theirs), and counts those deliveries.
        """
        alice, bob = self.pair()
        for node, client in zip(self.nodes, (alice, bob)):
            channel = node.service.findChannel("#room")
            self.assertEqual(len(channel.members), 2)
            self.assertEqual(list(channel.receivers), [client.protocol.user])
        before = [node.service.counts["deliveries"] for node in self.nodes]
        alice.send("PRIVMSG #room :counted")
        bob.received()
        after = [node.service.counts["deliveries"] for node in self.nodes]
        self.assertEqual([b - a for a, b in zip(before, after)], [0, 1])


class AccountTests(SynchronousTestCase):
    """
    Logins and operators: checked on the user's node, known everywhere.
    """

    def setUp(self) -> None:
        from twisted.cred.portal import Portal

        from netservices.chat.directory import AccountSummary, MemoryDirectory
        from netservices.chat.login import AccountSettings
        from tests.chat.test_login import FakeChecker, FakeRealm

        self.log = FakeClusterLog()
        self.checker = FakeChecker()
        self.nodes = []
        for name in ("n1", "n2"):
            directory = MemoryDirectory([AccountSummary("alice"), AccountSummary("root", oper=True)])
            server = FakeChatServer(
                cluster=self.log, nodeName=name, directory=directory,
                accounts=AccountSettings(portal=Portal(FakeRealm(), [self.checker])),
            )
            self.addCleanup(server.stop)
            self.nodes.append(server)

    def test_saslLogin(self) -> None:
        """
        A SASL login on one node: the password is checked there once, and
        the other node knows the account (WHOIS there shows it).
        """
        from tests.chat.test_login import plain

        alice = self.nodes[0].connect(host="127.0.0.1")
        alice.send("CAP LS 302", "CAP REQ :sasl", "NICK alice", "USER alice 0 * :Alice",
                   "AUTHENTICATE PLAIN", f"AUTHENTICATE {plain('alice', 'secret-alice')}",
                   "CAP END")
        lines = alice.received()
        self.assertIn(":irc.test 900 alice alice!*@127.0.0.1 alice :You are now logged in as alice",
                      lines)
        self.assertIn(":irc.test 903 alice :SASL authentication successful", lines)
        self.assertTrue(any(" 001 alice " in line for line in lines))
        self.assertEqual(len(self.checker.checked), 1)
        bob = self.nodes[1].user("bob")
        bob.send("WHOIS alice")
        self.assertIn(":irc.test 330 bob alice alice :is logged in as", bob.received())
        self.assertNotIn(b"secret-alice", b"".join(data for _, data in self.log.entries))

    def test_passLogin(self) -> None:
        """
        C{PASS account:password} before NICK and USER logs in before the
        welcome, on every node alike.
        """
        alice = self.nodes[0].connect(host="127.0.0.1")
        alice.send("PASS alice:secret-alice", "NICK alice", "USER alice 0 * :Alice")
        lines = alice.received()
        self.assertIn(":irc.test 900 alice alice!*@127.0.0.1 alice :You are now logged in as alice",
                      lines)
        self.assertEqual(self.nodes[1].service.findUser("alice").account, "alice")
        self.assertEqual(
            self.nodes[1].factory.replica.snapshot(), self.nodes[0].factory.replica.snapshot()
        )

    def test_operKillsOnAnotherNode(self) -> None:
        """
        An operator on one node KILLs a user of the other: that user's node
        disconnects it, and everybody sees it quit.
        """
        root = self.nodes[0].connect(host="192.0.2.9", secure=True)
        root.register("root")
        root.send("OPER root secret-root")
        self.assertIn(":irc.test 381 root :You are now an IRC operator", root.received())
        self.assertTrue(self.nodes[1].service.findUser("root").oper)
        bob = self.nodes[1].user("bob")
        root.send("JOIN #a")
        bob.send("JOIN #a")
        root.received()
        root.send("KILL bob :spam")
        self.assertIn(":bob!~bob@192.0.2.1 QUIT :Killed (root (spam))", root.received())
        self.assertTrue(bob.closed)
        self.assertIsNone(self.nodes[1].service.findUser("bob"))


#: What the users of L{ConvergenceTests} send, over a few nicks and
#: channels so that they meet.
LINES = [
    "JOIN #a", "JOIN #b", "JOIN #a key", "JOIN 0", "PART #a", "PRIVMSG #a :hi",
    "PRIVMSG u1 :hi", "NOTICE #b :n", "MODE #a +i", "MODE #a -i", "MODE #a +k key",
    "MODE #a -k *", "MODE #a +l 2", "MODE #a -l", "MODE #a +b u2!*@*", "MODE #a -b u2!*@*",
    "MODE #a +o u1", "MODE #a -o u0", "MODE #a +v u3", "MODE #a +m", "MODE u0 +i",
    "KICK #a u2", "KICK #b u1 :out", "INVITE u2 #a", "TOPIC #a :topic", "AWAY :gone", "AWAY",
    "NICK u9", "NICK u1", "NICK U2", "QUIT :bye", "CAP REQ :message-tags echo-message",
    "MONITOR + u1,u9", "SETNAME :new name", "TAGMSG #a",
]


class ConvergenceTests(SynchronousTestCase):
    """
    Whatever users of three nodes do, and however late each node applies
    the log, every node ends in the same state.
    """

    @settings(BASE, max_examples=120)
    @given(st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from(LINES), st.lists(st.integers(0, 2), max_size=6)),
        max_size=40,
    ))
    def test_sameState(self, steps) -> None:
        """
        Six users on three nodes send random commands while the nodes apply
        the log at random moments; once every node applied it all, their
        snapshots are equal.
        """
        log = FakeClusterLog()
        nodes = [FakeChatServer(cluster=log, nodeName=f"n{i}") for i in range(3)]
        log.autoDeliver = False
        clients = [nodes[i % 3].connect(host=f"192.0.2.{i}") for i in range(6)]
        for number, client in enumerate(clients):
            client.send(f"NICK u{number}", f"USER u{number} 0 * :User {number}")
        for who, line, applying in steps:
            clients[who].send(line)
            for node in applying:
                log.deliverOne(node)
            log.clock.advance(0.5)
        log.deliver()
        log.clock.advance(0)
        states = [node.factory.replica.snapshot() for node in nodes]
        for node in nodes:
            node.stop()
        self.assertEqual(states[1], states[0])
        self.assertEqual(states[2], states[0])
