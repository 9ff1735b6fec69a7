"""
chat: an IRC server for real clients (irssi, WeeChat, HexChat).

The roles are split as in Twisted's own C{twisted.words}:
L{netservices.chat.wire} is the message format (bytes in, bytes out),
L{netservices.chat.protocol} one client connection,
L{netservices.chat.service} the users and channels (behind
L{netservices.chat.interfaces.IChatService}),
L{netservices.chat.authz} who may do what, and L{netservices.chat.tap}
the twistd glue.
"""
