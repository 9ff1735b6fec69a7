# -*- test-case-name: tests._common.test_datagram -*-
"""
A UDP port which tells its protocol where each datagram was addressed.

Every UDP service in this package (info, echo, multicast, broadcast) answers
datagrams, and a UDP service which answers a datagram sent to a broadcast or
multicast address is an amplifier for reflection attacks: one spoofed request
yields one reply from every host on the segment.  A protocol can only refuse
such datagrams if it knows the destination address from the IP header, which
C{recvfrom} (and therefore L{twisted.internet.udp.Port}) does not report.
L{InfoDatagramPort} reads with C{recvmsg} and asks the kernel for
C{IP_PKTINFO} / C{IPV6_PKTINFO} and the TTL / hop limit as ancillary data.

Directed broadcasts need a trick: C{ipi_addr} is the header's destination,
e.g. C{10.0.0.255}, which is not recognisable as a broadcast address without
knowing the interface's netmask.  Linux, however, fills in C{ipi_spec_dst}
from C{fib_compute_spec_dst}, which returns the header destination itself
only for unicast datagrams delivered locally; for broadcast and multicast it
is the receiving interface's own address.  So for IPv4, C{ipi_addr !=
ipi_spec_dst} means "not addressed to me alone".

L{listenWithInfo} also defaults C{maxPacketSize} to 65535, because Twisted's
default of 8192 silently truncates larger datagrams; the kernel's C{MSG_TRUNC}
flag is reported as L{DatagramInfo.truncated} either way.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

import attrs

from twisted.internet import udp
from twisted.logger import Logger

from netservices._common.addresses import displayHost, packIP, parseIP

# Python 3.11 lacks some of these constants; the values are Linux's.
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IP_RECVTTL = getattr(socket, "IP_RECVTTL", 12)
_IP_TTL = getattr(socket, "IP_TTL", 2)
_IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
_IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_IPV6_RECVHOPLIMIT = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
_IPV6_HOPLIMIT = getattr(socket, "IPV6_HOPLIMIT", 52)
_IPPROTO_IPV6 = getattr(socket, "IPPROTO_IPV6", 41)

# A plain int: "int & socket.MSG_TRUNC" goes through enum.Flag, which
# costs more than the rest of the datagram's handling.
_MSG_TRUNC = int(socket.MSG_TRUNC)

#: The largest read: no UDP datagram (short of an IPv6 jumbogram) is
#: longer, so reads of this size are never truncated.
_LARGEST_READ = 65535

_inPktinfo = struct.Struct("=i4s4s")  # ifindex, spec_dst, addr
_in6Pktinfo = struct.Struct("=16sI")  # addr, ifindex
_int = struct.Struct("=i")

# A dual-stack socket may get pktinfo and TTL of both families at once.
_ANCILLARY_SIZE = (
    socket.CMSG_SPACE(_inPktinfo.size)
    + socket.CMSG_SPACE(_in6Pktinfo.size)
    + 2 * socket.CMSG_SPACE(_int.size)
)


def _displayed(address: str | None) -> str | None:
    # IPv4 text from inet_ntoa is already canonical: skip ipaddress, which
    # would cost microseconds per datagram.
    if address is None or ":" not in address:
        return address
    return displayHost(address)


def _groupOrBroadcast(info: DatagramInfo) -> bool:
    """
    Decide L{DatagramInfo.addressedToGroupOrBroadcast} from the address
    strings (for instances not made by L{InfoDatagramPort}, which decides on
    the raw bytes).
    """
    address = None if info.destination is None else parseIP(info.destination)
    if address is None:
        return False
    if address.is_multicast:
        return True
    if address.version == 4:
        if address == _LIMITED_BROADCAST:
            return True
        return info.localAddress is not None and info.localAddress != info.destination
    return False


_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
_V4_MAPPED = bytes(10) + b"\xff\xff"


def _groupOrBroadcastPacked(destination: bytes, localAddress: bytes | None) -> bool:
    """
    The same decision on packed addresses, as the kernel reports them.
    """
    if len(destination) == 16:
        if destination[:12] != _V4_MAPPED:
            return destination[0] == 0xFF
        destination = destination[12:]
    first = destination[0]
    if 224 <= first < 240 or destination == b"\xff\xff\xff\xff":
        return True
    return localAddress is not None and localAddress != destination


# Mutable slots, not frozen: one is made per datagram, and frozen attrs
# classes cost several times more to build.
@attrs.define
class DatagramInfo:
    """
    What the kernel said about one received datagram.

    @ivar destination: the IP header's destination address (C{ipi_addr} or
        C{ipi6_addr}) as L{displayHost} shows it (IPv4-mapped addresses
        unmapped); L{None} if unknown.
    @ivar localAddress: for IPv4, C{ipi_spec_dst}: the local address the
        datagram is considered addressed to; for IPv6, same as C{destination}.
    @ivar interfaceIndex: index of the arrival interface, or L{None}.
    @ivar ttl: the IPv4 TTL or IPv6 hop limit, or L{None}.
    @ivar truncated: whether the datagram was longer than the read buffer.
    @ivar addressedToGroupOrBroadcast: whether the datagram was sent to a
        multicast or broadcast address (limited, or - for IPv4, via the
        C{ipi_spec_dst} trick - directed); L{False} when the destination is
        unknown.  Computed from the addresses when not given.
    """

    destination: str | None = attrs.field(converter=_displayed)
    localAddress: str | None = attrs.field(converter=_displayed)
    interfaceIndex: int | None
    ttl: int | None
    truncated: bool = False
    addressedToGroupOrBroadcast: bool = attrs.field(
        default=attrs.Factory(_groupOrBroadcast, takes_self=True)
    )

    @classmethod
    def unknown(cls) -> DatagramInfo:
        """
        @return: an instance reporting nothing at all.
        """
        return cls(None, None, None, None)


#: The L{DatagramInfo} of every datagram read on a port bound to a unicast
#: address (see L{boundToUnicast}): addressed to that address, not
#: truncated, nothing else known.  Shared: do not modify it.
UNICAST_DESTINATION = DatagramInfo(None, None, None, None, False, False)


def boundToUnicast(skt: socket.socket) -> bool:
    """
    Whether C{skt} is bound to one unicast address.  Linux then delivers it
    only datagrams addressed to exactly that address: its UDP socket lookup
    compares the bound address with the destination for broadcast and
    multicast delivery too.  Verified in network namespaces (research notes
    F7 and M8): bound to C{10.77.0.2}, no directed or limited broadcast
    arrived; bound to C{0.0.0.0} both did, and bound to C{10.77.0.255} - the
    subnet's broadcast address - directed broadcasts did.  So the wildcard,
    multicast addresses, C{255.255.255.255} and any address the routing
    table calls broadcast do not count: a UDP socket without
    C{SO_BROADCAST} cannot connect to such an address (C{EACCES}), which
    asks the kernel rather than guessing netmasks.
    """
    packed = packIP(skt.getsockname()[0])
    if packed is None:
        return False
    if len(packed) == 16:
        return packed != bytes(16) and packed[0] != 0xFF
    if packed == bytes(4) or _groupOrBroadcastPacked(packed, None):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((socket.inet_ntoa(packed), 9))
        except OSError:
            return False
    return True


def _numeric(host: str, family: int) -> bool:
    """
    @return: whether C{host} is a numeric address of C{family} (without an
        IPv6 zone), which C{sendto} takes without any name lookup.
    """
    try:
        socket.inet_pton(family, host)
    except (OSError, ValueError, TypeError):
        return False
    return True


class InfoDatagramPort(udp.Port):
    """
    A L{udp.Port} delivering a L{DatagramInfo} with each datagram to
    protocols that have a C{datagramReceivedWithInfo(data, addr, info)}
    method; other protocols get plain C{datagramReceived(data, addr)}.

    A protocol whose class sets C{wantsDatagramInfo = False} needs only to
    know that a datagram was not addressed to a broadcast or multicast
    address.  On a port bound to a unicast address (L{boundToUnicast}) that
    needs no ancillary data: it reads with plain C{recvfrom} and gives it
    L{UNICAST_DESTINATION}, which saves about 30 % of udp-echo's time per
    datagram (see C{benchmarks/}).

    @ivar unicast: whether the socket is bound to a unicast address.
    """

    _log = Logger()
    _withInfoFor = None
    _withInfo = None
    _plainReads = False
    unicast = False

    def createInternetSocket(self) -> socket.socket:
        """
        Make the socket and ask the kernel for packet info and TTL / hop
        limit before it is bound, so that no datagram arrives without them.
        """
        skt = super().createInternetSocket()
        if self.addressFamily == socket.AF_INET:
            skt.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
            skt.setsockopt(socket.IPPROTO_IP, _IP_RECVTTL, 1)
        else:
            skt.setsockopt(_IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
            skt.setsockopt(_IPPROTO_IPV6, _IPV6_RECVHOPLIMIT, 1)
            # A socket bound to :: is dual stack: IPv4 datagrams carry only
            # IPv4 ancillary data (and a v4-mapped IPV6_PKTINFO).
            for option in (_IP_PKTINFO, _IP_RECVTTL):
                try:
                    skt.setsockopt(socket.IPPROTO_IP, option, 1)
                except OSError:
                    pass
        return skt

    def startListening(self) -> None:
        super().startListening()
        self.unicast = boundToUnicast(self.socket)

    def write(self, datagram: bytes, addr: tuple[str, int] | None = None):
        """
        Send like L{udp.Port.write}, which checks C{addr} with Twisted's
        address parsers in Python (about 1 µs per datagram); C{inet_pton}
        does that check for the numeric addresses that answers go to.
        Anything else, and any error, takes Twisted's path.
        """
        if (
            addr is not None
            and not self._connectedAddr
            and _numeric(addr[0], self.addressFamily)
        ):
            try:
                return self.socket.sendto(datagram, addr)
            except OSError:
                # Nothing was sent: Twisted's path tries again and reports
                # the error the usual way.
                pass
        return super().write(datagram, addr)

    def doRead(self) -> None:
        """
        Read datagrams until C{maxThroughput} bytes were read or the socket
        would block, and hand them to the protocol: with C{recvmsg} and
        their L{DatagramInfo}, or with C{recvfrom} when the protocol only
        needs L{UNICAST_DESTINATION} (see the class docstring).
        """
        if self._withInfoFor is not self.protocol:
            self._withInfoFor = self.protocol
            self._withInfo = getattr(self.protocol, "datagramReceivedWithInfo", None)
            self._plainReads = (
                self.unicast
                and self._withInfo is not None
                and self.maxPacketSize >= _LARGEST_READ
                and not getattr(self.protocol, "wantsDatagramInfo", True)
            )
        plain = self._plainReads
        withInfo = self._withInfo
        recvfrom, recvmsg = self.socket.recvfrom, self.socket.recvmsg
        size = self.maxPacketSize
        trimAddress = self.addressFamily == socket.AF_INET6
        info = UNICAST_DESTINATION
        read = 0
        while read < self.maxThroughput:
            try:
                if plain:
                    data, addr = recvfrom(size)
                else:
                    data, ancillary, flags, addr = recvmsg(size, _ANCILLARY_SIZE)
            except OSError as se:
                no = se.args[0]
                if no in udp._sockErrReadIgnore:
                    return
                if no in udp._sockErrReadRefuse:
                    if self._connectedAddr:
                        self.protocol.connectionRefused()
                    return
                raise
            read += len(data)
            if trimAddress:
                addr = addr[:2]
            if not plain:
                info = self._parseAncillary(ancillary, bool(flags & _MSG_TRUNC))
            try:
                if withInfo is not None:
                    withInfo(data, addr, info)
                else:
                    self.protocol.datagramReceived(data, addr)
            except BaseException:
                self._log.failure(
                    "Unhandled error in {protocol!r} handling a datagram"
                    " from {addr!r}",
                    protocol=self.protocol,
                    addr=addr,
                )

    @staticmethod
    def _parseAncillary(
        ancillary: list[tuple[int, int, bytes]], truncated: bool
    ) -> DatagramInfo:
        """
        Build a L{DatagramInfo} from C{recvmsg} ancillary data.

        @param ancillary: C{(level, type, data)} triples.
        @param truncated: whether C{MSG_TRUNC} was set.
        """
        v4 = v6 = None
        ttl = None
        for level, kind, payload in ancillary:
            if level == socket.IPPROTO_IP and kind == _IP_PKTINFO:
                if len(payload) >= _inPktinfo.size:
                    v4 = _inPktinfo.unpack_from(payload)
            elif level == _IPPROTO_IPV6 and kind == _IPV6_PKTINFO:
                if len(payload) >= _in6Pktinfo.size:
                    v6 = _in6Pktinfo.unpack_from(payload)
            elif (level, kind) in (
                (socket.IPPROTO_IP, _IP_TTL),
                (_IPPROTO_IPV6, _IPV6_HOPLIMIT),
            ):
                if len(payload) >= _int.size:
                    ttl = _int.unpack_from(payload)[0]
        # Prefer IP_PKTINFO: on a dual-stack socket only it has spec_dst.
        if v4 is not None:
            index, specDst, dst = v4
            return DatagramInfo(
                socket.inet_ntoa(dst),
                socket.inet_ntoa(specDst),
                index,
                ttl,
                truncated,
                _groupOrBroadcastPacked(dst, specDst),
            )
        if v6 is not None:
            dst6 = socket.inet_ntop(socket.AF_INET6, v6[0])
            return DatagramInfo(
                dst6, dst6, v6[1], ttl, truncated, _groupOrBroadcastPacked(v6[0], None)
            )
        return DatagramInfo(None, None, None, ttl, truncated)


def listenWithInfo(
    reactor, port: int, protocol, interface: str = "", maxPacketSize: int = 65535
) -> InfoDatagramPort:
    """
    Like C{reactor.listenUDP}, but with an L{InfoDatagramPort}.

    @param reactor: an L{IReactorFDSet} provider.
    @param port: the port number to bind; 0 for any.
    @param protocol: a L{DatagramProtocol}.
    @param interface: the local address to bind; C{""} for all IPv4, C{"::"}
        for dual stack.
    @param maxPacketSize: the read buffer size; longer datagrams are
        truncated and reported with C{truncated=True}.
    @return: the listening port.
    @raise twisted.internet.error.CannotListenError: if binding fails.
    """
    p = InfoDatagramPort(
        port, protocol, interface, maxPacketSize=maxPacketSize, reactor=reactor
    )
    p.startListening()
    return p


def adoptWithInfo(reactor, fd: int, protocol, maxPacketSize: int = 65535) -> InfoDatagramPort:
    """
    Like L{listenWithInfo}, on a socket bound by someone else (a
    supervisor's, see L{netservices._common.workers}): it should have been
    made by an L{InfoDatagramPort}, so that the kernel already reports the
    destination and TTL.  The port listens on its own copy of C{fd}, which
    stays open.

    @return: the listening port.
    """
    with socket.socket(fileno=os.dup(fd)) as probe:
        family = probe.family
    os.set_blocking(fd, False)
    p = InfoDatagramPort._fromListeningDescriptor(
        reactor, fd, family, protocol, maxPacketSize=maxPacketSize
    )
    p.startListening()
    return p
