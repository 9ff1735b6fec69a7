# -*- test-case-name: tests.multicast.test_stats -*-
"""
Statistics of one stream (one sender's datagrams to one group and port):
pure bookkeeping, fed with sequence numbers and times, no I/O.

Sequence numbers start at 0 with each sender's session, so loss counts
from 0: a receiver that joined late reports what it missed.  Missing
numbers are kept as disjoint ranges; a late arrival that fills one is
counted as reordered, a number seen twice as a duplicate.  Jitter is RFC
3550's interarrival jitter (section 6.4.1, A.8): the smoothed absolute
difference of transit times, in seconds.
"""

from __future__ import annotations

import bisect

#: Most gap ranges remembered per stream; beyond it the oldest are dropped
#: (their datagrams still count as lost).
MAX_GAPS = 4096


class StreamStats:
    """
    One stream's counters.

    @ivar received: distinct data datagrams received.
    @ivar bytes: their bytes.
    @ivar duplicates: datagrams with a sequence number seen before.
    @ivar reordered: datagrams that arrived after a higher number.
    @ivar highest: the highest sequence number seen, or -1.
    @ivar gaps: missing ranges, C{[first, last]}, sorted.
    @ivar finalCount: how many datagrams the sender said it sent, if its
        final record arrived.
    @ivar jitter: RFC 3550 jitter in seconds.
    @ivar firstAt, lastAt: arrival times of the first and last datagram.
    @ivar joinedAt: when the group was joined (for the first-packet delay).
    """

    def __init__(self, joinedAt: float | None = None) -> None:
        self.received = 0
        self.bytes = 0
        self.duplicates = 0
        self.reordered = 0
        self.highest = -1
        self.gaps: list[list[int]] = []
        self._forgotten = 0
        self.finalCount: int | None = None
        self.jitter = 0.0
        self._transit: float | None = None
        self.firstAt: float | None = None
        self.lastAt: float | None = None
        self.joinedAt = joinedAt

    def add(self, sequence: int, size: int, sentAt: float, arrivedAt: float) -> str | None:
        """
        Count one data datagram.

        @param sentAt: the send time from its header, in seconds.
        @param arrivedAt: its arrival time, in seconds.
        @return: C{"new-gap"}, C{"duplicate"}, C{"reordered"} or L{None}.
        """
        if self.firstAt is None:
            self.firstAt = arrivedAt
        self.lastAt = arrivedAt
        transit = arrivedAt - sentAt
        if self._transit is not None:
            self.jitter += (abs(transit - self._transit) - self.jitter) / 16
        self._transit = transit
        event = None
        if sequence > self.highest:
            if sequence > self.highest + 1:
                self._addGap(self.highest + 1, sequence - 1)
                event = "new-gap"
            self.highest = sequence
        elif self._fill(sequence):
            self.reordered += 1
            event = "reordered"
        else:
            self.duplicates += 1
            return "duplicate"
        self.received += 1
        self.bytes += size
        return event

    def finish(self, count: int) -> None:
        """
        The sender's final record: it sent C{count} datagrams (0 to
        C{count - 1}), so any above L{highest} are lost too.
        """
        self.finalCount = count
        if count - 1 > self.highest:
            self._addGap(self.highest + 1, count - 1)
            self.highest = count - 1

    def _addGap(self, first: int, last: int) -> None:
        self.gaps.append([first, last])
        if len(self.gaps) > MAX_GAPS:
            old = self.gaps.pop(0)
            self._forgotten += old[1] - old[0] + 1

    def _fill(self, sequence: int) -> bool:
        i = bisect.bisect_right(self.gaps, [sequence, float("inf")]) - 1
        if i < 0:
            return False
        first, last = self.gaps[i]
        if not first <= sequence <= last:
            return False
        pieces = [[first, sequence - 1]] if first < sequence else []
        if sequence < last:
            pieces.append([sequence + 1, last])
        self.gaps[i : i + 1] = pieces
        return True

    @property
    def lost(self) -> int:
        """
        Sequence numbers up to L{highest} (or the final count) never seen.
        """
        return self._forgotten + sum(last - first + 1 for first, last in self.gaps)

    @property
    def expected(self) -> int:
        """
        How many datagrams the sender sent, as far as we know.
        """
        return self.highest + 1

    @property
    def lossRatio(self) -> float:
        """
        L{lost} over L{expected}; 0 when nothing is expected.
        """
        return self.lost / self.expected if self.expected else 0.0

    @property
    def firstDelay(self) -> float | None:
        """
        Seconds from the join to the first datagram.
        """
        if self.joinedAt is None or self.firstAt is None:
            return None
        return self.firstAt - self.joinedAt

    @property
    def rate(self) -> tuple[float, float]:
        """
        Datagrams and bits per second between the first and last arrival.
        """
        if self.firstAt is None or self.lastAt is None or self.lastAt <= self.firstAt:
            return (0.0, 0.0)
        span = self.lastAt - self.firstAt
        # n datagrams span n - 1 intervals.
        return ((self.received - 1) / span, 8 * self.bytes * (self.received - 1) / self.received / span)

    def summary(self) -> dict:
        """
        @return: the counters as a JSON-ready dictionary.
        """
        pps, bps = self.rate
        return {
            "received": self.received,
            "bytes": self.bytes,
            "expected": self.expected,
            "lost": self.lost,
            "loss": round(self.lossRatio, 6),
            "gaps": [list(g) for g in self.gaps],
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "final": self.finalCount,
            "pps": round(pps, 3),
            "bps": round(bps, 1),
            "jitter_ms": round(self.jitter * 1000, 3),
            "first_delay_ms": None
            if self.firstDelay is None
            else round(self.firstDelay * 1000, 3),
        }
