# -*- test-case-name: tests._common.test_logs -*-
"""
Refusals, counted exactly and logged at a bounded rate.

A flood of bad packets or connections must not become a flood of log lines,
so each reason is logged at most once per interval; the lines in between are
counted and reported with the next one, and the exact totals are logged when
the service stops.
"""

from __future__ import annotations

from collections import Counter

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger


class RefusalLog:
    """
    Counts refusals by reason and logs at most one line per reason per
    C{interval} seconds.

    @ivar counts: exact number of refusals per reason.
    """

    def __init__(
        self, log: Logger, clock: IReactorTime, what: str, interval: float = 1.0
    ) -> None:
        """
        @param what: what is refused, for the log line (C{"connection"},
            C{"datagram"}).
        """
        self.log = log
        self.counts: Counter[str] = Counter()
        self._clock = clock
        self._what = what
        self._interval = interval
        self._lastLogged: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def refuse(self, reason: str, peer: str, **fields: object) -> None:
        """
        Count a refusal and log it unless this reason was logged less than
        C{interval} seconds ago.

        @param reason: a short fixed token such as C{"per-peer-limit"}; the
            set of reasons must stay small because each has a table entry.
        @param peer: who was refused, as text.
        """
        self.counts[reason] += 1
        now = self._clock.seconds()
        last = self._lastLogged.get(reason)
        if last is not None and now - last < self._interval:
            self._suppressed[reason] += 1
            return
        self._lastLogged[reason] = now
        suppressed = self._suppressed.pop(reason, 0)
        self.log.warn(
            "refused {what} from {peer}: {reason}{note}",
            what=self._what,
            peer=peer,
            reason=reason,
            suppressed=suppressed,
            note=f" ({suppressed} more since the last line)" if suppressed else "",
            total=self.counts[reason],
            **fields,
        )

    def logTotals(self) -> None:
        """
        Log the exact totals, as a service does when it stops.
        """
        self.log.info(
            "{what} refusals: {summary}",
            what=self._what,
            summary=", ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
            or "none",
            refusals=dict(self.counts),
        )
