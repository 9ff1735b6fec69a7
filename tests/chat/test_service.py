"""
Tests for L{netservices.chat.service}: the chat service on its own, with
recording clients instead of connections.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from netservices.chat.interfaces import IChatClient, IChatService
from netservices.chat.service import ChatError, ChatService, ModeChange, modeParams
from netservices.testing import FakeChatServer


@implementer(IChatClient)
class RecordingClient:
    """
    Records the lines delivered to it.
    """

    receives = True

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.reasons: list[str] = []

    def deliver(self, line: bytes) -> None:
        self.lines.append(line)

    def disconnect(self, reason: str) -> None:
        self.reasons.append(reason)


class ChatServiceTests(SynchronousTestCase):
    """
    L{ChatService} keeps users and channels and relays lines.
    """

    def setUp(self) -> None:
        self.service = ChatService("irc.test", Clock())

    def user(self, nick: str):
        """
        @return: a registered user with a recording client.
        """
        user = self.service.connect(RecordingClient(), "192.0.2.1", False)
        self.service.setNick(user, nick)
        self.service.register(user, "~" + nick, nick)
        return user

    def test_interfaces(self) -> None:
        """
        The service provides L{IChatService}; connections provide
        L{IChatClient}.
        """
        verifyObject(IChatService, self.service)
        server = FakeChatServer()
        self.addCleanup(server.stop)
        verifyObject(IChatClient, server.connect().protocol)

    def test_encodedOnce(self) -> None:
        """
        A channel message is encoded once: every member gets the same bytes
        object, and the sender none.
        """
        users = [self.user(f"u{i}") for i in range(5)]
        for user in users:
            self.service.join(user, "#a", None)
        for user in users:
            user.client.lines.clear()
        self.service.sendMessage(users[0], "PRIVMSG", "#a", "hello")
        self.assertEqual(users[0].client.lines, [])
        lines = [user.client.lines[0] for user in users[1:]]
        self.assertEqual(lines[0], b":u0!~u0@192.0.2.1 PRIVMSG #a :hello\r\n")
        self.assertTrue(all(line is lines[0] for line in lines))
        self.assertEqual(self.service.counts, {"messages": 1, "deliveries": 4 + 5 + 4 + 3 + 2 + 1})

    def test_counts(self) -> None:
        """
        Registered, unregistered and invisible users are counted for LUSERS.
        """
        pending = self.service.connect(RecordingClient(), "192.0.2.9", False)
        alice = self.user("alice")
        self.service.setInvisible(alice, True)
        self.assertEqual(
            (self.service.registeredCount, self.service.unregisteredCount,
             self.service.invisibleCount),
            (1, 1, 1),
        )
        self.service.quit(alice, "bye")
        self.service.quit(pending, "bye")
        self.assertEqual(
            (self.service.registeredCount, self.service.unregisteredCount,
             self.service.invisibleCount),
            (0, 0, 0),
        )
        self.assertEqual(self.service.users, {})

    def test_unregisteredInvisible(self) -> None:
        """
        Users who have a nick but have not registered are not found.
        """
        pending = self.service.connect(RecordingClient(), "192.0.2.9", False)
        self.service.setNick(pending, "ghost")
        self.assertIsNone(self.service.findUser("ghost"))
        self.assertEqual(list(self.service.allUsers()), [])
        error = self.assertRaises(ChatError, self.user, "GHOST")
        self.assertEqual(error.numeric, "433")

    def test_banAppliesAtSendTime(self) -> None:
        """
        A ban set after a member joined mutes them at once, and matches a
        nick the member changes to afterwards.
        """
        alice, bob = self.user("alice"), self.user("bob")
        self.service.join(alice, "#a", None)
        self.service.join(bob, "#a", None)
        self.service.changeChannelModes(alice, "#a", [ModeChange("+", "b", "mallory")])
        self.service.sendMessage(bob, "PRIVMSG", "#a", "ok")
        self.service.setNick(bob, "Mallory")
        error = self.assertRaises(ChatError, self.service.sendMessage, bob, "PRIVMSG", "#a", "x")
        self.assertEqual(error.numeric, "404")

    def test_modeParams(self) -> None:
        """
        Mode changes are written with one sign per run.
        """
        self.assertEqual(
            modeParams([ModeChange("+", "o", "a"), ModeChange("+", "m"),
                        ModeChange("-", "b", "x!*@*"), ModeChange("-", "l")]),
            ("+om-bl", "a", "x!*@*"),
        )
