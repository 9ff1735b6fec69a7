"""
Tests for L{netservices.info.client} against misbehaving servers on
loopback.
"""

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from netservices.info.client import MAX_ANSWER, InfoError, askTCP


class Flood(Protocol):
    """
    Sends far more than any answer, then closes.
    """

    def connectionMade(self) -> None:
        self.transport.write(b"x" * (MAX_ANSWER * 25) + b"\n")
        self.transport.loseConnection()


class AskTCPTests(TestCase):
    """
    L{askTCP} refuses what a tcp-info server would never send.
    """

    async def test_answerTooLong(self) -> None:
        """
        An answer longer than L{MAX_ANSWER} is refused with one short line,
        without keeping or quoting it.
        """
        endpoint = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        port = await endpoint.listen(Factory.forProtocol(Flood))
        self.addCleanup(port.stopListening)
        try:
            await askTCP(reactor, "127.0.0.1", port.getHost().port, timeout=10)
        except InfoError as e:
            message = str(e)
        else:
            self.fail("no InfoError")
        self.assertIn(f"longer than {MAX_ANSWER} bytes", message)
        self.assertLess(len(message), 200)
