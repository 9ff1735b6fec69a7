# -*- test-case-name: tests.multicast.test_client -*-
"""
The multicast tools behind C{netservices mcast send|recv|ping}.

  - L{MulticastSender}: numbered datagrams to groups at a bounded rate (a
    token bucket), bounded in count and time, then a final record with the
    number sent, so receivers know their exact loss.
  - L{MulticastReceiver}: joins groups and keeps L{StreamStats} per
    (sender, group, port), reporting events (joined, first, gap, interval,
    summary) to a callback.
  - L{MulticastPinger}: probes groups and then each node that answered by
    unicast too, and times both round trips.

Sockets are made synchronously in C{start()}, so a test can make them in
another network namespace by calling C{start()} inside it.
"""

from __future__ import annotations

import errno
import re
import socket
from collections import Counter
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol

from netservices._common.addresses import joinHostPort
from netservices._common.client import ClientError
from netservices._common.datagram import DatagramInfo
from netservices._common.multicast import MulticastError, listenMulticast
from netservices._common.ratelimit import TokenBucket
from netservices.multicast import wire
from netservices.multicast.groups import Group
from netservices.multicast.stats import StreamStats

#: Largest datagram the sender makes (the IPv4 UDP maximum).
MAX_SIZE = wire.MAX_DATAGRAM

#: How often a sender's final record is sent (loss-tolerant).
FINAL_COPIES = 3

_RATE = re.compile(r"^([0-9]*\.?[0-9]+)\s*([kKMG]?)(pps|bps|bit)?$")
_SCALE = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


def parseRate(text: str, size: int) -> float:
    """
    Parse C{--rate}: packets per second (C{100}, C{100pps}, C{2kpps}) or
    bits per second (C{800kbps}, C{1.5Mbit}), counting the UDP payload of
    C{size} bytes per datagram.

    @return: datagrams per second.
    @raise ValueError: with a message fit for the user.
    """
    match = _RATE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r}: expected e.g. 100, 100pps, 2kpps, 800kbps or 1.5Mbit")
    value = float(match.group(1)) * _SCALE[match.group(2)]
    pps = value / (8 * size) if match.group(3) in ("bps", "bit") else value
    if not 0 < pps <= 1e6:
        raise ValueError(f"{text!r}: the rate must be above 0 and at most 1,000,000 datagrams/s")
    return pps


def _family(group: Group) -> int:
    return socket.AF_INET if group.version == 4 else socket.AF_INET6


def _now(clock) -> float:
    return clock.seconds()



#: How many (sender, session, group, port) streams a receiver tracks;
#: datagrams of further streams are refused (counted as C{table-full}).
MAX_STREAMS = 10000

class _Port(DatagramProtocol):
    """
    Hands datagrams (with their info) to a callback, with the port number.
    """

    noisy = False

    def __init__(self, receive: Callable) -> None:
        self.receive = receive

    def datagramReceived(self, data, addr) -> None:
        self.datagramReceivedWithInfo(data, addr, DatagramInfo.unknown())

    def datagramReceivedWithInfo(self, data, addr, info) -> None:
        self.receive(data, addr, info, self.transport.getHost().port)


def _openSenders(clock, groups, ttl, loop, interface, receive=lambda *a: None) -> dict:
    """
    @return: one L{MulticastInfoPort} per family of C{groups}, bound to
        an ephemeral port, with the send options set.
    """
    ports = {}
    for family in {_family(g) for g in groups}:
        port = listenMulticast(clock, 0, _Port(receive), family)
        port.setSendOptions(ttl, loop, interface)
        ports[family] = port
    return ports


def _sendError(error: OSError, group: Group) -> ClientError:
    if error.errno == errno.ENETUNREACH:
        return ClientError(
            f"cannot send to {group.address}: no route to the group (add a multicast"
            " route or name the interface with --interface)"
        )
    return ClientError(f"cannot send to {group.address}: {error.strerror}")


class MulticastSender:
    """
    Sends C{count} data datagrams to each group at C{rate} per second (a
    token bucket of C{burst}), stopping after C{duration} seconds at the
    latest, then L{FINAL_COPIES} final records.

    @ivar sent: data datagrams sent to each group.
    """

    def __init__(
        self,
        clock,
        groups: list[Group],
        rate: float,
        count: int,
        duration: float,
        size: int = 100,
        ttl: int = 1,
        loop: bool = True,
        interface: int = 0,
        codec: wire.Codec | None = None,
        burst: float | None = None,
        ports: dict | None = None,
    ) -> None:
        """
        @param ports: sockets by family, to send through instead of new
            ones (tests).
        """
        self.clock, self.groups, self.rate = clock, groups, rate
        self.ports = ports
        self.count, self.duration, self.size = count, duration, size
        self.ttl, self.loop, self.interface = ttl, loop, interface
        self.codec = codec or wire.Codec()
        # 20 ms worth, at least 2: timers fire late, and a bucket of one
        # would lose the tokens of a late tick.
        self.burst = burst if burst is not None else max(2.0, rate / 50)
        self.id, self.session = wire.newId(), wire.newId()
        self.sent = 0
        self.bytes = 0
        self.errors = 0
        self._done: Deferred | None = None
        self._call = None

    def start(self) -> Deferred:
        """
        Open the sockets and start sending.

        @return: a L{Deferred} firing with a summary dictionary, or failing
            with L{ClientError}.
        """
        try:
            if self.ports is None:
                self.ports = _openSenders(
                    self.clock, self.groups, self.ttl, self.loop, self.interface
                )
        except (OSError, MulticastError) as e:
            raise ClientError(f"cannot open a socket: {getattr(e, 'strerror', None) or e}")
        self.started = _now(self.clock)
        self.bucket = TokenBucket(self.rate, self.burst, self.started)
        done = self._done = Deferred(lambda d: self._finish())
        self._tick()
        return done

    def _write(self, data: bytes, group: Group) -> None:
        try:
            self.ports[_family(group)].write(data, (group.address, group.port))
        except OSError as e:
            if e.errno in (errno.ENOBUFS, errno.EAGAIN):
                self.errors += 1
                return
            raise _sendError(e, group)

    def _tick(self) -> None:
        self._call = None
        now = _now(self.clock)
        try:
            while self.sent < self.count and now - self.started < self.duration:
                if not self.bucket.take(now):
                    break
                sentNs = int(now * 1e9)
                for group in self.groups:
                    data = self.codec.encode(
                        wire.DATA, self.id, self.session, self.sent, sentNs, size=self.size
                    )
                    self._write(data, group)
                    self.bytes += len(data)
                self.sent += 1
        except ClientError as e:
            self._finish(e)
            return
        if self.sent >= self.count or now - self.started >= self.duration:
            self._finish()
            return
        wait = max(0.001, (1 - self.bucket.tokens) / self.rate)
        wait = min(wait, self.started + self.duration - now)
        self._call = self.clock.callLater(max(wait, 0.0), self._tick)

    def _finish(self, error: Exception | None = None) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if error is None:
            final = [
                (self.codec.encode(wire.FINAL, self.id, self.session, self.sent, int(_now(self.clock) * 1e9)), g)
                for g in self.groups
            ]
            for _ in range(FINAL_COPIES):
                for data, group in final:
                    try:
                        self._write(data, group)
                    except ClientError:
                        pass
        for port in self.ports.values():
            port.stopListening()
        done, self._done = self._done, None
        if done is None:
            return
        if error is not None:
            done.errback(error)
        else:
            done.callback(self.summary())

    def summary(self) -> dict:
        """
        @return: what was sent, as a JSON-ready dictionary.
        """
        elapsed = max(0.0, _now(self.clock) - self.started)
        return {
            "event": "sent",
            "sender": f"{self.id:016x}",
            "session": f"{self.session:016x}",
            "groups": [str(g) for g in self.groups],
            "count": self.sent,
            "bytes": self.bytes,
            "errors": self.errors,
            "seconds": round(elapsed, 6),
            "pps": round(self.sent / elapsed, 3) if elapsed else None,
        }


class Stream:
    """
    A receiver's view of one sender's datagrams to one group and port.
    """

    def __init__(self, source: str, sender: int, session: int, group: str, port: int, joinedAt) -> None:
        self.source, self.sender, self.session = source, sender, session
        self.group, self.port = group, port
        self.stats = StreamStats(joinedAt)
        self.ttl: int | None = None
        self.interface: str | None = None

    def describe(self) -> dict:
        """
        @return: identity and statistics, JSON-ready.
        """
        host = f"[{self.group}]" if ":" in self.group else self.group
        return {
            "source": self.source,
            "sender": f"{self.sender:016x}",
            "group": f"{host}:{self.port}",
            "interface": self.interface,
            "ttl": self.ttl,
            **self.stats.summary(),
        }


class MulticastReceiver:
    """
    Joins C{groups} and counts what arrives, until C{duration} seconds
    have passed or, once C{expectSources} streams are known, every known
    stream has sent its final record.

    @ivar streams: L{Stream}s by (sender, session, group, port).
    @ivar refused: datagrams not counted in any stream, by reason.
    """

    def __init__(
        self,
        clock,
        groups: list[Group],
        emit: Callable[[dict], None],
        interfaces: list[tuple[str, int]] = (),
        duration: float = 10.0,
        interval: float = 0.0,
        expectSources: int = 1,
        codec: wire.Codec | None = None,
    ) -> None:
        self.clock, self.groups, self.emit = clock, groups, emit
        self.interfaces = list(interfaces)
        self.duration, self.interval = duration, interval
        self.expectSources = max(1, expectSources)
        self.codec = codec or wire.Codec()
        self.streams: dict[tuple, Stream] = {}
        self.refused: Counter[str] = Counter()
        self.joinedAt: dict[tuple[str, int], float] = {}
        self.interfaceNames: dict[int, str] = {}
        self.ports: list = []
        self._calls: list = []
        self._done: Deferred | None = None

    def start(self) -> Deferred:
        """
        Bind, join, and start counting.

        @return: a L{Deferred} firing with C{self} when done.
        @raise ClientError: if a socket or a join fails.
        """
        bySocket: dict[tuple[int, int], list[Group]] = {}
        for group in self.groups:
            bySocket.setdefault((_family(group), group.port), []).append(group)
        # Names of this network namespace's interfaces, for the reports.
        self.interfaceNames = dict(socket.if_nameindex())
        try:
            for (family, number), groups in bySocket.items():
                port = listenMulticast(self.clock, number, _Port(self._received), family)
                self.ports.append(port)
                for group in groups:
                    for name, index in self.interfaces or [("", 0)]:
                        port.join(group.address, index, group.sources)
                        now = _now(self.clock)
                        self.joinedAt.setdefault((group.address, group.port), now)
                        self.emit({
                            "event": "joined", "group": str(group),
                            "interface": name or None, "time": now,
                        })
        except (OSError, MulticastError) as e:
            self._close()
            raise ClientError(getattr(e, "strerror", None) or str(e))
        self.started = _now(self.clock)
        self._done = Deferred(lambda d: self._finish())
        self._calls.append(self.clock.callLater(self.duration, self._finish))
        if self.interval > 0:
            self._calls.append(self.clock.callLater(self.interval, self._report))
        return self._done

    def _close(self) -> None:
        for port in self.ports:
            port.stopListening()
        self.ports = []

    def _report(self) -> None:
        now = _now(self.clock)
        for stream in self.streams.values():
            self.emit({"event": "interval", "time": now, **stream.describe()})
        self._calls.append(self.clock.callLater(self.interval, self._report))

    def _received(self, data: bytes, addr, info: DatagramInfo, portNumber: int) -> None:
        if info.truncated:
            self.refused["truncated"] += 1
            return
        try:
            message = self.codec.parse(data)
        except wire.WireError as e:
            self.refused[e.reason] += 1
            return
        if message.kind not in (wire.DATA, wire.FINAL):
            self.refused["not-data"] += 1
            return
        group = info.destination or "?"
        key = (message.sender, message.session, group, portNumber)
        stream = self.streams.get(key)
        now = _now(self.clock)
        if stream is None:
            if len(self.streams) >= MAX_STREAMS:
                # Senders can be forged: the table must not grow with them.
                self.refused["table-full"] += 1
                return
            stream = self.streams[key] = Stream(
                addr[0], message.sender, message.session, group, portNumber,
                self.joinedAt.get((group, portNumber)),
            )
        stream.ttl = info.ttl
        stream.interface = self.interfaceNames.get(
            info.interfaceIndex, str(info.interfaceIndex)
        )
        if message.kind == wire.FINAL:
            stream.stats.finish(message.sequence)
            self._checkDone()
            return
        first = stream.stats.received == 0
        highest = stream.stats.highest
        event = stream.stats.add(message.sequence, len(data), message.sent / 1e9, now)
        ident = {"source": joinHostPort(*addr), "sender": f"{message.sender:016x}",
                 "group": stream.describe()["group"]}
        if first:
            delay = stream.stats.firstDelay
            self.emit({"event": "first", **ident, "sequence": message.sequence,
                       "ttl": info.ttl, "delay_ms": None if delay is None else round(delay * 1000, 3)})
        if event == "new-gap":
            self.emit({"event": "gap", **ident, "first": highest + 1, "last": message.sequence - 1})

    def _checkDone(self) -> None:
        senders = {(s.sender, s.session) for s in self.streams.values()}
        if len(senders) >= self.expectSources and all(
            s.stats.finalCount is not None for s in self.streams.values()
        ):
            self._finish()

    def _finish(self) -> None:
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        self._close()
        done, self._done = self._done, None
        if done is not None:
            done.callback(self)

    def check(self, expectCount=None, maxLoss=None, expectSources=None) -> list[str]:
        """
        @return: the expectations not met, in words (empty: all met).
        """
        failures = []
        senders = {(s.sender, s.session) for s in self.streams.values()}
        if expectSources is not None and len(senders) < expectSources:
            failures.append(f"{len(senders)} sources, expected {expectSources}")
        for s in self.streams.values():
            name = f"{s.source} -> {s.describe()['group']}"
            if expectCount is not None and s.stats.received < expectCount:
                failures.append(f"{name}: {s.stats.received} received, expected {expectCount}")
            if maxLoss is not None and s.stats.lossRatio * 100 > maxLoss:
                failures.append(f"{name}: {s.stats.lossRatio * 100:.2f}% lost, at most {maxLoss:g}%")
        if expectCount is not None and not self.streams:
            failures.append("nothing received")
        return failures


class MulticastPinger:
    """
    Sends C{count} probes to each group, one every C{interval} seconds, and
    one by unicast to each node that has answered, then waits C{timeout}
    for the last answers.

    @ivar nodes: per answering node C{(host, port)}: round-trip times of
        C{multicast} and C{unicast} probes, and the node's id.
    """

    def __init__(
        self, clock, groups, count=3, interval=1.0, timeout=1.0, size=100,
        ttl=1, loop=True, interface=0, codec=None, report=lambda event: None,
    ) -> None:
        self.clock, self.groups, self.count = clock, groups, count
        self.interval, self.timeout, self.size = interval, timeout, size
        self.ttl, self.loop, self.interface = ttl, loop, interface
        self.codec = codec or wire.Codec()
        self.report = report
        self.id, self.session = wire.newId(), wire.newId()
        self.sequence = 0
        self.pending: dict[int, tuple[str, object, float]] = {}
        self.nodes: dict[tuple[str, int], dict] = {}
        self.sent = Counter()
        self._calls: list = []
        self._done: Deferred | None = None

    def start(self) -> Deferred:
        """
        @return: a L{Deferred} firing with C{self} when done.
        """
        try:
            self.ports = _openSenders(
                self.clock, self.groups, self.ttl, self.loop, self.interface, self._received
            )
        except (OSError, MulticastError) as e:
            raise ClientError(f"cannot open a socket: {getattr(e, 'strerror', None) or e}")
        done = self._done = Deferred(lambda d: self._finish())
        self._round(0)
        return done

    def _probe(self, how: str, target, family: int, address) -> None:
        seq = self.sequence
        self.sequence += 1
        now = _now(self.clock)
        data = self.codec.encode(wire.PROBE, self.id, self.session, seq, int(now * 1e9), size=self.size)
        self.pending[seq] = (how, target, now)
        try:
            self.ports[family].write(data, address)
            self.sent[how] += 1
        except OSError as e:
            if isinstance(target, Group):
                raise _sendError(e, target)

    def _round(self, n: int) -> None:
        try:
            for group in self.groups:
                self._probe("multicast", group, _family(group), (group.address, group.port))
            for host, port in list(self.nodes):
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                if family in self.ports:
                    self._probe("unicast", (host, port), family, (host, port))
        except ClientError as e:
            self._finish(e)
            return
        if n + 1 < self.count:
            self._calls.append(self.clock.callLater(self.interval, self._round, n + 1))
        else:
            self._calls.append(self.clock.callLater(self.timeout, self._finish))

    def _received(self, data, addr, info, portNumber) -> None:
        try:
            message = self.codec.parse(data)
        except wire.WireError:
            return
        if message.kind != wire.REPLY or message.session != self.session:
            return
        entry = self.pending.get(message.sequence)
        if entry is None:
            return
        how, target, sentAt = entry
        if how == "unicast" and target != tuple(addr[:2]):
            return
        rtt = (_now(self.clock) - sentAt) * 1000
        node = self.nodes.setdefault(
            tuple(addr[:2]), {"id": f"{message.sender:016x}", "multicast": {}, "unicast": {}}
        )
        if message.sequence in node[how]:
            return
        node[how][message.sequence] = rtt
        self.report({
            "event": "reply", "node": joinHostPort(*addr[:2]), "via": how,
            "target": str(target) if isinstance(target, Group) else joinHostPort(*target),
            "sequence": message.sequence, "rtt_ms": round(rtt, 3),
        })

    def _finish(self, error: Exception | None = None) -> None:
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        for port in getattr(self, "ports", {}).values():
            port.stopListening()
        self.ports = {}
        done, self._done = self._done, None
        if done is not None:
            done.errback(error) if error is not None else done.callback(self)

    def summary(self) -> list[dict]:
        """
        @return: per node, the round trips of each kind (count, min, avg,
            max in ms).
        """
        rows = []
        for (host, port), node in sorted(self.nodes.items()):
            row = {"node": joinHostPort(host, port), "id": node["id"]}
            for how in ("multicast", "unicast"):
                times = list(node[how].values())
                row[how] = {
                    "received": len(times),
                    "min_ms": round(min(times), 3) if times else None,
                    "avg_ms": round(sum(times) / len(times), 3) if times else None,
                    "max_ms": round(max(times), 3) if times else None,
                }
            rows.append(row)
        return rows


# The command line: netservices mcast send|recv|ping.

import json  # noqa: E402
import sys  # noqa: E402

from twisted.python import usage  # noqa: E402

from netservices._common.listen import (  # noqa: E402
    nonNegativeFloat,
    numberOption,
    positiveFloat,
    positiveInt,
)
from netservices.multicast.tap import GroupOptions  # noqa: E402

ttlValue = numberOption(int, lambda n: 0 <= n <= 255, "a TTL / hop limit (0-255)")
percent = numberOption(float, lambda n: 0 <= n <= 100, "a percentage (0-100)")
minimumSize = wire.HEADER.size + wire.TAG_SIZE


class _ToolOptions(GroupOptions):
    """
    What every C{mcast} tool takes besides the groups.

    @cvar sends: whether the tool sends (and so takes one C{--interface}).
    """

    sends = True

    optFlags = [
        ["json", None, "Print one JSON object per event (NDJSON), for scripts."],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if len(self["interfaces"]) > 1 and self.sends:
            raise usage.UsageError("--interface: give at most one for sending")
        self["interfaceIndex"] = self["interfaces"][0][1] if self["interfaces"] else 0

    def print(self, event: dict, text: str | None) -> None:
        """
        Print an event: as JSON with C{--json}, else C{text} (if any).
        """
        if self["json"]:
            print(json.dumps(event), flush=True)
        elif text is not None:
            print(text, flush=True)

    def warnUnauthenticated(self) -> None:
        """
        Say on stderr that no key is used.
        """
        if self["key"] is None:
            print("no --key-file: datagrams are unauthenticated", file=sys.stderr, flush=True)


class _SendingOptions(_ToolOptions):
    """
    What the tools that send take: TTL / hop limit and loopback.
    """

    optFlags = [
        ["loop", None, "Deliver our own datagrams to this host too (the default)."],
        ["no-loop", None, "Do not deliver our own datagrams to this host."],
    ]
    optParameters = [
        ["ttl", None, 1, "Multicast TTL (IPv4) and hop limit (IPv6); 1 stays on the link.", ttlValue],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["loop"] and self["no-loop"]:
            raise usage.UsageError("--loop and --no-loop: choose one")


class SendOptions(_SendingOptions):
    """
    C{netservices mcast send}.
    """

    synopsis = "--group GROUP [--group ...] [options]"
    longdesc = (
        "Send numbered datagrams (a versioned header: sender id, session id,"
        " sequence number, send time; then padding) to each group at --rate, at"
        " most --count per group and for at most --duration seconds, then a"
        " final record with the number sent, so receivers report exact loss."
    )
    optParameters = [
        ["rate", "r", "10", "Datagrams per second (100, 2kpps) or bits per second (800kbps, 1.5Mbit), per group."],
        ["burst", None, None, "Token bucket size in datagrams (default: 20 ms at --rate, at least 2).", positiveFloat],
        ["size", "s", 100, f"Bytes in each datagram ({minimumSize}-{MAX_SIZE}).", positiveInt],
        ["count", "c", 100, "Datagrams to send to each group.", positiveInt],
        ["duration", "d", 10.0, "Stop after this many seconds at the latest.", positiveFloat],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if not minimumSize <= self["size"] <= MAX_SIZE:
            raise usage.UsageError(f"--size {self['size']}: must be {minimumSize}-{MAX_SIZE}")
        try:
            self["pps"] = parseRate(self["rate"], self["size"])
        except ValueError as e:
            raise usage.UsageError(f"--rate {e}")

    async def run(self, reactor) -> int:
        self.warnUnauthenticated()
        sender = MulticastSender(
            reactor, self["groups"], self["pps"], self["count"], self["duration"],
            self["size"], self["ttl"], not self["no-loop"], self["interfaceIndex"],
            wire.Codec(self["key"]), self["burst"],
        )
        summary = await sender.start()
        self.print(
            summary,
            f"sent {summary['count']:,} datagrams to each of {', '.join(summary['groups'])}"
            f" ({summary['bytes']:,} bytes in all) in {summary['seconds']:.3f} s,"
            f" sender {summary['sender']}",
        )
        return 0


def _ms(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def describeStreams(rows: list[dict]) -> str:
    """
    @return: streams as a table for people.
    """
    lines = [
        f"{'source':<24} {'group':<22} {'received':>8} {'lost':>6} {'loss%':>6}"
        f" {'dup':>4} {'reord':>5} {'pps':>9} {'jitter ms':>9} {'first ms':>9} gaps"
    ]
    for r in rows:
        gaps = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in r["gaps"][:8])
        if len(r["gaps"]) > 8:
            gaps += ",..."
        lines.append(
            f"{r['source']:<24} {r['group']:<22} {r['received']:>8} {r['lost']:>6}"
            f" {r['loss'] * 100:>6.2f} {r['duplicates']:>4} {r['reordered']:>5}"
            f" {r['pps']:>9.1f} {_ms(r['jitter_ms']):>9} {_ms(r['first_delay_ms']):>9} {gaps or '-'}"
        )
    return "\n".join(lines)


class RecvOptions(_ToolOptions):
    """
    C{netservices mcast recv}.
    """

    sends = False

    synopsis = "--group GROUP [--group ...] [options]"
    longdesc = (
        "Join the groups and report, per sender and group: received, bytes, rate,"
        " loss with gap ranges, duplicates, reordering, join-to-first-datagram"
        " delay and RFC 3550 jitter.  Ends after --duration, or once"
        " --expect-sources senders (default 1) are known and all of them have sent"
        " their final record.  Exit status 1 if an --expect-count, --max-loss or"
        " --expect-sources expectation fails, 2 for bad usage."
    )
    optParameters = [
        ["duration", "d", 10.0, "Stop after this many seconds at the latest.", positiveFloat],
        ["interval", "i", 0.0, "Print the table every this many seconds (0: only at the end).", nonNegativeFloat],
        ["expect-count", None, None, "Fail unless every stream received at least this many datagrams.", positiveInt],
        ["max-loss", None, None, "Fail if any stream lost more than this percentage.", percent],
        ["expect-sources", None, None, "Wait for, and fail without, this many senders.", positiveInt],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        self.checkLimits()

    def emit(self, event: dict) -> None:
        """
        Print an event as it happens.
        """
        kind = event["event"]
        if kind == "joined":
            text = f"joined {event['group']} on {event['interface'] or 'the routed interface'}"
        elif kind == "first":
            text = (
                f"first from {event['source']} to {event['group']}: sequence"
                f" {event['sequence']}, {_ms(event['delay_ms'])} ms after joining, ttl {event['ttl']}"
            )
        elif kind == "gap":
            text = f"gap from {event['source']} to {event['group']}: {event['first']}-{event['last']} missing"
        else:
            text = None
        self.print(event, text)
        if kind == "interval" and not self["json"]:
            self._intervalRows.append(event)

    _intervalRows: list

    async def run(self, reactor) -> int:
        self.warnUnauthenticated()
        self._intervalRows = []
        receiver = MulticastReceiver(
            reactor, self["groups"], self.emit, self["interfaces"], self["duration"],
            self["interval"], self["expect-sources"] or 1, wire.Codec(self["key"]),
        )
        if not self["json"] and self["interval"]:
            original = receiver._report

            def report():
                original()
                if self._intervalRows:
                    print(describeStreams(self._intervalRows) + "\n", flush=True)
                self._intervalRows = []

            receiver._report = report
        await receiver.start()
        failures = receiver.check(self["expect-count"], self["max-loss"], self["expect-sources"])
        rows = [s.describe() for s in receiver.streams.values()]
        summary = {
            "event": "summary", "streams": rows, "refused": dict(receiver.refused),
            "ok": not failures, "failures": failures,
        }
        if self["json"]:
            self.print(summary, None)
        else:
            print(describeStreams(rows), flush=True)
            if receiver.refused:
                print("refused: " + ", ".join(f"{k}={v}" for k, v in sorted(receiver.refused.items())))
            for failure in failures:
                print(f"FAILED: {failure}")
        return 1 if failures else 0


class PingOptions(_SendingOptions):
    """
    C{netservices mcast ping}.
    """

    synopsis = "--group GROUP [--group ...] [options]"
    longdesc = (
        "Probe the groups; every multicast node there answers by unicast, and"
        " is then probed by unicast too: round-trip times of both, side by side,"
        " per node.  Exit status 1 if no node answered."
    )
    optParameters = [
        ["count", "c", 3, "Probe rounds.", positiveInt],
        ["interval", "i", 1.0, "Seconds between rounds.", positiveFloat],
        ["timeout", None, 1.0, "Seconds to wait for answers after the last round.", positiveFloat],
        ["size", "s", 100, f"Bytes in each probe ({minimumSize}-{MAX_SIZE}); answers are never larger.", positiveInt],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if not minimumSize <= self["size"] <= MAX_SIZE:
            raise usage.UsageError(f"--size {self['size']}: must be {minimumSize}-{MAX_SIZE}")

    def report(self, event: dict) -> None:
        """
        Print one answer.
        """
        self.print(
            event,
            f"{event['node']} answered {event['via']} probe {event['sequence']}"
            f" to {event['target']}: {event['rtt_ms']:.3f} ms",
        )

    async def run(self, reactor) -> int:
        self.warnUnauthenticated()
        pinger = MulticastPinger(
            reactor, self["groups"], self["count"], self["interval"], self["timeout"],
            self["size"], self["ttl"], not self["no-loop"], self["interfaceIndex"],
            wire.Codec(self["key"]), self.report,
        )
        await pinger.start()
        rows = pinger.summary()
        if self["json"]:
            self.print({"event": "summary", "nodes": rows, "sent": dict(pinger.sent)}, None)
        else:
            print(f"{'node':<28} {'multicast rtt ms (n/min/avg/max)':<36} unicast rtt ms (n/min/avg/max)")
            for r in rows:
                cells = [
                    f"{r[h]['received']}/{_ms(r[h]['min_ms'])}/{_ms(r[h]['avg_ms'])}/{_ms(r[h]['max_ms'])}"
                    for h in ("multicast", "unicast")
                ]
                print(f"{r['node']:<28} {cells[0]:<36} {cells[1]}")
            if not rows:
                print("no node answered")
        return 0 if rows else 1


class McastOptions(usage.Options):
    """
    C{netservices mcast}: send, receive and ping multicast.
    """

    synopsis = "send|recv|ping --group GROUP [options]"
    longdesc = (
        "Multicast tools: send numbered datagrams, receive them with loss and"
        " delay statistics, or ping the multicast nodes on a group."
    )
    subCommands = [
        ["send", None, SendOptions, "Send numbered datagrams at a bounded rate."],
        ["recv", None, RecvOptions, "Receive and report loss, delay, jitter."],
        ["ping", None, PingOptions, "Round trips to every node on a group."],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("choose send, recv or ping")
