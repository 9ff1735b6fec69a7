# -*- test-case-name: tests.multicast.test_protocol -*-
"""
The multicast node: what C{twistd netservices multicast} runs on each of
its sockets.  It prints and counts every datagram that arrives (sender,
group, port, interface, received TTL / hop limit, size) and answers the
probes of C{netservices mcast ping}: by unicast, never with more bytes than
the probe had, at a bounded rate per sender (the UDP policy's limiter).
"""

from __future__ import annotations

import socket
from collections import Counter

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from netservices._common.addresses import joinHostPort
from netservices._common.datagram import DatagramInfo
from netservices._common.udp import DatagramGuard
from netservices.multicast import wire
from netservices.multicast.stats import StreamStats


def interfaceName(index: int | None) -> str:
    """
    @return: the name of interface C{index}, or its number if unknown.
    """
    if index is None:
        return "?"
    try:
        return socket.if_indextoname(index)
    except OSError:
        return str(index)



#: How many (source, group, port) counters a node keeps; datagrams of
#: further sources are refused (counted as C{table-full}).
MAX_TABLE = 10000

class NodeState:
    """
    What all the sockets of one node share.

    @ivar id: this node's sender id (in probe replies).
    @ivar counts: datagrams and bytes per C{(source host, group, port)}, for
        at most L{MAX_TABLE} of them.
    @ivar totals: datagrams by kind (C{data}, C{final}, C{probe},
        C{foreign}, ...) and C{replies} sent.
    @ivar streams: the sequence numbers of each sender's session to each
        group and port (for at most L{MAX_TABLE} of them), for loss.
    """

    def __init__(self, guard: DatagramGuard, codec: wire.Codec, log: Logger, quiet: bool = False) -> None:
        self.guard = guard
        self.codec = codec
        self.log = log
        self.quiet = quiet
        self.id = wire.newId()
        self.counts: dict[tuple[str, str, int], list[int]] = {}
        self.totals: Counter[str] = Counter()
        self.streams: dict[tuple, StreamStats] = {}

    def track(self, source: str, message: wire.Message, group: str, port: int) -> None:
        """
        Follow the sequence numbers of a data or final record, so that
        datagrams lost on the way to each group are known.
        """
        key = (source, message.sender, message.session, group, port)
        stats = self.streams.get(key)
        if stats is None:
            if len(self.streams) >= MAX_TABLE:
                return
            stats = self.streams[key] = StreamStats()
        if message.kind == wire.DATA:
            # Only the loss is wanted here: no times.
            stats.add(message.sequence, 0, 0.0, 0.0)
        else:
            stats.finish(message.sequence)

    def lostByGroup(self) -> dict[tuple[str, str], int]:
        """
        @return: datagrams missing from the senders' sequences, summed by
            C{(group, port)}.
        """
        lost: dict[tuple[str, str], int] = {}
        for (_, _, _, group, port), stats in self.streams.items():
            key = (group, str(port))
            lost[key] = lost.get(key, 0) + stats.lost
        return lost

    def logTotals(self) -> None:
        """
        Log the counters, as the service does when it stops.
        """
        for (source, group, port), (n, size) in sorted(self.counts.items()):
            self.log.info(
                "from {source} to {group} port {port}: datagrams={n} bytes={size}",
                source=source, group=group, port=port, n=n, size=size,
            )
        self.log.info(
            "datagrams {summary}",
            summary=" ".join(f"{k}={v}" for k, v in sorted(self.totals.items())) or "none",
            totals=dict(self.totals),
        )
        self.guard.refusals.logTotals()


class MulticastNodeProtocol(DatagramProtocol):
    """
    Serves one socket of the node (one family and port).
    """

    noisy = False

    def __init__(self, state: NodeState, port: int) -> None:
        self.state = state
        self.port = port

    def datagramReceived(self, data: bytes, addr) -> None:
        self.datagramReceivedWithInfo(data, addr, DatagramInfo.unknown())

    def datagramReceivedWithInfo(self, data: bytes, addr, info: DatagramInfo) -> None:
        """
        Print, count, and answer a probe.
        """
        state = self.state
        peer = joinHostPort(*addr)
        if info.truncated:
            state.guard.refusals.refuse("truncated", peer, size=len(data))
            state.totals["truncated"] += 1
            return
        try:
            message = state.codec.parse(data)
        except wire.WireError as e:
            kind = e.reason
            message = None
        else:
            kind = wire.KINDS[message.kind]
        if kind in ("forged", "replayed", "unauthenticated"):
            state.totals[kind] += 1
            state.guard.refusals.refuse(kind, peer, size=len(data))
            return
        state.totals[kind] += 1
        group = info.destination or "?"
        key = (addr[0], group, self.port)
        counts = state.counts.get(key)
        if counts is None:
            if len(state.counts) >= MAX_TABLE:
                # Sources can be forged: the table must not grow with them.
                state.totals["table-full"] += 1
                state.guard.refusals.refuse("table-full", peer, size=len(data))
                return
            counts = state.counts[key] = [0, 0]
        counts[0] += 1
        counts[1] += len(data)
        if not state.quiet:
            state.log.info(
                "{kind} from {peer} to {group} port {port} on {interface} ttl {ttl}"
                " size {size}",
                kind=kind, peer=peer, group=group, port=self.port,
                interface=interfaceName(info.interfaceIndex), ttl=info.ttl,
                size=len(data), source=addr[0], sourcePort=addr[1],
            )
        if message is not None:
            if message.kind in (wire.DATA, wire.FINAL):
                state.track(addr[0], message, group, self.port)
            elif message.kind == wire.PROBE:
                self.answer(message, data, addr, info)

    def answer(self, probe: wire.Message, data: bytes, addr, info: DatagramInfo) -> None:
        """
        Answer a probe by unicast, if it is at least as long as the answer
        and the source passes the UDP policy and its rate limit.
        """
        guard = self.state.guard
        peer = joinHostPort(*addr)
        # The destination was a group on purpose: only the source is checked.
        reason = guard.check(addr[0], addr[1], DatagramInfo.unknown())
        reply = self.state.codec.encode(
            wire.REPLY, self.state.id, probe.session, probe.sequence, probe.sent
        )
        if reason is None and len(reply) > len(data):
            reason = "probe-shorter-than-reply"
        if reason is not None:
            guard.refusals.refuse(reason, peer, size=len(data))
            return
        limited = guard.limiter.check(addr[0])
        if limited is not None:
            guard.refusals.refuse(limited, peer)
            return
        try:
            self.transport.write(reply, addr)
        except OSError as e:
            guard.refusals.refuse("send-failed", peer, error=str(e))
            return
        self.state.totals["replies"] += 1
