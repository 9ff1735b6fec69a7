# -*- test-case-name: tests._common.test_resp -*-
"""
A Redis client connection: a Twisted protocol whose commands return
L{Deferred}s of their replies, in order, with the RESP wire format packed
and parsed by C{hiredis} (Redis's own C parser).

Why not a Python client: under the chat cluster's load, txredisapi's
parser took about half of a node's reactor thread (measured with py-spy);
hiredis does the same work in C, and what is left here is a queue of
L{Deferred}s.
"""

from __future__ import annotations

from collections import deque

import hiredis
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure


class RedisError(Exception):
    """
    Redis answered a command with an error (C{-ERR ...}).
    """


class RedisTimeout(Exception):
    """
    Redis did not answer in time; the connection was closed.
    """


class RedisConnection(Protocol):
    """
    One connection to Redis.  L{execute} sends a command and returns a
    L{Deferred} of its reply: C{bytes}, C{int}, C{list}, L{None}, or a
    failure with L{RedisError}.  When the connection closes, every command
    waiting fails with L{ConnectionLost} and L{whenLost} fires.

    @ivar connected: whether commands can be sent.
    """

    def __init__(self, clock, timeout: float | None = None) -> None:
        """
        @param timeout: the default of L{execute}'s C{timeout}.
        """
        self.clock = clock
        self.timeout = timeout
        self.connected = False
        self._reader = hiredis.Reader()
        # (reply, deadline or None) per command sent, oldest first.
        self._waiting: deque[tuple[Deferred, float | None]] = deque()
        self._lost: list[Deferred] = []

    def connectionMade(self) -> None:
        self.connected = True

    def execute(self, *args, timeout: float | None = None) -> Deferred:
        """
        Send one command.

        @param timeout: seconds Redis has to answer (see L{checkTimeouts});
            by default the connection's.
        """
        if not self.connected:
            return fail(ConnectionLost("not connected to Redis"))
        self.transport.write(hiredis.pack_command(args))
        reply = Deferred()
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else self.clock.seconds() + timeout
        self._waiting.append((reply, deadline))
        return reply

    def checkTimeouts(self) -> None:
        """
        Close the connection if the oldest command waiting is past its
        deadline (the replies come in order: a late one holds the others).
        Called now and then (the chat cluster: every heartbeat).
        """
        if self._waiting and self.connected:
            deadline = self._waiting[0][1]
            if deadline is not None and self.clock.seconds() > deadline:
                self._failWaiting(Failure(RedisTimeout("Redis did not answer in time")))
                self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        try:
            while True:
                reply = reader.gets()
                if reply is False:
                    return
                if not waiting:
                    raise hiredis.ProtocolError("a reply to no command")
                deferred = waiting.popleft()[0]
                if isinstance(reply, hiredis.ReplyError):
                    deferred.errback(RedisError(str(reply)))
                else:
                    deferred.callback(reply)
        except hiredis.ProtocolError as e:
            self._failWaiting(Failure(RedisError(f"protocol error: {e}")))
            self.transport.abortConnection()

    def whenLost(self) -> Deferred:
        """
        @return: a L{Deferred} that fires with this protocol when the
            connection closes.
        """
        lost = Deferred()
        if self.connected or self.transport is None:
            self._lost.append(lost)
        else:
            lost.callback(self)
        return lost

    def _failWaiting(self, failure: Failure) -> None:
        waiting, self._waiting = self._waiting, deque()
        for deferred, _ in waiting:
            deferred.errback(failure)

    def connectionLost(self, reason: Failure = None) -> None:
        self.connected = False
        self._failWaiting(Failure(ConnectionLost("lost the connection to Redis")))
        lost, self._lost = self._lost, []
        for deferred in lost:
            deferred.callback(self)


class RedisConnectionFactory(Factory):
    """
    Makes L{RedisConnection}s on C{clock}, whose commands have C{timeout}
    seconds to be answered.
    """

    noisy = False

    def __init__(self, clock, timeout: float | None = None) -> None:
        self.clock = clock
        self.timeout = timeout

    def buildProtocol(self, addr) -> RedisConnection:
        protocol = RedisConnection(self.clock, self.timeout)
        protocol.factory = self
        return protocol
