"""
Tests for L{netservices._common.eager}, over real loopback sockets.
"""

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from netservices._common.eager import EagerServer, EagerTCPServerEndpoint, eagerEquivalent


class Writer(Protocol):
    """
    Writes what the test asks on connect and records the transport.
    """

    def __init__(self, payload: bytes, made: Deferred) -> None:
        self.payload = payload
        self.made = made

    def connectionMade(self) -> None:
        self.transport.write(self.payload)
        buffered = self.transport._tempDataLen + len(self.transport.dataBuffer)
        self.made.callback((self.transport, buffered))


class Reader(Protocol):
    """
    Collects C{expected} bytes.
    """

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received = b""
        self.done = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expected and not self.done.called:
            self.done.callback(self.received)


class EagerServerTests(TestCase):
    """
    L{EagerServer} sends at once when it can, and in order when it cannot.
    """

    def serve(self, payload: bytes):
        """
        Listen with a L{Writer} of C{payload}; connect a L{Reader}.

        @return: Deferreds of (server transport, bytes buffered after the
            write) and of what the reader got.
        """
        made = Deferred()
        factory = Factory.forProtocol(lambda: Writer(payload, made))
        endpoint = EagerTCPServerEndpoint(reactor, 0, interface="127.0.0.1")
        listening = self.successResultOf(endpoint.listen(factory))
        self.addCleanup(listening.stopListening)
        reader = Reader(len(payload))
        client = TCP4ClientEndpoint(reactor, "127.0.0.1", listening.getHost().port)
        connected = connectProtocol(client, reader)
        connected.addCallback(lambda p: self.addCleanup(p.transport.loseConnection))
        made.addCallback(lambda result: self.addCleanup(result[0].loseConnection) or result)
        return made, reader.done

    def test_smallWriteSentAtOnce(self):
        """
        A small write on an idle connection leaves nothing buffered: it was
        handed to the kernel before C{write} returned.
        """
        made, received = self.serve(b"hello")

        def check(result):
            transport, buffered = result
            self.assertIsInstance(transport, EagerServer)
            self.assertEqual(buffered, 0)
            return received

        made.addCallback(check)
        made.addCallback(self.assertEqual, b"hello")
        return made

    def test_largeWriteInOrder(self):
        """
        What the kernel does not take at once is buffered and sent after,
        in order.
        """
        payload = bytes(i % 253 for i in range(8 * 1024 * 1024))
        made, received = self.serve(payload)

        def check(result):
            _, buffered = result
            self.assertGreater(buffered, 0)
            return received

        made.addCallback(check)
        made.addCallback(lambda data: self.assertTrue(data == payload))
        return made


class EagerEquivalentTests(TestCase):
    """
    L{eagerEquivalent} swaps only plain TCP endpoints.
    """

    def test_tcp(self):
        """
        C{tcp:} and C{tcp6:} endpoints become eager ones on the same port
        and interface.
        """
        for description, interface in [
            ("tcp:7000:interface=127.0.0.1", "127.0.0.1"),
            ("tcp6:7000:interface=\\:\\:1", "::1"),
        ]:
            eager = eagerEquivalent(reactor, serverFromString(reactor, description))
            self.assertIsInstance(eager, EagerTCPServerEndpoint)
            self.assertEqual((eager._port, eager._interface), (7000, interface))

    def test_other(self):
        """
        Other endpoints are returned unchanged.
        """
        endpoint = serverFromString(reactor, "unix:/tmp/x.sock")
        self.assertIs(eagerEquivalent(reactor, endpoint), endpoint)
