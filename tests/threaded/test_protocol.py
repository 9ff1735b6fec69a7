"""
Tests for L{netservices.threaded.protocol}, over a fake transport, with a
synchronous fake pool and a fake clock.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from netservices.testing import SynchronousThreadPool, ThreadedClock
from netservices.threaded.handlers import Handler, builtinHandlers
from netservices.threaded.pool import BoundedPool
from netservices.threaded.protocol import MAX_REPLY, ThreadedFactory

PEER = IPv4Address("TCP", "192.0.2.7", 40000)


class ProtocolTests(SynchronousTestCase):
    """
    L{ThreadedProtocol}: pipelining, replies by id, refusals, logging.
    """

    def setUp(self) -> None:
        self.clock = ThreadedClock()
        self.fake = SynchronousThreadPool()
        self.events: list[dict] = []
        log = Logger(observer=self.events.append)
        self.pool = BoundedPool(self.clock, 2, 2, 10.0, 10.0, log, self.fake)
        self.pool.startService()
        handlers = builtinHandlers(self.pool)
        handlers["big"] = Handler("big", lambda: "x" * MAX_REPLY)
        handlers["tag"] = Handler("tag", lambda text: f"<{text}>")
        self.factory = ThreadedFactory(self.pool, handlers, log, maxInFlight=3, maxLine=100)
        self.protocol, self.transport = self.connect()

    def connect(self):
        protocol = self.factory.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        protocol.makeConnection(transport)
        return protocol, transport

    def replies(self, transport=None) -> list[bytes]:
        transport = transport or self.transport
        lines = transport.value().splitlines()
        transport.clear()
        return lines

    def test_outOfOrderById(self) -> None:
        """
        Pipelined requests are all submitted at once; each reply carries
        its request's id and is written when that request ends, in the
        order they end.
        """
        self.protocol.dataReceived(b"a tag 1\nb tag 2\nc tag 3\n")
        self.assertEqual(len(self.fake.pending), 3)
        self.assertEqual(self.replies(), [])
        self.fake.run(2)
        self.fake.run(0)
        self.assertEqual(self.replies(), [b"c OK <3>", b"a OK <1>"])
        self.fake.runAll()
        self.assertEqual(self.replies(), [b"b OK <2>"])
        self.assertFalse(self.transport.disconnecting)

    def test_splitAcrossReads(self) -> None:
        """
        A request cut across reads, with CRLF, is read whole.
        """
        for piece in [b"1 ta", b"g a%20b\r", b"\n"]:
            self.protocol.dataReceived(piece)
        self.fake.runAll()
        self.assertEqual(self.replies(), [b"1 OK <a b>"])

    def test_badRequestsAnsweredConnectionSurvives(self) -> None:
        """
        Lines that are not valid requests get C{ERROR} replies (with the id
        when it could be read, else C{*}), and the connection goes on.
        """
        self.protocol.dataReceived(
            b"\n!! echo\n1\n2 nosuch\n3 sleep\n4 sleep 1 2\n5 sleep -1\n6 echo %zz\n7 echo ok\n"
        )
        self.fake.runAll()
        replies = self.replies()
        self.assertEqual(
            [line.split(b" ")[:3] for line in replies],
            [
                [b"*", b"ERROR", b"bad-request"],
                [b"*", b"ERROR", b"bad-request"],
                [b"1", b"ERROR", b"bad-request"],
                [b"2", b"ERROR", b"unknown-handler"],
                [b"3", b"ERROR", b"bad-arguments"],
                [b"4", b"ERROR", b"bad-arguments"],
                [b"6", b"ERROR", b"bad-request"],
                [b"5", b"ERROR", b"bad-arguments"],
                [b"7", b"OK", b"ok"],
            ],
        )
        self.assertFalse(self.transport.disconnecting)
        refusals = self.factory.refusals.counts
        self.assertEqual(
            dict(refusals), {"bad-request": 4, "unknown-handler": 1, "bad-arguments": 2}
        )

    def test_overLongLine(self) -> None:
        """
        A line over C{maxLine} bytes is answered C{* ERROR line-too-long}
        once, is not kept, and the next request is served.
        """
        self.protocol.dataReceived(b"1 echo " + b"x" * 200)
        self.protocol.dataReceived(b"y" * 5000 + b"\n2 echo next\n")
        self.fake.runAll()
        self.assertEqual(
            self.replies(),
            [b"* ERROR line-too-long the limit is 100 bytes", b"2 OK next"],
        )

    def test_duplicateId(self) -> None:
        """
        An id still in flight on this connection is refused; once answered
        it can be used again.
        """
        self.protocol.dataReceived(b"1 tag a\n1 tag b\n")
        self.assertEqual(self.replies()[0].split(b" ")[:3], [b"1", b"ERROR", b"duplicate-id"])
        self.fake.runAll()
        self.assertEqual(self.replies(), [b"1 OK <a>"])
        self.protocol.dataReceived(b"1 tag c\n")
        self.fake.runAll()
        self.assertEqual(self.replies(), [b"1 OK <c>"])

    def test_clientLimit(self) -> None:
        """
        A connection with C{maxInFlight} requests in the pool gets
        C{BUSY client-limit}; others are not affected.
        """
        self.protocol.dataReceived(b"1 tag a\n2 tag b\n3 tag c\n4 tag d\n")
        self.assertEqual(self.replies(), [b"4 BUSY client-limit"])
        other, otherTransport = self.connect()
        other.dataReceived(b"9 tag z\n")
        self.assertEqual(self.replies(otherTransport), [])
        self.assertEqual(len(self.fake.pending), 4)

    def test_queueFull(self) -> None:
        """
        Beyond the pool's threads and queue (2 + 2 here), C{BUSY
        queue-full}, over all connections.
        """
        self.protocol.dataReceived(b"1 tag a\n2 tag b\n3 tag c\n")
        other, otherTransport = self.connect()
        other.dataReceived(b"4 tag d\n5 tag e\n")
        self.assertEqual(self.replies(otherTransport), [b"5 BUSY queue-full"])
        self.fake.runAll()
        self.assertEqual(len(self.replies()), 3)

    def test_statsInlineWhenFull(self) -> None:
        """
        C{stats} answers at once even when every thread is busy and the
        queue is full.
        """
        self.protocol.dataReceived(b"1 tag a\n2 tag b\n3 tag c\n")
        other, otherTransport = self.connect()
        other.dataReceived(b"4 tag d\ns stats\n")
        [line] = self.replies(otherTransport)
        self.assertTrue(line.startswith(b"s OK threads=2 busy=2 queued=2 stuck=0"), line)

    def test_timeout(self) -> None:
        """
        A request still running at the timeout gets C{TIMEOUT}.
        """
        self.protocol.dataReceived(b"1 tag a\n")
        self.clock.advance(10)
        self.assertEqual(self.replies(), [b"1 TIMEOUT"])
        self.fake.runAll()
        self.assertEqual(self.replies(), [])

    def test_resultTooLong(self) -> None:
        """
        A result that does not fit in a reply line is replaced by C{ERROR
        result-too-long}.
        """
        self.protocol.dataReceived(b"1 big\n")
        self.fake.runAll()
        [line] = self.replies()
        self.assertTrue(line.startswith(b"1 ERROR result-too-long"), line)

    def test_logStartAndEnd(self) -> None:
        """
        Each request is logged when a thread starts it and when it ends,
        with the thread's name, the times in queue and in the handler, and
        the server's timestamps as fields.
        """
        self.clock.advance(100)
        self.protocol.dataReceived(b"r1 tag a\n")
        self.clock.advance(0.25)
        self.fake.runAll()
        mine = [e for e in self.events if e.get("id") == "r1"]
        self.assertEqual(len(mine), 2)
        start, end = mine
        self.assertEqual(start["thread"], end["thread"])
        self.assertTrue(start["thread"])
        self.assertEqual((start["submitted"], start["started"]), (100, 100.25))
        self.assertEqual(start["queue_ms"], 250.0)
        self.assertEqual(
            {k: end[k] for k in ("client", "handler", "outcome", "queue_ms", "handler_ms", "ended")},
            {
                "client": "192.0.2.7:40000",
                "handler": "tag",
                "outcome": "OK",
                "queue_ms": 250.0,
                "handler_ms": 0.0,
                "ended": 100.25,
            },
        )

    def test_lostConnection(self) -> None:
        """
        A reply to a connection that is gone is dropped quietly.
        """
        self.protocol.dataReceived(b"1 tag a\n")
        self.protocol.connectionLost(None)
        self.fake.runAll()
        self.assertEqual(self.replies(), [])
        self.assertEqual(self.pool.counts["completed"], 1)

    def test_backPressure(self) -> None:
        """
        The protocol is its transport's producer: when the transport pauses
        it, it stops reading.
        """
        self.assertIs(self.transport.producer, self.protocol)
        self.protocol.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.protocol.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")

    def test_stopping(self) -> None:
        """
        While the service stops, new requests get C{BUSY stopping}.
        """
        self.pool.stopService()
        self.protocol.dataReceived(b"1 tag a\n")
        self.assertEqual(self.replies(), [b"1 BUSY stopping"])
