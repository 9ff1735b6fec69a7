# -*- test-case-name: tests.broadcast.test_protocol -*-
"""
The broadcast peer: what both C{netservices broadcast} and the server
(C{twistd netservices broadcast}) run.

Sending:

  - IPv4 limited broadcast (255.255.255.255) goes out with C{sendmsg} and an
    C{IP_PKTINFO} control message naming the interface index, so it works on
    a host with no route at all (a plain C{sendto} fails with ENETUNREACH);
    directed broadcast (the interface's C{brd} address) the same way.
  - IPv6 has no broadcast: the peer joins the link-scope group
    L{GROUP6} (C{ff02::114}, IANA's "any private experiment" link-scope
    group, so no other software is woken) by interface index and sends to
    it with C{IPV6_MULTICAST_IF}.
  - Every datagram leaves with TTL / hop limit 255.  Nothing received is
    ever re-broadcast; the only answer is a C{here} to a new peer's
    C{hello}, by unicast, after a random 20-120 ms delay, within the rate
    limit.

Receiving (in this order, each refusal counted and logged rate-limited):
truncated or over C{maxSize} (C{too-big}), not on our interface
(C{other-interface}), TTL below 255 (C{ttl}: only an on-link sender can
deliver 255), source outside the interface's subnets (C{off-subnet}),
addressed by unicast unless it is a C{here} (C{unicast}), over the rate of
its source address (C{rate-limit}), then the wire checks (C{foreign},
C{forged}, C{replayed}...).  Our own messages and duplicates are dropped by
the L{PeerTable}.
"""

from __future__ import annotations

import fcntl
import ipaddress
import random
import socket
import struct
import time
from collections import Counter
from typing import Callable

import attrs
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from netservices._common.addresses import joinHostPort
from netservices._common.datagram import DatagramInfo, InfoDatagramPort
from netservices._common.logs import RefusalLog
from netservices._common.multicast import MulticastInfoPort
from netservices._common.ratelimit import PrefixRateLimiter, RateLimits
from netservices.broadcast import wire
from netservices.broadcast.peers import DUPLICATE, NEW_PEER, OWN, PeerTable

#: The default port (unassigned by IANA).
DEFAULT_PORT = 4114

#: The IPv6 link-scope group the peers use ("any private experiment").
GROUP6 = "ff02::114"

LIMITED = "255.255.255.255"

#: The TTL / hop limit we send with, and the least we accept.
LINK_TTL = 255

_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_SIOCGIFADDR, _SIOCGIFBRDADDR, _SIOCGIFNETMASK = 0x8915, 0x8919, 0x891B


class InterfaceError(Exception):
    """
    An interface that cannot be used; the message is fit for the user.
    """


@attrs.frozen
class Interface:
    """
    What a peer needs to know of its interface.

    @ivar networks: the on-link prefixes: sources must be inside one.
    @ivar broadcast: the IPv4 directed broadcast address, or L{None}.
    """

    name: str
    index: int
    address: str | None
    broadcast: str | None
    networks: tuple = ()

    def onLink(self, source: str) -> bool:
        """
        @return: whether C{source} is inside one of the interface's subnets.
        """
        try:
            address = ipaddress.ip_address(source.split("%")[0])
        except ValueError:
            return False
        return any(address in network for network in self.networks if network.version == address.version)


def _ioctlAddress(skt: socket.socket, request: int, name: str) -> str | None:
    try:
        raw = fcntl.ioctl(skt.fileno(), request, struct.pack("256s", name.encode()[:15]))
    except OSError:
        return None
    return socket.inet_ntoa(raw[20:24])


def describeInterface(name: str) -> Interface:
    """
    Read interface C{name}'s index, primary IPv4 address, netmask and
    broadcast address (C{SIOCGIF*}), and its IPv6 prefixes
    (C{/proc/net/if_inet6}; link-local C{fe80::/10} is always on-link).

    @raise InterfaceError: if there is no such interface.
    """
    try:
        index = socket.if_nametoindex(name)
    except OSError:
        raise InterfaceError(f"no interface named {name!r}")
    networks: list = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as skt:
        address = _ioctlAddress(skt, _SIOCGIFADDR, name)
        mask = _ioctlAddress(skt, _SIOCGIFNETMASK, name)
        broadcast = _ioctlAddress(skt, _SIOCGIFBRDADDR, name)
    if address is not None and mask is not None:
        networks.append(ipaddress.ip_network(f"{address}/{mask}", strict=False))
    if broadcast in (None, "0.0.0.0") or address is None:
        broadcast = None
    networks.append(ipaddress.ip_network("fe80::/10"))
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[5] == name:
                    hexAddress = fields[0]
                    text = ":".join(hexAddress[i : i + 4] for i in range(0, 32, 4))
                    networks.append(ipaddress.ip_network(f"{text}/{int(fields[2], 16)}", strict=False))
    except OSError:
        pass
    return Interface(name, index, address, broadcast, tuple(dict.fromkeys(networks)))


def chooseInterface() -> str:
    """
    @return: the only interface other than loopback that is up, for when
        C{--interface} is not given.
    @raise InterfaceError: if there is none, or more than one.
    """
    names = []
    for _, name in socket.if_nameindex():
        try:
            with open(f"/sys/class/net/{name}/operstate") as f:
                state = f.read().strip()
        except OSError:
            state = "unknown"
        if name != "lo" and state in ("up", "unknown"):
            names.append(name)
    if len(names) != 1:
        found = ", ".join(names) or "none"
        raise InterfaceError(f"name the interface with --interface (candidates: {found})")
    return names[0]


def destinations(interface: Interface, family: int, mode: str) -> list[str]:
    """
    @param mode: C{limited}, C{directed} or C{auto} (directed when the
        interface has an IPv4 broadcast address, else limited).
    @return: where each message goes (one address: never both, so nothing
        is sent twice).
    @raise InterfaceError: if directed broadcast is asked for an interface
        without an IPv4 broadcast address.
    """
    if family == socket.AF_INET6:
        return [GROUP6]
    if mode == "directed" or (mode == "auto" and interface.broadcast):
        if not interface.broadcast:
            raise InterfaceError(f"{interface.name} has no IPv4 broadcast address for --broadcast directed")
        return [interface.broadcast]
    return [LIMITED]


class BroadcastPort(InfoDatagramPort):
    """
    An L{InfoDatagramPort} for IPv4 broadcast: port sharing
    (C{SO_REUSEADDR}: every socket bound to the port gets a copy of each
    broadcast), C{SO_BROADCAST}, TTL 255, and L{sendVia} by interface
    index.
    """

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        skt.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        skt.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, LINK_TTL)
        return skt

    def sendVia(self, data: bytes, address: tuple[str, int], interfaceIndex: int) -> None:
        """
        Send C{data} out of interface C{interfaceIndex}, routes or not
        (an C{IP_PKTINFO} control message).

        @raise OSError: if sending fails.
        """
        pktinfo = struct.pack("=i4s4s", interfaceIndex, bytes(4), bytes(4))
        self.socket.sendmsg([data], [(socket.IPPROTO_IP, _IP_PKTINFO, pktinfo)], 0, address)


def openPort(reactor, protocol, interface: Interface, family: int, port: int, maxPacketSize: int):
    """
    Bind the wildcard address of C{family} on C{port}; for IPv6, join
    L{GROUP6} on the interface and send there with hop limit 255.
    """
    if family == socket.AF_INET:
        p = BroadcastPort(port, protocol, "", maxPacketSize=maxPacketSize, reactor=reactor)
        p.startListening()
        return p
    p = MulticastInfoPort(port, protocol, "::", maxPacketSize=maxPacketSize, reactor=reactor)
    p.startListening()
    try:
        p.join(GROUP6, interface.index)
        p.setSendOptions(LINK_TTL, True, interface.index)
        p.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, LINK_TTL)
    except Exception:
        p.stopListening()
        raise
    return p


@attrs.frozen
class PeerSettings:
    """
    How a peer behaves.
    """

    interface: Interface
    family: int = socket.AF_INET
    port: int = DEFAULT_PORT
    mode: str = "auto"
    maxSize: int = wire.DEFAULT_MAX_SIZE
    maxAge: int = 30
    rate: float = 10.0
    burst: float = 20.0
    announce: bool = True


class BroadcastPeer(DatagramProtocol):
    """
    One peer on one interface.

    @ivar table: the L{PeerTable}.
    @ivar totals: datagrams by outcome: kinds delivered (C{hello},
        C{data}...), C{own}, C{duplicate}, C{sent}, C{send-failed}.
    @ivar refusals: the L{RefusalLog} (exact counts per reason).
    @ivar onEvent: called with each event dictionary: C{message},
        C{peer-up}, C{peer-down}.
    """

    noisy = False
    _log = Logger(namespace="netservices.broadcast")

    def __init__(
        self,
        clock,
        settings: PeerSettings,
        codec: wire.Codec | None = None,
        onEvent: Callable[[dict], None] = lambda event: None,
        log: Logger | None = None,
        wallClock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.settings = settings
        self.codec = codec or wire.Codec()
        self.onEvent = onEvent
        self.log = log or self._log
        self.wallClock = wallClock
        self.id = wire.newId()
        self.sequence = 0
        self.table = PeerTable(self.id)
        self.limiter = PrefixRateLimiter(
            RateLimits(settings.rate, settings.burst, 0, 0, 4096, 32, 128), clock
        )
        self.refusals = RefusalLog(self.log, clock, "broadcast datagram")
        self.totals: Counter[str] = Counter()
        self.targets = destinations(settings.interface, settings.family, settings.mode)
        self.port = None
        self.lastSendError: str | None = None
        self._calls: list = []
        self._loops: list[LoopingCall] = []

    # Life.

    def start(self) -> None:
        """
        Bind (synchronously: a test may call this inside a namespace), say
        hello, and start the periodic hello and expiry.

        @raise OSError, InterfaceError, CannotListenError: if it cannot.
        """
        s = self.settings
        self.port = openPort(self.clock, self, s.interface, s.family, s.port, s.maxSize + 1)
        if s.announce:
            self.broadcast(wire.HELLO)
            hello = LoopingCall(self.broadcast, wire.HELLO)
            hello.clock = self.clock
            hello.start(max(1.0, s.maxAge / 3), now=False)
            self._loops.append(hello)
        expire = LoopingCall(self.expire)
        expire.clock = self.clock
        expire.start(1.0, now=False)
        self._loops.append(expire)

    def stop(self) -> None:
        """
        Say bye (if announcing), stop timers and close the socket.
        """
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        if self.port is not None:
            if self.settings.announce:
                self.broadcast(wire.BYE)
            port, self.port = self.port, None
            port.stopListening()

    # Sending.

    def _encode(self, kind: int, payload: bytes = b"") -> bytes:
        data = self.codec.encode(
            kind, self.id, self.sequence, int(self.wallClock() * 1e9), self.settings.maxAge, payload
        )
        self.sequence += 1
        return data

    def _write(self, data: bytes, address: tuple[str, int]) -> bool:
        try:
            if isinstance(self.port, BroadcastPort):
                self.port.sendVia(data, address, self.settings.interface.index)
            else:
                self.port.write(data, address)
        except OSError as e:
            self.lastSendError = e.strerror or str(e)
            self.totals["send-failed"] += 1
            self.refusals.refuse("send-failed", joinHostPort(*address[:2]), error=str(e))
            return False
        self.totals["sent"] += 1
        return True

    def broadcast(self, kind: int, payload: bytes = b"") -> bool:
        """
        Send one message to the link.

        @return: whether it was sent.
        @raise ValueError: if the datagram would exceed C{maxSize}.
        """
        data = self._encode(kind, payload)
        if len(data) > self.settings.maxSize:
            raise ValueError(
                f"the message is {len(data)} bytes with its header, more than {self.settings.maxSize}"
            )
        sent = False
        for target in self.targets:
            sent = self._write(data, (target, self.settings.port)) or sent
        return sent

    def send(self, text: str) -> bool:
        """
        Broadcast C{text} as a data message.

        @return: whether it was sent.
        @raise ValueError: if it is too long.
        """
        return self.broadcast(wire.DATA, text.encode("utf-8"))

    def _answerHello(self, addr) -> None:
        if self.port is not None:
            self._write(self._encode(wire.HERE), addr)

    # Receiving.

    def expire(self) -> None:
        """
        Forget peers whose max-age has passed, reporting C{peer-down}.
        """
        for peer in self.table.expire(self.clock.seconds()):
            self.onEvent({"event": "peer-down", "peer": f"{peer.id:016x}", "address": peer.address, "reason": "expired"})

    def datagramReceived(self, data: bytes, addr) -> None:
        self.datagramReceivedWithInfo(data, addr, DatagramInfo.unknown())

    def refuse(self, reason: str, addr, **fields) -> None:
        """
        Count and log (rate-limited) a refused datagram.
        """
        self.refusals.refuse(reason, joinHostPort(*addr[:2]), source=addr[0], **fields)

    def datagramReceivedWithInfo(self, data: bytes, addr, info: DatagramInfo) -> None:
        """
        Check, parse, deduplicate and deliver one datagram.
        """
        s = self.settings
        source = addr[0]
        if info.truncated or len(data) > s.maxSize:
            return self.refuse("too-big", addr, size=len(data))
        if info.interfaceIndex != s.interface.index:
            return self.refuse("other-interface", addr, interfaceIndex=info.interfaceIndex)
        if info.ttl is None or info.ttl < LINK_TTL:
            return self.refuse("ttl", addr, ttl=info.ttl)
        if not s.interface.onLink(source):
            return self.refuse("off-subnet", addr)
        unicast = not info.addressedToGroupOrBroadcast
        limited = self.limiter.check(source)
        if limited is not None:
            return self.refuse("rate-limit", addr)
        try:
            message = self.codec.parse(data, self.wallClock())
        except wire.WireError as e:
            return self.refuse(e.reason, addr, size=len(data))
        if unicast and message.kind != wire.HERE:
            return self.refuse("unicast", addr)
        if not unicast and message.kind == wire.HERE:
            return self.refuse("unicast", addr)
        interface = s.interface.name
        now = self.clock.seconds()
        outcome = self.table.receive(message, source, interface, now)
        if outcome in (OWN, DUPLICATE):
            self.totals[outcome] += 1
            return
        kind = wire.KINDS[message.kind]
        self.totals[kind] += 1
        peerText = f"{message.peer:016x}"
        how = "unicast" if unicast else ("limited" if info.destination == LIMITED else (
            "directed" if s.family == socket.AF_INET else "multicast"))
        common = {
            "peer": peerText, "address": source, "interface": interface,
            "destination": info.destination, "addressed": how, "ttl": info.ttl,
        }
        if message.kind == wire.BYE:
            self.table.peers.pop(message.peer, None)
            self.onEvent({"event": "peer-down", "reason": "bye", **common})
            return
        if outcome == NEW_PEER:
            self.onEvent({"event": "peer-up", "max_age": message.maxAge, **common})
            if message.kind == wire.HELLO and s.announce:
                delay = random.uniform(0.02, 0.12)
                self._calls = [c for c in self._calls if c.active()]
                self._calls.append(self.clock.callLater(delay, self._answerHello, addr))
        if message.kind == wire.DATA:
            self.onEvent({
                "event": "message", "sequence": message.sequence, "text": message.text,
                "size": len(data), **common,
            })

    def peers(self) -> list[dict]:
        """
        @return: the peer table, JSON-ready.
        """
        return self.table.describe(self.clock.seconds())


__all__ = [
    "BroadcastPeer", "BroadcastPort", "PeerSettings", "Interface", "InterfaceError",
    "describeInterface", "chooseInterface", "destinations", "DEFAULT_PORT", "GROUP6",
]
