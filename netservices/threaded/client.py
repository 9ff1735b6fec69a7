# -*- test-case-name: tests.threaded.test_client -*-
"""
The client side of the threaded service: one request (L{requestOnce}), or
a load run (L{loadRun}): C{concurrency} connections, each sending the same
request again as soon as its last reply is in, until C{count} requests have
been answered; it measures throughput, latency percentiles, and counts
replies by kind.
"""

from __future__ import annotations

import itertools

import attrs
from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol

from netservices._common.addresses import joinHostPort
from netservices._common.client import ClientError, connectStream
from netservices._common.eager import setNoDelay
from netservices.threaded.pool import percentile
from netservices.threaded.wire import (
    KINDS,
    OK,
    LineSplitter,
    Reply,
    Request,
    WireError,
    formatRequest,
    parseReply,
)

#: The longest reply line accepted, in bytes.
MAX_REPLY_LINE = (1 << 20) + 1024


class RequestStream(Protocol):
    """
    One connection to a threaded server: requests sent with L{request},
    replies matched to them by id, in whatever order they come.

    @ivar ready: fires when connected (with TLS, after the handshake).
    """

    def __init__(self, tls: bool = False) -> None:
        self._tls = tls
        self.ready: Deferred = Deferred()
        self._splitter = LineSplitter(MAX_REPLY_LINE)
        self._waiting: dict[str, Deferred] = {}
        self._ids = itertools.count(1)
        self.lostReason = None

    def connectionMade(self) -> None:
        setNoDelay(self.transport)
        if not self._tls:
            self.ready.callback(self)

    def handshakeCompleted(self) -> None:
        if not self.transport.disconnecting and not self.ready.called:
            self.ready.callback(self)

    def request(self, handler: str, args=()) -> Deferred:
        """
        Send a request.

        @return: a L{Deferred} firing with its L{Reply}, or failing with the
            reason the connection was lost, or L{WireError} if the server
            sent something that is not a reply.
        """
        if self.lostReason is not None:
            return defer.fail(self.lostReason)
        id = str(next(self._ids))
        waiting: Deferred = Deferred()
        self._waiting[id] = waiting
        self.transport.write(formatRequest(Request(id, handler, tuple(args))))
        return waiting

    def dataReceived(self, data: bytes) -> None:
        for line in self._splitter.feed(data):
            try:
                if line is LineSplitter.TOO_LONG:
                    raise WireError("a reply line is too long")
                reply = parseReply(line)
            except WireError as e:
                self._failAll(e)
                self.transport.abortConnection()
                return
            waiting = self._waiting.pop(reply.id, None)
            if waiting is None and reply.id == "*" and len(self._waiting) == 1:
                # The server could not read the id of our only request.
                waiting = self._waiting.popitem()[1]
            if waiting is not None:
                waiting.callback(reply)

    def _failAll(self, reason) -> None:
        waiting, self._waiting = self._waiting, {}
        for each in waiting.values():
            each.errback(reason)

    def connectionLost(self, reason) -> None:
        self.lostReason = reason
        if not self.ready.called:
            self.ready.errback(reason)
        self._failAll(reason)


async def connect(
    reactor,
    host: str,
    port: int,
    timeout: float,
    tls: bool = False,
    caFile: str | None = None,
    serverName: str | None = None,
) -> RequestStream:
    """
    Connect to a threaded server.

    @raise ClientError: if that fails.
    """
    stream = RequestStream(tls)
    return await connectStream(
        reactor, host, port, timeout, stream, stream.ready, tls, caFile, serverName
    )


async def ask(reactor, stream: RequestStream, where: str, handler: str, args, timeout: float) -> Reply:
    """
    Send one request on C{stream} and wait for its reply.

    @raise ClientError: if no reply comes within C{timeout} seconds or the
        connection fails.
    """
    waiting = stream.request(handler, args)
    waiting.addTimeout(timeout, reactor)
    try:
        return await waiting
    except defer.TimeoutError:
        raise ClientError(f"no reply from {where} within {timeout:g} s")
    except (error.ConnectionDone, error.ConnectionLost):
        raise ClientError(f"{where} closed the connection")
    except WireError as e:
        raise ClientError(f"{where}: {e}")


def _hangUp(stream: RequestStream) -> None:
    if stream.transport is not None and stream.lostReason is None:
        stream.transport.abortConnection()


async def requestOnce(
    reactor,
    host: str,
    port: int,
    handler: str,
    args=(),
    timeout: float = 60.0,
    tls: bool = False,
    caFile: str | None = None,
    serverName: str | None = None,
) -> tuple[Reply, float]:
    """
    Connect, send one request, and return its reply and round-trip time in
    seconds (from sending to the reply).

    @raise ClientError: if it cannot be done.
    """
    where = joinHostPort(host, port)
    stream = await connect(reactor, host, port, timeout, tls, caFile, serverName)
    try:
        sentAt = reactor.seconds()
        reply = await ask(reactor, stream, where, handler, args, timeout)
        return reply, reactor.seconds() - sentAt
    finally:
        _hangUp(stream)


@attrs.define
class LoadResult:
    """
    What a load run measured.

    @ivar latencies: each answered request's round trip, in seconds.
    @ivar kinds: replies by kind.
    @ivar reasons: ERROR and BUSY replies by reason.
    @ivar duration: seconds from the first request sent to the last reply.
    """

    concurrency: int
    latencies: list[float] = attrs.Factory(list)
    kinds: dict[str, int] = attrs.Factory(lambda: {kind: 0 for kind in KINDS})
    reasons: dict[str, int] = attrs.Factory(dict)
    duration: float = 0.0

    @property
    def answered(self) -> int:
        """
        Requests answered.
        """
        return sum(self.kinds.values())

    @property
    def ok(self) -> bool:
        """
        Whether every reply was OK.
        """
        return self.kinds[OK] == self.answered

    def asDict(self) -> dict:
        """
        @return: the result as JSON-ready data; times in milliseconds.
        """
        ms = lambda seconds: round(seconds * 1000, 3)  # noqa: E731
        return {
            "requests": self.answered,
            "concurrency": self.concurrency,
            "seconds": round(self.duration, 6),
            "per_second": round(self.answered / self.duration, 1) if self.duration else 0.0,
            "latency_ms": {
                "p50": ms(percentile(self.latencies, 0.50)),
                "p90": ms(percentile(self.latencies, 0.90)),
                "p99": ms(percentile(self.latencies, 0.99)),
                "max": ms(max(self.latencies, default=0.0)),
            },
            "replies": dict(self.kinds),
            "reasons": dict(sorted(self.reasons.items())),
        }


def describeLoad(summary: dict) -> str:
    """
    @return: the summary of a load run (L{LoadResult.asDict}) as lines for
        people.
    """
    latency = summary["latency_ms"]
    replies = " ".join(f"{kind}={count}" for kind, count in summary["replies"].items())
    reasons = " ".join(f"{reason}={count}" for reason, count in summary["reasons"].items())
    return "\n".join(
        [
            f"{summary['requests']} requests in {summary['seconds']:.3f} s over"
            f" {summary['concurrency']} connections: {summary['per_second']:.1f} requests/s",
            f"replies: {replies}" + (f" ({reasons})" if reasons else ""),
            f"latency ms: p50={latency['p50']:.2f} p90={latency['p90']:.2f}"
            f" p99={latency['p99']:.2f} max={latency['max']:.2f}",
        ]
    )


async def loadRun(
    reactor,
    host: str,
    port: int,
    handler: str,
    args=(),
    concurrency: int = 10,
    count: int = 100,
    timeout: float = 60.0,
    tls: bool = False,
    caFile: str | None = None,
    serverName: str | None = None,
) -> LoadResult:
    """
    Send C{count} requests over C{concurrency} connections, one in flight
    on each (see the module's documentation).

    @raise ClientError: if a connection fails or a reply does not come
        within C{timeout} seconds.
    """
    where = joinHostPort(host, port)
    result = LoadResult(concurrency)
    connections = min(concurrency, count)
    streams: list[RequestStream] = []
    try:
        attempts = [
            Deferred.fromCoroutine(
                connect(reactor, host, port, timeout, tls, caFile, serverName)
            )
            for _ in range(connections)
        ]
        outcomes = await defer.DeferredList(attempts, consumeErrors=True)
        streams = [stream for ok, stream in outcomes if ok]
        for ok, failure in outcomes:
            if not ok:
                failure.raiseException()
        left = [count]

        async def work(stream: RequestStream) -> None:
            while left[0] > 0:
                left[0] -= 1
                sentAt = reactor.seconds()
                reply = await ask(reactor, stream, where, handler, args, timeout)
                result.latencies.append(reactor.seconds() - sentAt)
                result.kinds[reply.kind] += 1
                if reply.reason:
                    result.reasons[reply.reason] = result.reasons.get(reply.reason, 0) + 1

        startedAt = reactor.seconds()
        await defer.gatherResults(
            [Deferred.fromCoroutine(work(stream)) for stream in streams],
            consumeErrors=True,
        ).addErrback(lambda f: f.value.subFailure.raiseException())
        result.duration = reactor.seconds() - startedAt
        return result
    finally:
        for stream in streams:
            _hangUp(stream)
