# -*- test-case-name: tests.info.test_client -*-
"""
The client side of tcp-info and udp-info: ask a server what it sees of us.

Every function returns a L{Sighting} or fails with L{InfoError}, whose
message is one line for the user.
"""

from __future__ import annotations

import os
import socket

from twisted.internet import defer, error
from twisted.internet.endpoints import connectProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol

from netservices._common.addresses import joinHostPort
from netservices._common.client import (
    ClientError,
    connectionFailure,
    resolveDatagramTarget,
    streamEndpoint,
)
from netservices.info import stun
from netservices.info.wire import Sighting, makeQuery, parseAnswer

#: An answer is one short line; anything longer is not from our server.
MAX_ANSWER = 4096

#: The server could not be asked; the message says why, in one line.  The
#: same class as the shared helpers' L{ClientError}, so that everything
#: here, including L{tlsOptions}, fails with it.
InfoError = ClientError


class _AnswerCollector(Protocol):
    """
    Collects what a tcp-info server sends until it closes the connection.
    """

    def __init__(self) -> None:
        self.received = b""
        self.tooLong = False
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        if self.tooLong:
            return
        self.received += data
        if len(self.received) > MAX_ANSWER:
            self.tooLong = True
            self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        if self.tooLong:
            self.done.errback(ValueError(f"its answer is longer than {MAX_ANSWER} bytes"))
        elif reason.check(error.ConnectionDone, error.ConnectionLost) and self.received:
            self.done.callback(self.received)
        else:
            self.done.errback(reason)


async def askTCP(
    reactor,
    host: str,
    port: int,
    timeout: float,
    tls: bool = False,
    caFile: str | None = None,
    serverName: str | None = None,
) -> Sighting:
    """
    Connect to a tcp-info server and read its answer.

    @param timeout: seconds for connecting and reading, together.
    @param serverName: the name to verify the certificate against; C{host}
        by default.
    """
    where = joinHostPort(host, port)
    endpoint = streamEndpoint(reactor, host, port, timeout, tls, caFile, serverName)
    collector = _AnswerCollector()
    attempt = connectProtocol(endpoint, collector)
    attempt.addCallback(lambda _: collector.done)
    attempt.addTimeout(timeout, reactor)
    try:
        data = await attempt
    except defer.TimeoutError:
        raise InfoError(f"no answer from {where} within {timeout:g} s")
    except (error.ConnectionDone, error.ConnectionLost):
        raise InfoError(f"{where} closed the connection without answering")
    except ValueError as e:
        raise InfoError(f"{where} is not a tcp-info server: {e}")
    except Exception as e:
        raise InfoError(connectionFailure(e, host, where))
    try:
        return parseAnswer(data)
    except ValueError as e:
        raise InfoError(f"{where} is not a tcp-info server: {e}")


class _DatagramExchange(DatagramProtocol):
    """
    Sends a query to one address and waits for an answer from it.
    """

    def __init__(self, reactor, accept) -> None:
        """
        @param accept: returns the result for an answer, or raises
            L{ValueError} to ignore it.
        """
        self.reactor = reactor
        self.accept = accept
        self.waiting: defer.Deferred | None = None

    def _fire(self, method, result) -> None:
        # Later, not from inside the port's doRead: the waiter may stop
        # the port.
        waiting, self.waiting = self.waiting, None
        self.reactor.callLater(0, getattr(waiting, method), result)

    def datagramReceived(self, data: bytes, addr) -> None:
        if self.waiting is None:
            return
        try:
            result = self.accept(data)
        except ValueError:
            return
        self._fire("callback", result)

    def connectionRefused(self) -> None:
        if self.waiting is not None:
            self._fire("errback", error.ConnectionRefusedError())

    def stopProtocol(self) -> None:
        # Twisted's epoll reactor closes a connected UDP port when an ICMP
        # error arrives (EPOLLERR) instead of calling connectionRefused.
        if self.waiting is not None:
            self._fire("errback", error.ConnectionRefusedError())


async def _exchange(
    reactor, host: str, port: int, query: bytes, accept, timeout: float, retries: int
):
    family, ip = await resolveDatagramTarget(host, port)
    where = joinHostPort(host, port)
    exchange = _DatagramExchange(reactor, accept)
    udpPort = reactor.listenUDP(0, exchange, interface="::" if family == socket.AF_INET6 else "")
    try:
        # Connected: only the server's answers get through, and ICMP "port
        # unreachable" is reported.
        udpPort.connect(ip, port)
        for attempt in range(retries + 1):
            if not udpPort.connected:
                raise InfoError(f"{where}: port unreachable (is the server running?)")
            exchange.waiting = waiting = defer.Deferred()
            waiting.addTimeout(timeout, reactor)
            udpPort.write(query)
            try:
                return await waiting
            except defer.TimeoutError:
                continue
            except error.ConnectionRefusedError:
                raise InfoError(f"{where}: port unreachable (is the server running?)")
        raise InfoError(
            f"no answer from {where} after {retries + 1} tries of {timeout:g} s"
        )
    except OSError as e:
        raise InfoError(f"{where}: {e.strerror or e}")
    finally:
        exchange.waiting = None
        if udpPort.connected:
            await defer.maybeDeferred(udpPort.stopListening)


async def askUDP(
    reactor, host: str, port: int, timeout: float, retries: int, wantJSON: bool = False
) -> Sighting:
    """
    Ask a udp-info server, with a query padded so that it may answer.

    @param timeout: seconds to wait for each try.
    @param retries: tries after the first.
    """

    def accept(data: bytes) -> Sighting:
        return parseAnswer(data)

    return await _exchange(reactor, host, port, makeQuery(wantJSON), accept, timeout, retries)


async def askSTUN(
    reactor, host: str, port: int, timeout: float, retries: int
) -> Sighting:
    """
    Ask any STUN server (RFC 8489 Binding) for our mapped address.
    """
    transactionID = os.urandom(12)

    def accept(data: bytes) -> tuple[str, int]:
        return stun.parseBindingResponse(data, transactionID)

    mappedHost, mappedPort = await _exchange(
        reactor, host, port, stun.bindingRequest(transactionID), accept, timeout, retries
    )
    return Sighting(
        transport="stun", ip=mappedHost, port=mappedPort, localIP=host, localPort=port
    )
