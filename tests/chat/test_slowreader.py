"""
The send queue over real loopback sockets: a client that stops reading is
disconnected with C{SendQ exceeded}, and the others lose nothing.
"""

import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from netservices.chat.protocol import ChatFactory, ConnectionSettings, ServerInfo
from netservices.chat.service import ChatService


class LineClient(Protocol):
    """
    A raw IRC client that registers, joins C{#a} and collects lines.
    """

    def __init__(self, nick: str) -> None:
        self.nick = nick
        self.lines: list[bytes] = []
        self._buffer = b""
        self._waiting: list[tuple[bytes, Deferred]] = []

    def connectionMade(self) -> None:
        self.transport.write(
            f"NICK {self.nick}\r\nUSER {self.nick} 0 * :x\r\nJOIN #a\r\n".encode()
        )

    def dataReceived(self, data: bytes) -> None:
        *lines, self._buffer = (self._buffer + data).split(b"\r\n")
        self.lines.extend(lines)
        for line in lines:
            for waited in list(self._waiting):
                if waited[0] in line:
                    self._waiting.remove(waited)
                    waited[1].callback(line)

    def waitFor(self, text: bytes) -> Deferred:
        """
        @return: a L{Deferred} firing with the first line (from now on, or
            already received) containing C{text}.
        """
        for line in self.lines:
            if text in line:
                return Deferred.fromCoroutine(_now(line))
        waiter: Deferred = Deferred()
        self._waiting.append((text, waiter))
        return waiter.addTimeout(30, reactor)


async def _now(value):
    return value


class SlowReaderTests(TestCase):
    """
    A client that does not read cannot make the server buffer without
    bound or make anybody else wait.
    """

    async def test_sendqExceeded(self) -> None:
        """
        While one member stops reading and another sends 4 MB to the
        channel, the reader is dropped with C{SendQ exceeded} and a third
        member receives every message, in order.
        """
        service = ChatService("irc.test", reactor)
        factory = ChatFactory(
            service, ServerInfo("irc.test"), reactor,
            # Flood control off and the talker sending as fast as it can: a
            # member that reads can still be a few reads behind at a time,
            # so the queue must hold more than that.
            ConnectionSettings(floodRate=0, sendq=1 << 20),
        )
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        # The reader that stops reading: a plain socket with a small receive
        # buffer, so that the kernel does not absorb megabytes first.
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", port.getHost().port))
        slow.setblocking(False)
        slowClient = LineClient("slow")
        # The reactor takes its own copy of the descriptor.
        reactor.adoptStreamConnection(
            slow.fileno(), socket.AF_INET, Factory.forProtocol(lambda: slowClient)
        )
        slow.close()
        self.addCleanup(slowClient.transport.abortConnection)
        await slowClient.waitFor(b" 366 ")
        slowClient.transport.pauseProducing()
        clients = {}
        for nick in ("observer", "talker"):
            client = clients[nick] = await connectProtocol(endpoint, LineClient(nick))
            self.addCleanup(client.transport.abortConnection)
            await client.waitFor(b" 366 ")
        count = 10_000
        text = "x" * 400
        talker = clients["talker"].transport
        for i in range(count):
            talker.write(f"PRIVMSG #a :{i} {text}\r\n".encode())
        observer = clients["observer"]
        quit = await observer.waitFor(b"QUIT")
        self.assertEqual(quit, b":slow!~slow@127.0.0.1 QUIT :SendQ exceeded")
        await observer.waitFor(f"PRIVMSG #a :{count - 1} ".encode())
        received = [
            int(line.split(b":", 2)[2].split()[0])
            for line in observer.lines
            if b" PRIVMSG #a :" in line
        ]
        self.assertEqual(received, list(range(count)))
        self.assertIsNone(service.findUser("slow"))
        self.assertEqual(factory.refusals.counts["sendq-exceeded"], 1)
