# -*- test-case-name: tests._common.test_udp -*-
"""
The UDP policy every datagram service follows before it answers anybody.

UDP sources are not authenticated, so an answer may go to a victim chosen by
whoever forged the request.  A datagram is refused, counted and logged
(rate-limited) when:

  - it was addressed to a broadcast or multicast destination (one request
    would make every host on the segment answer);
  - it came from a port below 1024, from 2049 (NFS), or from a port this
    process serves: those are where other responders live, and answering
    them can start an endless ping-pong (CVE-1999-0103);
  - its source address is multicast, broadcast or unspecified (never a
    real sender);
  - it was truncated by the kernel.

Answers are then limited per source prefix (/24, /56 by default) by token
buckets in a bounded LRU table, plus one global bucket.
"""

from __future__ import annotations


from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python import usage

from netservices._common.addresses import joinHostPort, packIP
from netservices._common.datagram import DatagramInfo
from netservices._common.listen import defaultOf, nonNegativeFloat, positiveInt
from netservices._common.logs import RefusalLog
from netservices._common.ratelimit import KEY_CACHE_SIZE, PrefixRateLimiter, RateLimits

#: Source ports of services that answer unconditionally.
NFS_PORT = 2049
RESERVED_PORTS_BELOW = 1024

_UNSPECIFIED_V6 = bytes(16)


class DatagramGuard:
    """
    The UDP policy of one service, shared by all its listeners.

    @ivar ownPorts: the UDP ports this process listens on.
    @ivar limiter: the per-prefix and global answer rate limits.
    @ivar refusals: counts and logs refused datagrams.
    @ivar counts: datagrams C{received} and C{answered}.
    """

    def __init__(self, limits: RateLimits, clock: IReactorTime, log: Logger) -> None:
        self.ownPorts: set[int] = set()
        self.limiter = PrefixRateLimiter(limits, clock)
        self.refusals = RefusalLog(log, clock, "datagram")
        self.counts = {"received": 0, "answered": 0}
        # The verdict on each recent source address (a cache, emptied when
        # full): the checks are the same for every datagram from it.
        self._hostVerdicts: dict[str, str | None] = {}

    def check(self, host: str, port: int, info: DatagramInfo) -> str | None:
        """
        @return: why a datagram from C{(host, port)} must not be answered,
            or L{None}.
        """
        if info.truncated:
            return "truncated"
        if info.addressedToGroupOrBroadcast:
            return "broadcast-or-multicast-destination"
        if port < RESERVED_PORTS_BELOW:
            return "reserved-source-port"
        if port == NFS_PORT:
            return "nfs-source-port"
        if port in self.ownPorts:
            return "own-port-source"
        verdicts = self._hostVerdicts
        try:
            return verdicts[host]
        except KeyError:
            if len(verdicts) >= KEY_CACHE_SIZE:
                verdicts.clear()
            verdict = verdicts[host] = self._checkHost(host)
            return verdict

    @staticmethod
    def _checkHost(host: str) -> str | None:
        """
        @return: why a datagram from C{host} must not be answered, or
            L{None}.
        """
        # Packed bytes, not ipaddress objects: this runs for every new source.
        packed = packIP(host)
        if packed is None:
            return "multicast-source"
        first = packed[0]
        if len(packed) == 16:
            if first == 0xFF:
                return "multicast-source"
            if packed == _UNSPECIFIED_V6:
                return "unspecified-source"
            return None
        if 224 <= first < 240:
            return "multicast-source"
        if first == 0:
            return "unspecified-source"
        if first == 255:
            return "broadcast-source"
        return None


class GuardedDatagramProtocol(DatagramProtocol):
    """
    A datagram protocol that applies a L{DatagramGuard}: subclasses
    implement L{handleDatagram} and answer through L{reply}.

    @cvar wantsDatagramInfo: whether L{handleDatagram} uses the
        L{DatagramInfo} beyond the policy's destination check.  Subclasses
        that do not set it to L{False} and get faster reads on a unicast
        bind (L{netservices._common.datagram.InfoDatagramPort}).
    """

    noisy = False
    wantsDatagramInfo = True

    def __init__(self, guard: DatagramGuard) -> None:
        self.guard = guard

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.datagramReceivedWithInfo(data, addr, DatagramInfo.unknown())

    def datagramReceivedWithInfo(
        self, data: bytes, addr: tuple[str, int], info: DatagramInfo
    ) -> None:
        """
        Check a datagram against the policy, then hand it to
        L{handleDatagram}.
        """
        self.guard.counts["received"] += 1
        reason = self.guard.check(addr[0], addr[1], info)
        if reason is not None:
            self.guard.refusals.refuse(reason, joinHostPort(*addr), size=len(data))
            return
        self.handleDatagram(data, addr, info)

    def handleDatagram(
        self, data: bytes, addr: tuple[str, int], info: DatagramInfo
    ) -> None:
        """
        Handle a datagram that passed the policy.
        """
        raise NotImplementedError()

    def reply(
        self,
        data: bytes,
        addr: tuple[str, int],
        limiter: PrefixRateLimiter | None = None,
    ) -> bool:
        """
        Send C{data} to C{addr} if the rate limits allow it.

        @param limiter: the limiter to spend a token from; the guard's own
            by default.
        @return: whether it was sent.
        """
        # Not "limiter or ...": a limiter with an empty table is false.
        if limiter is None:
            limiter = self.guard.limiter
        reason = limiter.check(addr[0])
        if reason is not None:
            self.guard.refusals.refuse(reason, joinHostPort(*addr))
            return False
        try:
            self.transport.write(data, addr)
        except OSError as e:
            self.guard.refusals.refuse("send-failed", joinHostPort(*addr), error=str(e))
            return False
        self.guard.counts["answered"] += 1
        return True


class DatagramPolicyOptions(usage.Options):
    """
    Options for the answer rate limits of a UDP service.
    """

    optParameters = [
        ["rate", None, defaultOf(RateLimits, "rate"), "Answers per second to one source prefix.", nonNegativeFloat],
        ["burst", None, defaultOf(RateLimits, "burst"), "Answers in a burst to one source prefix.", nonNegativeFloat],
        ["global-rate", None, defaultOf(RateLimits, "globalRate"), "Answers per second to everybody (0: no cap).", nonNegativeFloat],
        ["global-burst", None, defaultOf(RateLimits, "globalBurst"), "Answers in a burst to everybody.", nonNegativeFloat],
        ["table-size", None, defaultOf(RateLimits, "tableSize"), "Source prefixes remembered (least recent forgotten first).", positiveInt],
        ["ipv4-prefix", None, defaultOf(RateLimits, "ipv4Prefix"), "Prefix length grouping IPv4 sources (0-32).", int],
        ["ipv6-prefix", None, defaultOf(RateLimits, "ipv6Prefix"), "Prefix length grouping IPv6 sources (0-128).", int],
    ]

    def postOptions(self) -> None:
        self["rate-limits"] = self.rateLimits()
        super().postOptions()

    def rateLimits(self) -> RateLimits:
        """
        @return: the rate limits chosen on the command line.
        @raise usage.UsageError: for a prefix length out of range.
        """
        if not 0 <= self["ipv4-prefix"] <= 32:
            raise usage.UsageError("--ipv4-prefix must be 0-32")
        if not 0 <= self["ipv6-prefix"] <= 128:
            raise usage.UsageError("--ipv6-prefix must be 0-128")
        return RateLimits(
            rate=self["rate"],
            burst=self["burst"],
            globalRate=self["global-rate"],
            globalBurst=self["global-burst"],
            tableSize=self["table-size"],
            ipv4Prefix=self["ipv4-prefix"],
            ipv6Prefix=self["ipv6-prefix"],
        )
