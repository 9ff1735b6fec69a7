"""
Tests for L{netservices._common.ratelimit}.
"""

from __future__ import annotations

import math
import random
import socket
from fractions import Fraction

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from netservices._common.ratelimit import PrefixRateLimiter, RateLimits, TokenBucket

#: A clock step that binary floating point represents exactly, so that
#: token arithmetic with the rates below has no rounding at all.
STEP = 2.0**-10


class TokenBucketTests(SynchronousTestCase):
    """
    L{TokenBucket}, on a L{Clock}.
    """

    def test_startsFull(self):
        """
        A new bucket allows exactly C{burst} takes at once.
        """
        clock = Clock()
        bucket = TokenBucket(rate=4.0, burst=3.0, now=clock.seconds())
        self.assertEqual(
            [bucket.take(clock.seconds()) for _ in range(5)],
            [True, True, True, False, False],
        )

    def test_refill(self):
        """
        Tokens come back at C{rate} per second: one every 1/rate seconds,
        not before.
        """
        clock = Clock()
        bucket = TokenBucket(rate=4.0, burst=1.0, now=clock.seconds())
        self.assertTrue(bucket.take(clock.seconds()))
        clock.advance(0.125)
        self.assertFalse(bucket.take(clock.seconds()))
        clock.advance(0.125)
        self.assertTrue(bucket.take(clock.seconds()))
        self.assertFalse(bucket.take(clock.seconds()))
        self.assertEqual(bucket.tokens, 0.0)

    def test_capped(self):
        """
        However long the bucket idles, it holds at most C{burst} tokens.
        """
        clock = Clock()
        bucket = TokenBucket(rate=100.0, burst=2.0, now=clock.seconds())
        clock.advance(3600)
        self.assertEqual(
            [bucket.take(clock.seconds()) for _ in range(3)], [True, True, False]
        )

    def test_cost(self):
        """
        A take costs C{cost} tokens, and fails without spending any when
        fewer are left.
        """
        clock = Clock()
        bucket = TokenBucket(rate=1.0, burst=5.0, now=clock.seconds())
        self.assertTrue(bucket.take(clock.seconds(), cost=3.0))
        self.assertFalse(bucket.take(clock.seconds(), cost=3.0))
        self.assertEqual(bucket.tokens, 2.0)
        self.assertTrue(bucket.take(clock.seconds(), cost=2.0))
        self.assertEqual(bucket.tokens, 0.0)

    def test_clockBackwards(self):
        """
        A clock that goes backwards adds no tokens (and takes none away).
        """
        bucket = TokenBucket(rate=10.0, burst=1.0, now=100.0)
        self.assertTrue(bucket.take(100.0))
        self.assertFalse(bucket.take(50.0))
        self.assertEqual(bucket.tokens, 0.0)


class PrefixRateLimiterTests(SynchronousTestCase):
    """
    L{PrefixRateLimiter}, on a L{Clock}.
    """

    def setUp(self):
        self.clock = Clock()

    def test_keysRemembered(self):
        """
        Each source's bucket key is remembered for the next datagram, in a
        memory emptied when it holds L{KEY_CACHE_SIZE} sources; the buckets
        are the same either way.
        """
        from netservices._common.ratelimit import KEY_CACHE_SIZE

        limiter = PrefixRateLimiter(RateLimits(rate=1, burst=2, globalRate=0), self.clock)
        answers = [limiter.check("192.0.2.1") for _ in range(3)]
        self.assertEqual(answers, [None, None, "rate-limit-prefix"])
        for number in range(KEY_CACHE_SIZE + 10):
            limiter.check(socket.inet_ntoa((0x0A000000 + number * 256).to_bytes(4, "big")))
            self.assertLessEqual(len(limiter._keys), KEY_CACHE_SIZE)
        self.assertEqual(limiter.check("192.0.2.77"), "rate-limit-prefix")

    def test_burstThenRate(self):
        """
        A BIND-style flood: 1,000 checks from one address spread over just
        under a second get exactly C{burst} plus C{rate} times the elapsed
        time (rounded down) answers; then another /24 is still answered in
        full.
        """
        limits = RateLimits(rate=20.0, burst=40.0)
        limiter = PrefixRateLimiter(limits, self.clock)
        results = []
        for i in range(1000):
            if i:
                self.clock.advance(STEP)
            results.append(limiter.check("10.0.0.1"))
        elapsed = Fraction(999, 1024)
        self.assertEqual(self.clock.seconds(), float(elapsed))
        expected = int(limits.burst) + math.floor(Fraction(int(limits.rate)) * elapsed)
        self.assertEqual(expected, 59)
        self.assertEqual(results.count(None), expected)
        self.assertEqual(results.count("rate-limit-prefix"), 1000 - expected)
        # The first burst answers come at once.
        self.assertEqual(results[:40], [None] * 40)

        self.assertEqual([limiter.check("10.0.1.1") for _ in range(10)], [None] * 10)

    def test_sameSlash24Shares(self):
        """
        IPv4 sources in one /24 spend the same bucket.
        """
        limiter = PrefixRateLimiter(RateLimits(rate=1.0, burst=3.0), self.clock)
        self.assertEqual(
            [limiter.check(f"192.0.2.{n}") for n in (1, 2, 3, 4)],
            [None, None, None, "rate-limit-prefix"],
        )
        self.assertIsNone(limiter.check("192.0.3.1"))
        self.assertEqual(len(limiter), 2)

    def test_v4MappedSharesWithIPv4(self):
        """
        A v4-mapped source (from a dual-stack socket) spends the bucket of
        the plain IPv4 address.
        """
        limiter = PrefixRateLimiter(RateLimits(rate=1.0, burst=1.0), self.clock)
        self.assertIsNone(limiter.check("192.0.2.1"))
        self.assertEqual(limiter.check("::ffff:192.0.2.1"), "rate-limit-prefix")

    def test_ipv6Slash56(self):
        """
        IPv6 sources in one /56 spend the same bucket; another /56 has its
        own.
        """
        limiter = PrefixRateLimiter(RateLimits(rate=1.0, burst=2.0), self.clock)
        self.assertEqual(
            [
                limiter.check("2001:db8:0:100::1"),
                limiter.check("2001:db8:0:1ff:ffff::2"),
                limiter.check("2001:db8:0:142::3"),
            ],
            [None, None, "rate-limit-prefix"],
        )
        self.assertIsNone(limiter.check("2001:db8:0:200::1"))
        self.assertEqual(len(limiter), 2)

    def test_globalCap(self):
        """
        Once the global bucket is empty, every source is refused with
        C{"rate-limit-global"}, and it refills at the global rate.
        """
        limiter = PrefixRateLimiter(
            RateLimits(rate=10.0, burst=10.0, globalRate=2.0, globalBurst=5.0),
            self.clock,
        )
        results = [limiter.check(f"10.0.{n}.1") for n in range(8)]
        self.assertEqual(results, [None] * 5 + ["rate-limit-global"] * 3)
        self.clock.advance(0.5)
        self.assertEqual(
            [limiter.check("10.1.0.1"), limiter.check("10.1.1.1")],
            [None, "rate-limit-global"],
        )

    def test_noGlobalCap(self):
        """
        A global rate of 0 means no global cap.
        """
        limiter = PrefixRateLimiter(
            RateLimits(rate=1.0, burst=1.0, globalRate=0.0, globalBurst=1.0),
            self.clock,
        )
        self.assertEqual([limiter.check(f"10.0.{n}.1") for n in range(50)], [None] * 50)

    def test_leastRecentForgotten(self):
        """
        When the table is full, the least recently seen prefix is forgotten:
        it comes back with a full bucket, while a recently seen one keeps
        its empty bucket.
        """
        limiter = PrefixRateLimiter(RateLimits(rate=1.0, burst=1.0, tableSize=2), self.clock)
        self.assertIsNone(limiter.check("10.0.1.1"))
        self.assertIsNone(limiter.check("10.0.2.1"))
        self.assertEqual(limiter.check("10.0.1.1"), "rate-limit-prefix")
        self.assertIsNone(limiter.check("10.0.3.1"))  # forgets 10.0.2.0/24
        self.assertEqual(len(limiter), 2)
        self.assertEqual(limiter.check("10.0.1.1"), "rate-limit-prefix")
        self.assertIsNone(limiter.check("10.0.2.1"))

    def spoof(self, tableSize: int, sources: int) -> PrefixRateLimiter:
        """
        Check C{sources} random IPv4 sources (seeded, so always the same
        ones) with a table of C{tableSize} prefixes, and assert that the
        table reached but never exceeded its size.

        @return: the limiter.
        """
        limiter = PrefixRateLimiter(RateLimits(tableSize=tableSize), self.clock)
        rng = random.Random(1)
        largest = 0
        for _ in range(sources):
            limiter.check(socket.inet_ntoa(rng.getrandbits(32).to_bytes(4, "big")))
            largest = max(largest, len(limiter))
        self.assertEqual(largest, tableSize)
        return limiter

    def test_spoofedSourcesSmallTable(self):
        """
        100,000 spoofed sources never grow a 500-entry table beyond 500.
        """
        self.assertEqual(len(self.spoof(500, 100_000)), 500)

    def test_spoofedSourcesDefaultTable(self):
        """
        The default table size (20,000) is a bound too: 50,000 spoofed
        sources (fewer than above, to stay fast) overflow it 30,000 times.
        """
        self.assertEqual(RateLimits().tableSize, 20_000)
        self.assertEqual(len(self.spoof(20_000, 50_000)), 20_000)


class RefundTests(SynchronousTestCase):
    """
    L{PrefixRateLimiter.refund}.
    """

    def test_refund(self):
        """
        A refund gives back tokens to the source's prefix, never beyond the
        burst; an unknown source's refund does nothing.
        """
        clock = Clock()
        limiter = PrefixRateLimiter(
            RateLimits(rate=1.0, burst=2.0, globalRate=0, ipv4Prefix=32), clock
        )
        self.assertIsNone(limiter.check("192.0.2.1"))
        self.assertIsNone(limiter.check("192.0.2.1"))
        self.assertEqual(limiter.check("192.0.2.1"), "rate-limit-prefix")
        limiter.refund("192.0.2.1")
        self.assertIsNone(limiter.check("192.0.2.1"))
        limiter.refund("192.0.2.1", 5.0)
        self.assertIsNone(limiter.check("192.0.2.1"))
        self.assertIsNone(limiter.check("192.0.2.1"))
        self.assertEqual(limiter.check("192.0.2.1"), "rate-limit-prefix")
        limiter.refund("192.0.2.99")
        self.assertEqual(len(limiter), 1)
