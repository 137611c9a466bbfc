"""
Warnings that clients can set off, kept from flooding the log.

A client can make echod warn as often as it can connect: a bad bytecount
header, a connection over a cap. Logged every time, 3,000 of them took under
a second, and past journald's rate limit the journal then drops echod's
other messages too, the ones that matter. So such a warning is logged in full
once, and the ones that follow within L{INTERVAL} are only counted, by
source, and summed up in one line at the end of it: "... and 2,999 more from
127.0.0.2 in the last 10s". A flood that goes on gets one summary line per
interval; once an interval passes without any, the next warning is logged in
full again. The access log keeps the detail of every connection.

No I/O here and the clock is given, so that it is tested without waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Seconds over which the warnings after the first are counted, not logged.
INTERVAL = 10.0
#: How many sources are counted apart in one interval; any more are counted
#: together, so that a flood from many addresses cannot grow the table.
MAX_SOURCES = 1024


@dataclass(frozen=True)
class Summary:
    """The warnings held back over one interval."""

    #: How many.
    count: int
    #: Over how many seconds.
    seconds: float
    #: From how many sources: those counted apart ...
    sources: int
    #: The source of most of them, and how many it caused.
    top: str
    top_count: int
    #: ... and whether there were more than that.
    more_sources: bool = False

    def describe(self, what: str) -> str:
        """
        The summary as words, e.g. C{"2,999 more bad requests from 127.0.0.2
        in the last 10s"} for C{what="bad requests"}.
        """
        if self.sources == 1:
            who = f"from {self.top}" if self.top else ""
        else:
            over = "over " if self.more_sources else ""
            who = f"from {over}{self.sources:,} sources, {self.top_count:,} from {self.top}"
        return " ".join(part for part in (f"{self.count:,} more", what, who) if part) + (
            f" in the last {self.seconds:.3g}s"
        )


class WarningThrottle:
    """
    Lets the first of a kind of warning through, and counts those that follow
    within L{INTERVAL} for one L{Summary}, given to C{report} at its end.
    """

    def __init__(
        self,
        clock: IReactorTime,
        report: Callable[[Summary], None],
        interval: float = INTERVAL,
        max_sources: int = MAX_SOURCES,
        quiet: Callable[[], None] | None = None,
    ) -> None:
        """
        C{quiet}, if given, is called when an interval passes without a
        warning after some came: the end of an episode.
        """
        self._clock = clock
        self._report = report
        self._quiet = quiet
        self._interval = interval
        self._max_sources = max_sources
        self._timer: IDelayedCall | None = None
        self._since = 0.0
        self._count = 0
        self._by_source: dict[str, int] = {}
        self._more_sources = False

    def allow(self, source: str = "") -> bool:
        """
        Whether to log this warning, caused by C{source}, in full. If not, it
        is counted for the summary.
        """
        if self._timer is None:
            self._start()
            return True
        self._count += 1
        by_source = self._by_source
        if source in by_source:
            by_source[source] += 1
        elif len(by_source) < self._max_sources:
            by_source[source] = 1
        else:
            self._more_sources = True
        return False

    def flush(self) -> None:
        """Report what is held back now, and let the next warning through (when stopping)."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        self._summarise()

    def _start(self) -> None:
        self._since = self._clock.seconds()
        self._timer = self._clock.callLater(self._interval, self._end_of_interval)

    def _end_of_interval(self) -> None:
        if self._summarise():
            self._start()  # the flood may go on: keep counting, one summary an interval
        else:
            self._timer = None  # a quiet interval: the next warning is logged in full
            if self._quiet is not None:
                self._quiet()

    def _summarise(self) -> bool:
        if not self._count:
            return False
        top = max(self._by_source, key=self._by_source.__getitem__)
        summary = Summary(
            count=self._count,
            seconds=self._clock.seconds() - self._since,
            sources=len(self._by_source),
            top=top,
            top_count=self._by_source[top],
            more_sources=self._more_sources,
        )
        self._count, self._by_source, self._more_sources = 0, {}, False
        self._report(summary)
        return True
