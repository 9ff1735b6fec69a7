# -*- test-case-name: tests._common.test_ratelimit -*-
"""
Token buckets: one per source prefix in a bounded LRU table, plus a global
bucket, in the style of BIND's response rate limiting.
"""

from __future__ import annotations

from collections import OrderedDict

import attrs
from twisted.internet.interfaces import IReactorTime

from netservices._common.addresses import packIP


class TokenBucket:
    """
    A token bucket: C{rate} tokens a second up to C{burst}, starting full.

    @ivar tokens: the tokens available at the last update.
    """

    # One per chat connection and per source prefix: no instance dict.
    __slots__ = ("rate", "burst", "tokens", "_updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._updated = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """
        Take C{cost} tokens if there are enough.

        @return: whether they were taken.
        """
        # Comparisons, not max() and min(): this runs for every datagram
        # answered.
        tokens = self.tokens
        elapsed = now - self._updated
        if elapsed > 0.0:
            tokens += elapsed * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self._updated = now
        if tokens >= cost:
            tokens -= cost
            self.tokens = tokens
            return True
        self.tokens = tokens
        return False


@attrs.frozen
class RateLimits:
    """
    Settings of a L{PrefixRateLimiter}.

    @ivar rate: tokens per second for each source prefix.
    @ivar burst: bucket size for each source prefix.
    @ivar globalRate: tokens per second shared by all sources (0: no cap).
    @ivar globalBurst: bucket size of the global cap.
    @ivar tableSize: how many prefixes are remembered; the least recently
        seen is forgotten first, so spoofed sources cannot exhaust memory.
    @ivar ipv4Prefix: prefix length grouping IPv4 sources.
    @ivar ipv6Prefix: prefix length grouping IPv6 sources.
    """

    rate: float = 20.0
    burst: float = 40.0
    globalRate: float = 2000.0
    globalBurst: float = 4000.0
    tableSize: int = 20000
    ipv4Prefix: int = 24
    ipv6Prefix: int = 56


#: Sources whose bucket keys (and, in L{netservices._common.udp}, whose
#: address checks) are remembered: a cache, emptied when full.
KEY_CACHE_SIZE = 4096


class PrefixRateLimiter:
    """
    Decides whether a source may be answered: it needs a token from its
    prefix's bucket and one from the global bucket.
    """

    def __init__(self, limits: RateLimits, clock: IReactorTime) -> None:
        self.limits = limits
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        # Each source's key, computed once per source and not for every
        # datagram; emptied when full, so that it stays small.
        self._keys: dict[str, object] = {}
        self._shift4 = 32 - limits.ipv4Prefix
        self._shift6 = 128 - limits.ipv6Prefix
        self._global = (
            TokenBucket(limits.globalRate, limits.globalBurst, clock.seconds())
            if limits.globalRate > 0
            else None
        )

    def __len__(self) -> int:
        return len(self._buckets)

    def _key(self, host: str):
        key = self._keys.get(host)
        if key is None:
            if len(self._keys) >= KEY_CACHE_SIZE:
                self._keys.clear()
            key = self._keys[host] = self._computeKey(host)
        return key

    def _computeKey(self, host: str):
        # Integers, not the text of ipaddress networks: ipaddress costs
        # microseconds.
        packed = packIP(host)
        if packed is None:
            return host
        number = int.from_bytes(packed, "big")
        if len(packed) == 4:
            return (4, number >> self._shift4)
        return (6, number >> self._shift6)

    def check(self, host: str, cost: float = 1.0) -> str | None:
        """
        Spend C{cost} tokens for C{host}.

        @return: L{None} if allowed, else the refusal reason:
            C{"rate-limit-prefix"} or C{"rate-limit-global"}.
        """
        now = self._clock.seconds()
        key = self._key(host)
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.limits.rate, self.limits.burst, now)
            while len(self._buckets) >= self.limits.tableSize:
                self._buckets.popitem(last=False)
        self._buckets[key] = bucket
        if not bucket.take(now, cost):
            return "rate-limit-prefix"
        if self._global is not None and not self._global.take(now, cost):
            return "rate-limit-global"
        return None

    def refund(self, host: str, cost: float = 1.0) -> None:
        """
        Give back C{cost} tokens taken for C{host} by L{check}, for work
        that turned out not to count (a login that succeeded, say); its
        bucket never holds more than C{burst}.  The global bucket is not
        refunded.
        """
        bucket = self._buckets.get(self._key(host))
        if bucket is not None:
            bucket.tokens = min(bucket.burst, bucket.tokens + cost)
