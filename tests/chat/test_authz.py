"""
Tests for L{netservices.chat.authz.authorize}, on its own: channels and
users are built directly, with no service or connection.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from netservices.chat import numerics
from netservices.chat.authz import (
    BAD_KEY,
    BANNED,
    CANNOT_SEND,
    FULL,
    INVITE_ONLY,
    NOT_ON_CHANNEL,
    NOT_OPERATOR,
    Action,
    authorize,
)
from netservices.chat.service import Channel, User
from netservices.chat.wire import foldCase, maskPattern


def makeUser(nick: str, host: str = "192.0.2.1") -> User:
    """
    @return: a registered user C{nick!~nick@host} with a dummy client.
    """
    user = User(object(), host, False, 0.0)
    user.nick, user.folded = nick, foldCase(nick)
    user.username = "~" + nick.lower()
    user.registered = True
    user._rebuildPrefix()
    return user


def makeChannel(*modes: str, members: dict[User, str] | None = None) -> Channel:
    """
    @param modes: flag modes to set in place of the default C{+nt}.
    @return: a channel C{#room} with C{members}.
    """
    channel = Channel("#room", 0.0)
    channel.modes = set(modes)
    channel.members.update(members or {})
    return channel


def ban(channel: Channel, mask: str) -> None:
    """
    Add C{mask} (in full C{nick!user@host} form) to C{channel}'s bans.
    """
    channel.bans[mask] = maskPattern(mask)


#: Every action but JOIN and SPEAK needs membership.
MEMBER_ACTIONS = (Action.SET_TOPIC, Action.KICK, Action.CHANGE_MODE, Action.INVITE)


class DenialTests(SynchronousTestCase):
    """
    The refusals carry the numerics of modern IRC.
    """

    def test_numerics(self) -> None:
        """
        Each refusal has its numeric.
        """
        self.assertEqual(
            [
                BANNED.numeric, INVITE_ONLY.numeric, BAD_KEY.numeric, FULL.numeric,
                CANNOT_SEND.numeric, NOT_OPERATOR.numeric, NOT_ON_CHANNEL.numeric,
            ],
            [
                numerics.ERR_BANNEDFROMCHAN, numerics.ERR_INVITEONLYCHAN,
                numerics.ERR_BADCHANNELKEY, numerics.ERR_CHANNELISFULL,
                numerics.ERR_CANNOTSENDTOCHAN, numerics.ERR_CHANOPRIVSNEEDED,
                numerics.ERR_NOTONCHANNEL,
            ],
        )
        self.assertEqual(
            [BANNED.numeric, INVITE_ONLY.numeric, BAD_KEY.numeric, FULL.numeric],
            ["474", "473", "475", "471"],
        )


class JoinTests(SynchronousTestCase):
    """
    L{Action.JOIN}: bans, C{+i} and invitations, C{+k}, C{+l}.
    """

    def setUp(self) -> None:
        self.op = makeUser("op")
        self.alice = makeUser("alice")
        self.channel = makeChannel("n", "t", members={self.op: "o"})

    def test_open(self) -> None:
        """
        Anybody may join a channel with no ban, key, limit or C{+i}.
        """
        self.assertIsNone(authorize(Action.JOIN, self.alice, self.channel))

    def test_flagModesOtherThanInviteOnly(self) -> None:
        """
        C{+m}, C{+n}, C{+s} and C{+t} do not stop anybody joining.
        """
        self.channel.modes = {"m", "n", "s", "t"}
        self.assertIsNone(authorize(Action.JOIN, self.alice, self.channel))

    def test_banned(self) -> None:
        """
        A user matched by a ban mask is refused with C{BANNED}.
        """
        ban(self.channel, "alice!*@*")
        self.assertIs(authorize(Action.JOIN, self.alice, self.channel), BANNED)

    def test_banMatchesWholePrefix(self) -> None:
        """
        Bans match the whole C{nick!user@host}: on the host, on the user
        name, with C{?} and C{*} wildcards.
        """
        for mask in ["*!*@192.0.2.1", "*!~alice@*", "al?ce!*@*", "*", "a*!*@*.0.2.1"]:
            channel = makeChannel()
            ban(channel, mask)
            self.assertIs(authorize(Action.JOIN, self.alice, channel), BANNED, mask)

    def test_banMatchesOthersOnly(self) -> None:
        """
        A ban that does not match the user does not stop them: another nick,
        another host, a prefix of the nick without a wildcard.
        """
        for mask in ["bob!*@*", "*!*@192.0.2.2", "ali!*@*", "alice!*@192.0.2.10"]:
            channel = makeChannel()
            ban(channel, mask)
            self.assertIsNone(authorize(Action.JOIN, self.alice, channel), mask)

    def test_banCaseInsensitive(self) -> None:
        """
        Bans match under the C{ascii} case mapping, in both directions.
        """
        ban(self.channel, "ALICE!*@*")
        self.assertIs(authorize(Action.JOIN, self.alice, self.channel), BANNED)
        self.assertIs(authorize(Action.JOIN, makeUser("ALICE"), self.channel), BANNED)

    def test_inviteOnly(self) -> None:
        """
        On C{+i}, a user not invited is refused with C{INVITE_ONLY}.
        """
        self.channel.modes.add("i")
        self.assertIs(authorize(Action.JOIN, self.alice, self.channel), INVITE_ONLY)

    def test_inviteOnlyInvited(self) -> None:
        """
        On C{+i}, an invited user (by folded nick) may join.
        """
        self.channel.modes.add("i")
        self.channel.invited["alice"] = None
        self.assertIsNone(authorize(Action.JOIN, makeUser("Alice"), self.channel))

    def test_inviteOnlyOtherInvited(self) -> None:
        """
        Somebody else's invitation does not let a user in.
        """
        self.channel.modes.add("i")
        self.channel.invited["bob"] = None
        self.assertIs(authorize(Action.JOIN, self.alice, self.channel), INVITE_ONLY)

    def test_invitationWithoutInviteOnly(self) -> None:
        """
        An invitation does not matter on a channel without C{+i}.
        """
        self.channel.invited["alice"] = None
        self.assertIsNone(authorize(Action.JOIN, self.alice, self.channel))

    def test_invitationDoesNotLiftBan(self) -> None:
        """
        An invitation lifts C{+i} only: a banned invited user is still
        refused.
        """
        self.channel.modes.add("i")
        self.channel.invited["alice"] = None
        ban(self.channel, "alice!*@*")
        self.assertIs(authorize(Action.JOIN, self.alice, self.channel), BANNED)

    def test_invitationDoesNotLiftKeyOrLimit(self) -> None:
        """
        An invitation lifts C{+i} only: the key and limit still apply.
        """
        self.channel.modes.add("i")
        self.channel.invited["alice"] = None
        self.channel.key = "secret"
        self.assertIs(authorize(Action.JOIN, self.alice, self.channel), BAD_KEY)
        self.channel.key = None
        self.channel.limit = 1
        self.assertIs(authorize(Action.JOIN, self.alice, self.channel), FULL)

    def test_key(self) -> None:
        """
        On C{+k}, only the exact key (case-sensitive) lets a user in; no key
        or another is refused with C{BAD_KEY}.
        """
        self.channel.key = "Secret"
        self.assertIsNone(authorize(Action.JOIN, self.alice, self.channel, "Secret"))
        for key in [None, "", "secret", "Secret ", "Secre", "x"]:
            self.assertIs(
                authorize(Action.JOIN, self.alice, self.channel, key), BAD_KEY, key
            )

    def test_keyWithoutKeyMode(self) -> None:
        """
        A key given for a channel without C{+k} is ignored.
        """
        self.assertIsNone(authorize(Action.JOIN, self.alice, self.channel, "whatever"))

    def test_limit(self) -> None:
        """
        On C{+l}, a user may join while there are fewer members than the
        limit; at the limit they are refused with C{FULL}.
        """
        self.channel.limit = 2
        self.assertIsNone(authorize(Action.JOIN, self.alice, self.channel))
        self.channel.members[makeUser("bob")] = ""
        self.assertIs(authorize(Action.JOIN, self.alice, self.channel), FULL)
        self.channel.limit = 3
        self.assertIsNone(authorize(Action.JOIN, self.alice, self.channel))

    def test_limitBelowMembers(self) -> None:
        """
        A limit set below the number of members refuses newcomers.
        """
        self.channel.limit = 1
        self.channel.members[makeUser("bob")] = ""
        self.assertIs(authorize(Action.JOIN, self.alice, self.channel), FULL)

    def test_order(self) -> None:
        """
        With several reasons to refuse, the ban is reported first, then
        C{+i}, then the key, then the limit.
        """
        self.channel.modes.add("i")
        self.channel.key = "secret"
        self.channel.limit = 1
        ban(self.channel, "alice!*@*")
        self.assertIs(authorize(Action.JOIN, self.alice, self.channel), BANNED)
        self.channel.bans.clear()
        self.assertIs(authorize(Action.JOIN, self.alice, self.channel), INVITE_ONLY)
        self.channel.modes.discard("i")
        self.assertIs(authorize(Action.JOIN, self.alice, self.channel), BAD_KEY)
        self.assertIs(authorize(Action.JOIN, self.alice, self.channel, "secret"), FULL)

    def test_alreadyMember(self) -> None:
        """
        A member is never refused C{JOIN} (it does nothing), whatever bans,
        C{+i}, key or limit say.
        """
        self.channel.members[self.alice] = ""
        self.channel.modes.add("i")
        self.channel.key = "secret"
        self.channel.limit = 1
        ban(self.channel, "*")
        self.assertIsNone(authorize(Action.JOIN, self.alice, self.channel))


class SpeakTests(SynchronousTestCase):
    """
    L{Action.SPEAK}: C{+n}, C{+m}, bans, voice and operators.
    """

    def setUp(self) -> None:
        self.alice = makeUser("alice")
        self.channel = makeChannel()

    def speak(self, status: str | None) -> object:
        """
        @param status: C{alice}'s status in the channel, L{None} for a
            non-member.
        @return: whether C{alice} may speak.
        """
        self.channel.members.pop(self.alice, None)
        if status is not None:
            self.channel.members[self.alice] = status
        return authorize(Action.SPEAK, self.alice, self.channel)

    def test_everyMemberOnPlainChannel(self) -> None:
        """
        With no C{+n}, C{+m} or ban, members of any status and non-members
        may speak.
        """
        for status in [None, "", "v", "o", "ov"]:
            self.assertIsNone(self.speak(status), status)

    def test_noExternal(self) -> None:
        """
        On C{+n}, non-members may not speak; members may.
        """
        self.channel.modes.add("n")
        self.assertIs(self.speak(None), CANNOT_SEND)
        for status in ["", "v", "o", "ov"]:
            self.assertIsNone(self.speak(status), status)

    def test_moderated(self) -> None:
        """
        On C{+m}, only voiced members and operators may speak.
        """
        self.channel.modes.add("m")
        self.assertIs(self.speak(None), CANNOT_SEND)
        self.assertIs(self.speak(""), CANNOT_SEND)
        for status in ["v", "o", "ov"]:
            self.assertIsNone(self.speak(status), status)

    def test_banned(self) -> None:
        """
        A banned member or non-member may not speak; a banned voiced member
        or operator may.
        """
        ban(self.channel, "alice!*@*")
        self.assertIs(self.speak(None), CANNOT_SEND)
        self.assertIs(self.speak(""), CANNOT_SEND)
        for status in ["v", "o", "ov"]:
            self.assertIsNone(self.speak(status), status)

    def test_banOnOthers(self) -> None:
        """
        Somebody else's ban does not mute a user.
        """
        ban(self.channel, "bob!*@*")
        self.assertIsNone(self.speak(""))
        self.assertIsNone(self.speak(None))

    def test_otherModes(self) -> None:
        """
        C{+i}, C{+s}, C{+t}, a key and a limit do not stop anybody speaking.
        """
        self.channel.modes = {"i", "s", "t"}
        self.channel.key = "secret"
        self.channel.limit = 1
        for status in [None, "", "v", "o"]:
            self.assertIsNone(self.speak(status), status)

    def test_statusOfThisChannelOnly(self) -> None:
        """
        Being an operator in another channel does not unmute a user.
        """
        other = makeChannel(members={self.alice: "o"})
        self.alice.channels[other.folded] = other
        self.channel.modes.add("m")
        self.assertIs(self.speak(""), CANNOT_SEND)


class TopicTests(SynchronousTestCase):
    """
    L{Action.SET_TOPIC}: members, and on C{+t} operators only.
    """

    def setUp(self) -> None:
        self.alice = makeUser("alice")
        self.channel = makeChannel()

    def test_nonMember(self) -> None:
        """
        A non-member may never set the topic, with or without C{+t}.
        """
        self.assertIs(authorize(Action.SET_TOPIC, self.alice, self.channel), NOT_ON_CHANNEL)
        self.channel.modes.add("t")
        self.assertIs(authorize(Action.SET_TOPIC, self.alice, self.channel), NOT_ON_CHANNEL)

    def test_withoutTopicLock(self) -> None:
        """
        Without C{+t}, every member may set the topic, even on C{+m} and
        when banned.
        """
        self.channel.modes.add("m")
        ban(self.channel, "*")
        for status in ["", "v", "o"]:
            self.channel.members[self.alice] = status
            self.assertIsNone(authorize(Action.SET_TOPIC, self.alice, self.channel), status)

    def test_topicLock(self) -> None:
        """
        On C{+t}, only operators may set the topic; voice is not enough.
        """
        self.channel.modes.add("t")
        for status, expected in [("", NOT_OPERATOR), ("v", NOT_OPERATOR), ("o", None), ("ov", None)]:
            self.channel.members[self.alice] = status
            self.assertIs(
                authorize(Action.SET_TOPIC, self.alice, self.channel), expected, status
            )


class InviteTests(SynchronousTestCase):
    """
    L{Action.INVITE}: members, and on C{+i} operators only.
    """

    def setUp(self) -> None:
        self.alice = makeUser("alice")
        self.channel = makeChannel()

    def test_nonMember(self) -> None:
        """
        A non-member may never invite.
        """
        self.assertIs(authorize(Action.INVITE, self.alice, self.channel), NOT_ON_CHANNEL)
        self.channel.modes.add("i")
        self.assertIs(authorize(Action.INVITE, self.alice, self.channel), NOT_ON_CHANNEL)

    def test_withoutInviteOnly(self) -> None:
        """
        Without C{+i}, every member may invite.
        """
        for status in ["", "v", "o"]:
            self.channel.members[self.alice] = status
            self.assertIsNone(authorize(Action.INVITE, self.alice, self.channel), status)

    def test_inviteOnly(self) -> None:
        """
        On C{+i}, only operators may invite; voice is not enough.
        """
        self.channel.modes.add("i")
        for status, expected in [("", NOT_OPERATOR), ("v", NOT_OPERATOR), ("o", None), ("ov", None)]:
            self.channel.members[self.alice] = status
            self.assertIs(
                authorize(Action.INVITE, self.alice, self.channel), expected, status
            )


class OperatorActionTests(SynchronousTestCase):
    """
    L{Action.KICK} and L{Action.CHANGE_MODE}: operators only.
    """

    def setUp(self) -> None:
        self.alice = makeUser("alice")
        self.channel = makeChannel("n", "t")

    def test_nonMember(self) -> None:
        """
        A non-member may not kick or change modes.
        """
        for action in [Action.KICK, Action.CHANGE_MODE]:
            self.assertIs(authorize(action, self.alice, self.channel), NOT_ON_CHANNEL, action)

    def test_statuses(self) -> None:
        """
        Plain and voiced members are refused with C{NOT_OPERATOR};
        operators (voiced or not) may.
        """
        for action in [Action.KICK, Action.CHANGE_MODE]:
            for status, expected in [("", NOT_OPERATOR), ("v", NOT_OPERATOR), ("o", None), ("ov", None)]:
                self.channel.members[self.alice] = status
                self.assertIs(authorize(action, self.alice, self.channel), expected, (action, status))

    def test_modesDoNotMatter(self) -> None:
        """
        Every mode, a ban, a key and a full limit leave operators their
        rights and give none to others.
        """
        self.channel.modes = {"i", "m", "n", "s", "t"}
        self.channel.key = "secret"
        self.channel.limit = 1
        ban(self.channel, "*")
        for action in [Action.KICK, Action.CHANGE_MODE]:
            self.channel.members[self.alice] = "o"
            self.assertIsNone(authorize(action, self.alice, self.channel), action)
            self.channel.members[self.alice] = "v"
            self.assertIs(authorize(action, self.alice, self.channel), NOT_OPERATOR, action)

    def test_statusOfThisChannelOnly(self) -> None:
        """
        Being an operator in another channel gives no rights in this one.
        """
        other = makeChannel(members={self.alice: "o"})
        self.alice.channels[other.folded] = other
        self.channel.members[self.alice] = ""
        for action in [Action.KICK, Action.CHANGE_MODE]:
            self.assertIs(authorize(action, self.alice, self.channel), NOT_OPERATOR, action)

    def test_sameNickOtherUser(self) -> None:
        """
        Status belongs to the user object the channel records, not to a
        nick: another user with the same nick has none.
        """
        self.channel.members[self.alice] = "o"
        impostor = makeUser("alice", "198.51.100.7")
        for action in MEMBER_ACTIONS:
            self.assertIs(authorize(action, impostor, self.channel), NOT_ON_CHANNEL, action)
