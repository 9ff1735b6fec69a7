# -*- test-case-name: tests.threaded.test_protocol -*-
"""
The threaded service's protocol: requests read line by line (pipelined:
a client need not wait for a reply before sending the next request), each
submitted to the L{netservices.threaded.pool.BoundedPool}, each reply
written as soon as its request ends, with its id, so replies come out of
order.

A connection has at most C{maxInFlight} requests in the pool; beyond that
the answer is C{BUSY client-limit}.  A client that does not read its
replies is not read from until it does (the protocol is its transport's
producer), so unread replies cannot pile up without bound.

Each request admitted to the pool is logged when a thread starts it and
when it ends, with its thread's name and the times in the queue and in the
handler as fields (C{client}, C{id}, C{handler}, C{thread}, C{outcome},
C{queue_ms}, C{handler_ms}, and the server's own timestamps C{submitted},
C{started}, C{ended}).  Replies that refuse (BUSY, bad requests) are
counted and logged at a bounded rate (L{netservices._common.logs.RefusalLog}).
"""

from __future__ import annotations

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from netservices._common.eager import PausesReading, setNoDelay
from netservices._common.limits import peerDescription
from netservices._common.logs import RefusalLog
from netservices.threaded.handlers import Handler
from netservices.threaded.pool import BoundedPool, HandlerError, Outcome
from netservices.threaded.wire import (
    BUSY,
    ERROR,
    MAX_LINE,
    NO_ID,
    OK,
    TIMEOUT,
    LineSplitter,
    Reply,
    WireError,
    formatReply,
    parseRequest,
)

#: The longest reply line, in bytes; longer results are answered
#: C{ERROR result-too-long}.
MAX_REPLY = 1 << 20

#: Requests one connection may have in the pool at once, by default.
MAX_IN_FLIGHT = 32


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class ThreadedProtocol(PausesReading, Protocol):
    """
    Serves one connection (see the module's documentation).

    @ivar inFlight: ids of this connection's requests in the pool.
    """

    factory: ThreadedFactory
    _draining = False

    def connectionMade(self) -> None:
        setNoDelay(self.transport)
        self.transport.registerProducer(self, True)
        self._open = True
        self._splitter = LineSplitter(self.factory.maxLine)
        self.inFlight: set[str] = set()
        self.peer = peerDescription(self.transport.getPeer())
        self.factory.counts["connections"] += 1

    def dataReceived(self, data: bytes) -> None:
        for line in self._splitter.feed(data):
            if line is LineSplitter.TOO_LONG:
                self._refuse(
                    Reply(NO_ID, ERROR, f"line-too-long the limit is {self.factory.maxLine} bytes")
                )
            else:
                self._lineReceived(line)

    def _lineReceived(self, line: bytes) -> None:
        factory = self.factory
        try:
            request = parseRequest(line)
        except WireError as e:
            self._refuse(Reply(e.id, ERROR, f"bad-request {e}"))
            return
        id = request.id
        if id in self.inFlight:
            self._refuse(Reply(id, ERROR, "duplicate-id a request with this id is in flight"))
            return
        handler = factory.handlers.get(request.handler)
        if handler is None:
            self._refuse(Reply(id, ERROR, f"unknown-handler {request.handler}"))
            return
        why = handler.checkArguments(request.args)
        if why is not None:
            self._refuse(Reply(id, ERROR, f"bad-arguments {why}"))
            return
        if handler.inline:
            self._inline(id, handler, request.args)
            return
        if len(self.inFlight) >= factory.maxInFlight:
            self._refuse(Reply(id, BUSY, "client-limit"))
            return
        self.inFlight.add(id)
        submitted = factory.pool.submit(
            handler.function, request.args, lambda outcome: self._started(id, handler, outcome)
        )
        submitted.addCallback(self._ended, id, handler)

    def _inline(self, id: str, handler: Handler, args) -> None:
        try:
            self._reply(Reply(id, OK, handler.function(*args)))
        except HandlerError as e:
            self._reply(Reply(id, ERROR, f"bad-arguments {e}"))
        except Exception as e:
            self._reply(Reply(id, ERROR, f"failed {type(e).__name__}: {' '.join(str(e).split())}"))

    def _started(self, id: str, handler: Handler, outcome: Outcome) -> None:
        self.factory.log.info(
            "request {id} ({handler}) from {client} started on {thread} after"
            " {queue_ms} ms in queue",
            id=id,
            handler=handler.name,
            client=self.peer,
            thread=outcome.thread,
            queue_ms=_ms(outcome.queueTime),
            submitted=outcome.submitted,
            started=outcome.started,
        )

    def drain(self) -> None:
        """
        The service is stopping: close the connection once the requests in
        flight have been answered (new ones are answered C{BUSY stopping}
        by the pool).
        """
        self._draining = True
        self._closeIfDrained()

    def _closeIfDrained(self) -> None:
        if self._draining and not self.inFlight and self._open:
            self.transport.loseConnection()

    def _ended(self, outcome: Outcome, id: str, handler: Handler) -> None:
        self.inFlight.discard(id)
        if outcome.kind == BUSY:
            self._refuse(Reply(id, BUSY, outcome.text))
            self._closeIfDrained()
            return
        if outcome.kind == TIMEOUT:
            format = (
                "request {id} ({handler}) from {client}: {outcome} after"
                " {queue_ms} ms in queue (on {thread}: still running)"
                if outcome.started is not None
                else "request {id} ({handler}) from {client}: {outcome} in the queue"
            )
        else:
            format = (
                "request {id} ({handler}) from {client}: {outcome} on {thread},"
                " {queue_ms} ms in queue, {handler_ms} ms in handler"
            )
        self.factory.log.info(
            format,
            id=id,
            handler=handler.name,
            client=self.peer,
            outcome=outcome.kind,
            thread=outcome.thread or None,
            queue_ms=_ms(outcome.queueTime),
            handler_ms=_ms(outcome.handlerTime),
            submitted=outcome.submitted,
            started=outcome.started,
            ended=outcome.ended,
        )
        self._reply(Reply(id, outcome.kind, outcome.text))
        self._closeIfDrained()

    def _refuse(self, reply: Reply) -> None:
        self.factory.refusals.refuse(
            reply.reason, self.peer, id=reply.id
        )
        self._reply(reply)

    def _reply(self, reply: Reply) -> None:
        if not self._open:
            return
        line = formatReply(reply)
        if len(line) > MAX_REPLY:
            line = formatReply(
                Reply(reply.id, ERROR, f"result-too-long {len(line):,} bytes; at most {MAX_REPLY:,}")
            )
        self.transport.write(line)

    def connectionLost(self, reason) -> None:
        self._open = False


class ThreadedFactory(Factory):
    """
    Makes L{ThreadedProtocol}s that share one pool and one set of handlers.

    @ivar counts: C{connections} served.
    """

    protocol = ThreadedProtocol
    noisy = False

    def __init__(
        self,
        pool: BoundedPool,
        handlers: dict[str, Handler],
        log: Logger | None = None,
        refusals: RefusalLog | None = None,
        maxInFlight: int = MAX_IN_FLIGHT,
        maxLine: int = MAX_LINE,
    ) -> None:
        self.pool = pool
        self.handlers = handlers
        self.log = log or Logger(namespace="netservices.threaded")
        self.refusals = refusals or RefusalLog(self.log, pool.reactor, "request")
        self.maxInFlight = maxInFlight
        self.maxLine = maxLine
        self.counts = {"connections": 0}
