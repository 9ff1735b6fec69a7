"""
Tests for L{netservices.echo.tcp}.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from netservices.echo.tcp import TCPEchoFactory


class NoDelayTransport(StringTransport):
    """
    A L{StringTransport} that records C{setTcpNoDelay}.
    """

    noDelay = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.noDelay = enabled


def connect():
    """
    @return: a connected L{TCPEchoProtocol}, its transport and factory.
    """
    factory = TCPEchoFactory()
    peer = IPv4Address("TCP", "192.0.2.7", 40000)
    transport = NoDelayTransport(peerAddress=peer)
    protocol = factory.buildProtocol(peer)
    protocol.makeConnection(transport)
    return protocol, transport, factory


class TCPEchoProtocolTests(SynchronousTestCase):
    """
    L{TCPEchoProtocol} echoes bytes in order, with back-pressure.
    """

    def test_echoesInOrder(self):
        """
        Every byte received is written back, in order, and counted.
        """
        protocol, transport, factory = connect()
        chunks = [b"a", b"bc", bytes(range(256)), b"\r\n\x00"]
        for chunk in chunks:
            protocol.dataReceived(chunk)
        self.assertEqual(transport.value(), b"".join(chunks))
        self.assertEqual(factory.counts, {"connections": 1, "bytes": 262})

    def test_noDelay(self):
        """
        TCP_NODELAY is turned on when the connection is made.
        """
        _, transport, _ = connect()
        self.assertTrue(transport.noDelay)

    def test_backPressure(self):
        """
        The protocol is its transport's streaming producer: when the
        transport pauses it (its write buffer is full) it stops reading
        from the peer, and resumes reading when resumed.
        """
        protocol, transport, _ = connect()
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)
        protocol.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
