# -*- test-case-name: tests._common.test_limits -*-
"""
Connection limits for stream services: a global cap, a cap per peer and an
idle timeout measured on inbound data only.

Twisted's C{LimitConnectionsByPeer} cannot be used (it indexes address
objects; twisted/twisted#12183) and C{TimeoutFactory} resets its timer on
writes too, so a peer that never sends but keeps reading would never time
out.  L{LimitingFactory} does both jobs in one wrapper.

The peer is read in C{makeConnection}, not C{buildProtocol}: behind a PROXY
header (see L{netservices._common.proxy}) that is the first moment the real
client address is known.
"""

from __future__ import annotations

from typing import Callable

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import directlyProvides, implementer, providedBy

from netservices._common.addresses import joinHostPort, prefixKey
from netservices._common.logs import RefusalLog


@attrs.frozen
class ConnectionLimits:
    """
    Limits for the connections of one service.

    @ivar maxConnections: connections open at once over all listeners
        (0: unlimited).
    @ivar maxPerPeer: connections open at once from one IPv4 address or one
        IPv6 /64 (0: unlimited).
    @ivar idleTimeout: seconds without inbound data before a connection is
        aborted (0: never).
    """

    maxConnections: int = 1000
    maxPerPeer: int = 10
    idleTimeout: float = 300.0


def peerDescription(address: object) -> str:
    """
    @return: C{address} as text for logs: C{host:port} for IP addresses.
    """
    if isinstance(address, (IPv4Address, IPv6Address)):
        return joinHostPort(address.host, address.port)
    name = getattr(address, "name", None)
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return f"unix:{name}" if name is not None else str(address)


def peerKey(address: object) -> str | None:
    """
    @return: what the per-peer limit counts: the IPv4 address or the IPv6
        /64 of C{address}; L{None} for addresses without a host (UNIX
        sockets), which only the global limit applies to.
    """
    if isinstance(address, (IPv4Address, IPv6Address)):
        return prefixKey(address.host, 32, 64)
    return None


@implementer(IHandshakeListener)
class LimitingProtocol(ProtocolWrapper):
    """
    Admits or refuses one connection when it is made, and is aborted by its
    factory after C{idleTimeout} seconds without inbound data.  It stands
    between the transport and the wrapped protocol on the way in only: the
    wrapped protocol gets the transport itself.

    @ivar lastReceived: when data last came from the peer (or the
        connection was admitted).
    """

    factory: LimitingFactory
    _admitted = False
    _key: str | None = None
    lastReceived = 0.0

    def makeConnection(self, transport):
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        peer = transport.getPeer()
        self._key = peerKey(peer)
        reason = self.factory.admit(self._key)
        if reason is not None:
            self.factory.refusals.refuse(reason, peerDescription(peer))
            message = self.factory.refusalMessage(reason)
            if message:
                transport.write(message)
            transport.loseConnection()
            return
        self._admitted = True
        self._now = self.factory.clock.seconds
        self.factory.watch(self)
        # The wrapped protocol writes to the real transport: this wrapper
        # only needs to see what comes in, and a layer less on every write
        # is measurable (benchmarks/).
        self.wrappedProtocol.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        if self._admitted:
            self.lastReceived = self._now()
            self.wrappedProtocol.dataReceived(data)

    def handshakeCompleted(self) -> None:
        # The TLS layer tells the protocol it wraps, this one: pass it on.
        if self._admitted and IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def connectionLost(self, reason):
        self.factory.unregisterProtocol(self)
        if self._admitted:
            self._admitted = False
            self.factory.release(self._key, self)
            self.wrappedProtocol.connectionLost(reason)
        self.wrappedProtocol = None

    def idle(self) -> None:
        """
        Abort the connection: nothing came from the peer for too long.
        """
        self.factory.refusals.refuse(
            "idle-timeout", peerDescription(self.transport.getPeer())
        )
        self.transport.abortConnection()


class LimitingFactory(WrappingFactory):
    """
    Wraps a service's factory to enforce L{ConnectionLimits}.  One instance
    serves all of a service's listeners, so the global limit is global.

    Idle connections are found with one timer for all of them, not one
    per connection (a C{DelayedCall} costs about 0.5 KiB, and resetting it
    on every read costs time): each connection only notes when data last
    came, and the timer, set for the earliest deadline, checks them all.

    @ivar open: connections admitted and still open.
    @ivar accepted: connections admitted so far.
    @ivar draining: whether L{drain} was called: connections are refused
        (C{stopping}).
    @ivar perPeer: open connections by L{peerKey}; keys are removed when their
        count drops to zero, so the table never outgrows C{open}.
    """

    protocol = LimitingProtocol
    noisy = False

    def __init__(
        self,
        wrappedFactory: Factory,
        limits: ConnectionLimits,
        clock: IReactorTime,
        refusals: RefusalLog | None = None,
        refusalMessage: Callable[[str], bytes] = lambda reason: b"",
    ) -> None:
        """
        @param refusalMessage: what to send a refused client before closing,
            given the reason; empty for nothing.
        """
        super().__init__(wrappedFactory)
        self.limits = limits
        self.clock = clock
        self.refusals = refusals or RefusalLog(
            Logger(namespace="netservices.limits"), clock, "connection"
        )
        self.refusalMessage = refusalMessage
        self.open = 0
        self.accepted = 0
        self.draining = False
        self._drainWaiters: list[Deferred] = []
        self.perPeer: dict[str, int] = {}
        self._watched: set[LimitingProtocol] = set()
        self._idleCall: IDelayedCall | None = None

    def admit(self, key: str | None) -> str | None:
        """
        Count a new connection from C{key} if the limits allow it.

        @return: L{None} when admitted, else the refusal reason.
        """
        limits = self.limits
        if self.draining:
            return "stopping"
        if limits.maxConnections and self.open >= limits.maxConnections:
            return "max-connections"
        if key is not None and limits.maxPerPeer:
            if self.perPeer.get(key, 0) >= limits.maxPerPeer:
                return "max-per-peer"
            self.perPeer[key] = self.perPeer.get(key, 0) + 1
        self.open += 1
        self.accepted += 1
        return None

    def release(self, key: str | None, protocol: LimitingProtocol | None = None) -> None:
        """
        Forget an admitted connection that has closed.
        """
        self.open -= 1
        if key is not None and key in self.perPeer:
            self.perPeer[key] -= 1
            if not self.perPeer[key]:
                del self.perPeer[key]
        if protocol is not None:
            self._watched.discard(protocol)
            if not self._watched and self._idleCall is not None:
                self._idleCall.cancel()
                self._idleCall = None
        if not self.open and self._drainWaiters:
            waiters, self._drainWaiters = self._drainWaiters, []
            for waiter in waiters:
                waiter.callback(None)

    def drain(self) -> Deferred:
        """
        Stop admitting connections and close the open ones once their work
        is done: a wrapped protocol with a C{drain} method is asked to
        (and closes its connection itself when its work is done); the
        others are closed at once, after what was written to them is sent.

        @return: a L{Deferred} firing when no connection is open.
        """
        self.draining = True
        for protocol in list(self.protocols):
            if protocol._admitted:
                drain = getattr(protocol.wrappedProtocol, "drain", None)
                if drain is not None:
                    drain()
                else:
                    protocol.transport.loseConnection()
        if not self.open:
            return succeed(None)
        waiter: Deferred = Deferred()
        self._drainWaiters.append(waiter)
        return waiter

    def watch(self, protocol: LimitingProtocol) -> None:
        """
        Start watching an admitted connection for idleness.
        """
        timeout = self.limits.idleTimeout
        if timeout <= 0:
            return
        protocol.lastReceived = self.clock.seconds()
        self._watched.add(protocol)
        if self._idleCall is None:
            self._idleCall = self.clock.callLater(timeout, self._abortIdle)

    def _abortIdle(self) -> None:
        self._idleCall = None
        timeout = self.limits.idleTimeout
        now = self.clock.seconds()
        nextDeadline = float("inf")
        for protocol in list(self._watched):
            deadline = protocol.lastReceived + timeout
            if deadline <= now:
                self._watched.discard(protocol)
                protocol.idle()
            elif deadline < nextDeadline:
                nextDeadline = deadline
        if self._watched:
            # Each check looks at every connection: not more often than
            # 64 times a timeout, however their deadlines are spread.
            delay = max(nextDeadline - now, timeout / 64)
            self._idleCall = self.clock.callLater(delay, self._abortIdle)
