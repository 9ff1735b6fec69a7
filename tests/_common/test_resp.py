"""
Tests for L{netservices._common.resp}: the Redis client connection, on a
string transport and a fake clock.
"""

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from netservices._common.resp import (
    RedisConnection,
    RedisConnectionFactory,
    RedisError,
    RedisTimeout,
)


class RedisConnectionTests(SynchronousTestCase):
    """
    Commands out, replies in, in order.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = StringTransport()
        self.connection = RedisConnectionFactory(self.clock, timeout=5).buildProtocol(None)
        self.connection.makeConnection(self.transport)

    def test_commandsAndReplies(self) -> None:
        """
        Commands go out in RESP; each L{Deferred} fires with its reply
        (bytes, integers, arrays, nil), in order, however the replies are
        split across reads.
        """
        replies = [self.connection.execute("XADD", "log", "*", "o", b"L 1 a b") for _ in range(4)]
        self.assertEqual(
            self.transport.value(),
            b"*5\r\n$4\r\nXADD\r\n$3\r\nlog\r\n$1\r\n*\r\n$1\r\no\r\n$7\r\nL 1 a b\r\n" * 4,
        )
        data = b"$3\r\n1-0\r\n:42\r\n*2\r\n$1\r\na\r\n$-1\r\n$-1\r\n"
        for index in range(len(data)):
            self.connection.dataReceived(data[index:index + 1])
        self.assertEqual(
            [self.successResultOf(reply) for reply in replies], [b"1-0", 42, [b"a", None], None]
        )

    def test_error(self) -> None:
        """
        An error reply fails its command with L{RedisError}; the next
        command gets its own reply.
        """
        first, second = self.connection.execute("XINFO", "STREAM", "x"), self.connection.execute("PING")
        self.connection.dataReceived(b"-ERR no such key\r\n+PONG\r\n")
        self.assertEqual(str(self.failureResultOf(first, RedisError).value), "ERR no such key")
        self.assertEqual(self.successResultOf(second), b"PONG")

    def test_lost(self) -> None:
        """
        Commands waiting when the connection closes fail with
        L{ConnectionLost}; L{whenLost} fires; later commands fail at once.
        """
        waiting = self.connection.execute("PING")
        lost = self.connection.whenLost()
        self.connection.connectionLost(None)
        self.failureResultOf(waiting, ConnectionLost)
        self.assertIs(self.successResultOf(lost), self.connection)
        self.failureResultOf(self.connection.execute("PING"), ConnectionLost)
        self.assertIs(self.successResultOf(self.connection.whenLost()), self.connection)

    def test_timeout(self) -> None:
        """
        A reply later than its command's timeout closes the connection at
        the next check, failing what waits with L{RedisTimeout}; a command
        with a longer timeout of its own (a blocking read) may wait longer.
        """
        blocking = self.connection.execute("XREAD", "BLOCK", "2000", timeout=7)
        self.clock.advance(6)
        self.connection.checkTimeouts()
        self.assertFalse(self.transport.disconnecting)
        self.connection.dataReceived(b"*-1\r\n")
        self.assertIsNone(self.successResultOf(blocking))
        late = self.connection.execute("PING")
        self.clock.advance(5.5)
        self.connection.checkTimeouts()
        self.failureResultOf(late, RedisTimeout)
        self.assertTrue(self.transport.disconnected)

    def test_protocolError(self) -> None:
        """
        Bytes that are not RESP, or a reply to no command, close the
        connection instead of raising.
        """
        for data in (b"?what\r\n", b"+OK\r\n"):
            connection = RedisConnection(self.clock)
            transport = StringTransport()
            connection.makeConnection(transport)
            if data == b"?what\r\n":
                waiting = connection.execute("PING")
            connection.dataReceived(data)
            self.assertTrue(transport.disconnected, data)
        self.failureResultOf(waiting, RedisError)
