# -*- test-case-name: tests._common.test_multicast -*-
"""
Multicast sockets done right on Linux, for IPv4 and IPv6 alike.

Twisted's C{MulticastPort} gets several things wrong or leaves them out
(see the shared multicast note): on IPv6 C{setTTL} sets the IPv4 option and
leaves the hop limit alone, C{joinGroup} with an interface address fails,
there is no source-specific join, and C{IP_MULTICAST_ALL} is left on, so a
socket receives every group any socket on the host joined on its port.
L{MulticastInfoPort} is an L{InfoDatagramPort} (destination, interface and
TTL of every datagram) that instead:

  - turns C{IP_MULTICAST_ALL} / C{IPV6_MULTICAST_ALL} off before binding;
  - joins by interface index with C{MCAST_JOIN_GROUP} and
    C{MCAST_JOIN_SOURCE_GROUP} (one code path for both families, SSM
    included); index 0 lets the routing table choose;
  - sets C{IP_MULTICAST_TTL} or C{IPV6_MULTICAST_HOPS}, the loopback option
    and the outgoing interface (by index) for its own family;
  - binds with C{SO_REUSEADDR}, so several instances can share a host and
    port - and deliberately not C{SO_REUSEPORT} (which Twisted's
    C{listenMultiple} sets): with it, Linux hands each datagram to one
    socket of the port by hash, ignoring which socket joined the group.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct

from netservices._common.datagram import InfoDatagramPort

# Linux values; Python 3.11 defines few of them.
IP_MULTICAST_ALL = 49
IPV6_MULTICAST_ALL = 29
MCAST_JOIN_GROUP = 42
MCAST_LEAVE_GROUP = 45
MCAST_JOIN_SOURCE_GROUP = 46
MCAST_LEAVE_SOURCE_GROUP = 47
_IPPROTO_IPV6 = getattr(socket, "IPPROTO_IPV6", 41)
_IPV6_V6ONLY = getattr(socket, "IPV6_V6ONLY", 26)
_IPV6_MULTICAST_IF = getattr(socket, "IPV6_MULTICAST_IF", 17)
_IPV6_MULTICAST_HOPS = getattr(socket, "IPV6_MULTICAST_HOPS", 18)
_IPV6_MULTICAST_LOOP = getattr(socket, "IPV6_MULTICAST_LOOP", 19)

#: Where the kernel's per-socket limits live.
IGMP_MAX_MEMBERSHIPS = "/proc/sys/net/ipv4/igmp_max_memberships"
IGMP_MAX_MSF = "/proc/sys/net/ipv4/igmp_max_msf"

_int = struct.Struct("=i")


class MulticastError(Exception):
    """
    A multicast operation failed; the message is fit for the user.
    """


def familyOf(address: str) -> int:
    """
    @return: C{AF_INET} or C{AF_INET6} for an IP address literal.
    """
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def levelOf(family: int) -> int:
    """
    @return: the C{setsockopt} level of the IP options of C{family}.
    """
    return socket.IPPROTO_IP if family == socket.AF_INET else _IPPROTO_IPV6


def sockaddrStorage(address: str) -> bytes:
    """
    @return: C{address} packed as a 128-byte C{struct sockaddr_storage}.
    """
    family = familyOf(address)
    packed = socket.inet_pton(family, address)
    if family == socket.AF_INET:
        raw = struct.pack("=HH4s", family, 0, packed)
    else:
        raw = struct.pack("=HHI16sI", family, 0, 0, packed, 0)
    return raw.ljust(128, b"\0")


def groupRequest(interfaceIndex: int, group: str, source: str | None = None) -> bytes:
    """
    @return: a C{struct group_req}, or C{struct group_source_req} when a
        source is given (64-bit Linux layout: the index is padded to 8).
    """
    request = struct.pack("=I4x", interfaceIndex) + sockaddrStorage(group)
    if source is not None:
        request += sockaddrStorage(source)
    return request


def interfaceIndex(name: str) -> int:
    """
    @return: the index of interface C{name}.
    @raise MulticastError: if there is no such interface.
    """
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise MulticastError(f"no interface named {name!r}")


def readLimit(path: str, default: int) -> int:
    """
    @return: the integer in sysctl file C{path}, or C{default}.
    """
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return default


def checkSocketLimits(
    family: int, memberships: int, sourcesPerGroup: int
) -> None:
    """
    Check, before anything starts, that one socket may hold C{memberships}
    joins with up to C{sourcesPerGroup} sources each.  Only IPv4 has such
    small limits (20 groups and 10 sources per socket by default); IPv6 is
    limited by C{optmem_max}, thousands of groups.

    @raise MulticastError: naming the sysctl to raise.
    """
    if family != socket.AF_INET:
        return
    groups = readLimit(IGMP_MAX_MEMBERSHIPS, 20)
    if memberships > groups:
        raise MulticastError(
            f"{memberships} IPv4 group joins on one port, but a socket may join at"
            f" most {groups} (sysctl net.ipv4.igmp_max_memberships)"
        )
    sources = readLimit(IGMP_MAX_MSF, 10)
    if sourcesPerGroup > sources:
        raise MulticastError(
            f"{sourcesPerGroup} sources for one IPv4 group, but a socket may filter"
            f" at most {sources} (sysctl net.ipv4.igmp_max_msf)"
        )


def _joinError(error: OSError, group: str, interface: int, source: str | None) -> MulticastError:
    where = f"interface index {interface}" if interface else "the routed interface"
    what = f"({source}, {group})" if source else group
    if error.errno == errno.ENODEV and not interface:
        return MulticastError(
            f"cannot join {what}: no route to the group (add a multicast route or"
            " name the interface with --interface)"
        )
    if error.errno == errno.ENOBUFS:
        return MulticastError(
            f"cannot join {what} on {where}: too many groups or sources on one socket"
            " (sysctl net.ipv4.igmp_max_memberships / igmp_max_msf)"
        )
    return MulticastError(f"cannot join {what} on {where}: {error.strerror}")


def join(skt: socket.socket, group: str, interface: int = 0, sources=()) -> None:
    """
    Join C{group} on the interface with index C{interface} (0: the one the
    routing table gives), for any source or, with C{sources}, only those
    (source-specific: one C{MCAST_JOIN_SOURCE_GROUP} per source).

    @raise MulticastError: on failure, in words.
    """
    level = levelOf(familyOf(group))
    try:
        if not sources:
            skt.setsockopt(level, MCAST_JOIN_GROUP, groupRequest(interface, group))
        for source in sources:
            skt.setsockopt(
                level, MCAST_JOIN_SOURCE_GROUP, groupRequest(interface, group, source)
            )
    except OSError as e:
        raise _joinError(e, group, interface, sources[0] if sources else None)


def leave(skt: socket.socket, group: str, interface: int = 0, sources=()) -> None:
    """
    Undo L{join}; errors (already left, interface gone) are ignored.
    """
    level = levelOf(familyOf(group))
    try:
        if not sources:
            skt.setsockopt(level, MCAST_LEAVE_GROUP, groupRequest(interface, group))
        for source in sources:
            skt.setsockopt(
                level, MCAST_LEAVE_SOURCE_GROUP, groupRequest(interface, group, source)
            )
    except OSError:
        pass


def setSendOptions(
    skt: socket.socket, family: int, ttl: int = 1, loop: bool = True, interface: int = 0
) -> None:
    """
    Set the multicast TTL (IPv4) or hop limit (IPv6), loopback, and the
    outgoing interface by index (0: leave it to the routing table).
    """
    if family == socket.AF_INET:
        skt.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        skt.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loop))
        if interface:
            # struct ip_mreqn: multiaddr, address, ifindex.
            skt.setsockopt(
                socket.IPPROTO_IP,
                socket.IP_MULTICAST_IF,
                struct.pack("=4s4si", b"\0" * 4, b"\0" * 4, interface),
            )
    else:
        skt.setsockopt(_IPPROTO_IPV6, _IPV6_MULTICAST_HOPS, ttl)
        skt.setsockopt(_IPPROTO_IPV6, _IPV6_MULTICAST_LOOP, int(loop))
        if interface:
            skt.setsockopt(_IPPROTO_IPV6, _IPV6_MULTICAST_IF, interface)


def getHopLimit(skt: socket.socket, family: int) -> int:
    """
    @return: the multicast TTL or hop limit the socket sends with.
    """
    if family == socket.AF_INET:
        return skt.getsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL)
    return skt.getsockopt(_IPPROTO_IPV6, _IPV6_MULTICAST_HOPS)


def prepareSocket(skt: socket.socket, family: int) -> None:
    """
    What every multicast socket needs before it is bound: only the groups
    it joined itself (C{*_MULTICAST_ALL} off), port sharing, and IPv6
    sockets that are IPv6 only (IPv4 groups have their own socket).
    """
    # SO_REUSEADDR alone lets several UDP sockets share the port, and each
    # gets a copy of the groups it joined.  Not SO_REUSEPORT: with it
    # (Linux 6.18), a datagram to a group goes to ONE socket of the port
    # chosen by the reuseport hash, even one that never joined the group,
    # and the socket that did join never sees it.
    skt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET:
        skt.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
    else:
        skt.setsockopt(_IPPROTO_IPV6, _IPV6_V6ONLY, 1)
        skt.setsockopt(_IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)


class MulticastInfoPort(InfoDatagramPort):
    """
    An L{InfoDatagramPort} for multicast: see the module docstring.

    @ivar memberships: the current joins, C{(group, interface, sources)}.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.memberships: list[tuple[str, int, tuple[str, ...]]] = []

    def createInternetSocket(self) -> socket.socket:
        skt = super().createInternetSocket()
        prepareSocket(skt, self.addressFamily)
        return skt

    def join(self, group: str, interface: int = 0, sources=()) -> None:
        """
        Join C{group} (see L{join}) and remember it for L{leaveAll}.
        """
        join(self.socket, group, interface, tuple(sources))
        self.memberships.append((group, interface, tuple(sources)))

    def leaveAll(self) -> None:
        """
        Leave every group joined through L{join}.
        """
        while self.memberships:
            group, interface, sources = self.memberships.pop()
            leave(self.socket, group, interface, sources)

    def setSendOptions(self, ttl: int = 1, loop: bool = True, interface: int = 0) -> None:
        """
        See L{setSendOptions}.
        """
        setSendOptions(self.socket, self.addressFamily, ttl, loop, interface)

    def getHopLimit(self) -> int:
        """
        See L{getHopLimit}.
        """
        return getHopLimit(self.socket, self.addressFamily)

    def connectionLost(self, reason=None):
        if getattr(self, "socket", None) is not None and self.memberships:
            self.leaveAll()
        return super().connectionLost(reason)


def listenMulticast(
    reactor, port: int, protocol, family: int = socket.AF_INET, maxPacketSize: int = 65535
) -> MulticastInfoPort:
    """
    Bind a L{MulticastInfoPort} to the wildcard address of C{family}.

    @raise twisted.internet.error.CannotListenError: if binding fails.
    """
    interface = "" if family == socket.AF_INET else "::"
    p = MulticastInfoPort(
        port, protocol, interface, maxPacketSize=maxPacketSize, reactor=reactor
    )
    p.startListening()
    return p


__all__ = [
    "MulticastError",
    "MulticastInfoPort",
    "checkSocketLimits",
    "interfaceIndex",
    "join",
    "leave",
    "listenMulticast",
    "setSendOptions",
    "getHopLimit",
]
