"""
The seams of the chat server: what a connection needs from the chat
service, and what the service needs from a connection.  A service that
spans several processes (a pub/sub bus) implements L{IChatService} too,
and the protocol layer does not change.
"""

from zope.interface import Attribute, Interface


class IChatClient(Interface):
    """
    A client connection, as the chat service sees it.
    """

    receives = Attribute(
        "Whether relayed channel messages are given to this client (false for"
        " the users of other nodes of a cluster, which get them there)."
    )

    def deliver(line: bytes) -> None:
        """
        Send one encoded line.  The same bytes object is given to every
        recipient of a relayed message; it must not block or raise, and a
        client that cannot keep up is disconnected by its own send queue.
        """

    def disconnect(reason: str) -> None:
        """
        Close the connection, telling the user C{reason}.
        """


class IChatService(Interface):
    """
    Users, nicks, channels, membership and modes.  Every method that can
    be refused raises L{netservices.chat.service.ChatError}, which carries
    the numeric reply.
    """

    serverName = Attribute("The server's name, the source of its replies.")

    def connect(client, host: str, secure: bool):
        """
        @return: a new, unregistered user for a connection.
        """

    def setNick(user, nick: str) -> None:
        """
        Claim or change C{user}'s nick, telling everybody who shares a
        channel with a registered user.
        """

    def register(user, username: str, realname: str) -> None:
        """
        Complete registration once the user has a nick and a user name.
        """

    def quit(user, reason: str) -> None:
        """
        Remove a user: leave every channel (telling the members once each)
        and free the nick.
        """

    def join(user, name: str, key: str | None):
        """
        Join a channel, creating it (with the user as operator) if needed.
        """

    def part(user, name: str, reason: str | None) -> None:
        """
        Leave a channel.
        """

    def partAll(user) -> None:
        """
        Leave every channel (C{JOIN 0}).
        """

    def sendMessage(user, command: str, target: str, text, tags=()) -> None:
        """
        Relay a C{PRIVMSG} or C{NOTICE} (or, with C{text} L{None}, a
        C{TAGMSG}) with the sender's client-only C{tags} to a channel or a
        nick.
        """

    def setCapabilities(user, capabilities) -> None:
        """
        Note the IRCv3 capabilities C{user}'s client enabled: what it
        receives depends on them.
        """

    def setRealname(user, realname: str) -> None:
        """
        Change C{user}'s real name (IRCv3 C{SETNAME}).
        """

    def monitorAdd(user, nicks):
        """
        Add nicks to C{user}'s C{MONITOR} list; return the online
        prefixes, offline nicks and those refused for a full list.
        """

    def monitorRemove(user, nicks) -> None:
        """
        Remove nicks from C{user}'s C{MONITOR} list.
        """

    def monitorClear(user) -> None:
        """
        Empty C{user}'s C{MONITOR} list.
        """

    def setTopic(user, name: str, topic: str) -> None:
        """
        Set a channel's topic.
        """

    def kick(user, name: str, nick: str, reason: str) -> None:
        """
        Remove a member from a channel.
        """

    def invite(user, nick: str, name: str) -> None:
        """
        Invite a user to a channel.
        """

    def changeChannelModes(user, name: str, changes) -> list:
        """
        Apply channel mode changes; return those applied.
        """

    def setAway(user, message: str | None) -> None:
        """
        Set or clear C{user}'s away message.
        """

    def findUser(nick: str):
        """
        @return: the registered user with this nick, or L{None}.
        """

    def findChannel(name: str):
        """
        @return: the channel with this name, or L{None}.
        """

    def allChannels():
        """
        @return: every channel.
        """

    def allUsers():
        """
        @return: every registered user.
        """
