# -*- test-case-name: tests.chat.test_authz -*-
"""
Who may do what in a channel: one function, L{authorize}, consulted by the
chat service at the moment of every action (not only at join), so a ban,
a key, C{+m} or the loss of C{@} takes effect at once.

The server's state is the only authority: a user's status in a channel
(C{o}, C{v}) is what the channel records, never anything a client claims.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs

from netservices.chat import numerics

from netservices.chat.wire import foldCase

if TYPE_CHECKING:
    from netservices.chat.service import Channel, User
    from netservices.chat.store import ChannelRecord


class Action(enum.Enum):
    """
    What a user wants to do in a channel.
    """

    JOIN = "join"
    SPEAK = "speak"
    SET_TOPIC = "set-topic"
    KICK = "kick"
    CHANGE_MODE = "change-mode"
    INVITE = "invite"


@attrs.frozen
class Denied:
    """
    A refusal: the numeric and text the user is sent.
    """

    numeric: str
    text: str


NOT_ON_CHANNEL = Denied(numerics.ERR_NOTONCHANNEL, "You're not on that channel")
NOT_OPERATOR = Denied(numerics.ERR_CHANOPRIVSNEEDED, "You're not channel operator")
CANNOT_SEND = Denied(numerics.ERR_CANNOTSENDTOCHAN, "Cannot send to channel")
BANNED = Denied(numerics.ERR_BANNEDFROMCHAN, "Cannot join channel (+b)")
INVITE_ONLY = Denied(numerics.ERR_INVITEONLYCHAN, "Cannot join channel (+i)")
BAD_KEY = Denied(numerics.ERR_BADCHANNELKEY, "Cannot join channel (+k)")
FULL = Denied(numerics.ERR_CHANNELISFULL, "Cannot join channel (+l)")


def authorize(
    action: Action, user: User, channel: Channel, key: str | None = None
) -> Denied | None:
    """
    Decide whether C{user} may do C{action} in C{channel} now.

    @param key: the key given with a C{JOIN}.
    @return: L{None} when allowed, else why not.
    """
    status = channel.members.get(user)
    if action is Action.JOIN:
        if status is not None:
            return None
        if channel.record is not None and isChannelOperator(channel.record, user.account):
            # A registered channel's founder and operators, logged in,
            # are never kept out of it.
            return None
        if channel.isBanned(user):
            return BANNED
        if "i" in channel.modes and user.folded not in channel.invited:
            return INVITE_ONLY
        if channel.key is not None and key != channel.key:
            return BAD_KEY
        if channel.limit is not None and len(channel.members) >= channel.limit:
            return FULL
        return None
    if action is Action.SPEAK:
        if status is None:
            if "n" in channel.modes or "m" in channel.modes or channel.isBanned(user):
                return CANNOT_SEND
            return None
        if status:
            return None  # operators and voiced members are never muted
        if "m" in channel.modes or channel.isBanned(user):
            return CANNOT_SEND
        return None
    if status is None:
        return NOT_ON_CHANNEL
    if action is Action.SET_TOPIC:
        if "t" in channel.modes and "o" not in status:
            return NOT_OPERATOR
        return None
    if action is Action.INVITE:
        if "i" in channel.modes and "o" not in status:
            return NOT_OPERATOR
        return None
    # KICK and CHANGE_MODE
    if "o" not in status:
        return NOT_OPERATOR
    return None


def isChannelOperator(record: ChannelRecord, account: str | None) -> bool:
    """
    @return: whether C{account} is the founder or an operator of a
        registered channel.
    """
    if account is None:
        return False
    folded = foldCase(account)
    return folded == foldCase(record.founder) or any(
        folded == foldCase(name) for name in record.operators
    )
