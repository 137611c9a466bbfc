"""
What `echod probe` counts, and the figures it makes of them: pure, no I/O.

A probe is one payload sent. Each probe ends with exactly one verdict: answered
intact in time, late (intact, after the timeout), lost (no answer by the end),
corrupted (an answer whose bytes differ) or failed (the connection was refused,
reset or closed before the whole echo came back). Duplicates, answers out of
order and bytes that match no probe are events beside the verdicts.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Verdict(enum.Enum):
    """What became of one probe."""

    OK = "ok"
    LATE = "late"
    LOST = "lost"
    CORRUPTED = "corrupted"
    FAILED = "failed"


#: Exit statuses of `echod probe` (outside monitoring mode), as ping(8) and the issue define them.
STATUS_OK = 0
STATUS_LOSS = 1
STATUS_ERROR = 2
STATUS_CORRUPTED = 3

#: Relative width of a histogram bucket (see L{Distribution}): percentiles are
#: exact to within half of it, 0.05%.
_BUCKET_GROWTH = 1.001
_LOG_GROWTH = math.log(_BUCKET_GROWTH)


class Distribution:
    """
    Round-trip (or connect) times in seconds: count, min, avg, max, mdev and
    percentiles.

    mdev is what ping(8) prints: the population standard deviation,
    sqrt(mean(x²) - mean(x)²), computed here with Welford's update, which is
    the same quantity without the cancellation of the sums of squares.

    Percentiles are nearest-rank (the smallest time that at least p% of the
    samples do not exceed) over a histogram of geometric buckets 0.1% wide,
    so that a probe left running for days at 1,000 probes a second keeps a few
    thousand counters instead of every sample; each percentile is the middle
    of its bucket, within 0.05% of the true sample.
    """

    def __init__(self) -> None:
        self.count = 0
        self.min = math.inf
        self.max = -math.inf
        self._mean = 0.0
        self._m2 = 0.0
        self._buckets: dict[int, int] = {}

    def add(self, seconds: float) -> None:
        """Count one sample."""
        self.count += 1
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)
        delta = seconds - self._mean
        self._mean += delta / self.count
        self._m2 += delta * (seconds - self._mean)
        bucket = _bucket(seconds)
        self._buckets[bucket] = self._buckets.get(bucket, 0) + 1

    @property
    def mean(self) -> float | None:
        return self._mean if self.count else None

    @property
    def mdev(self) -> float | None:
        return math.sqrt(self._m2 / self.count) if self.count else None

    def percentile(self, p: float) -> float | None:
        """The nearest-rank C{p}th percentile (0 < p ≤ 100), or None without samples."""
        if not self.count:
            return None
        rank = max(1, math.ceil(p / 100 * self.count))
        # The extremes are known exactly.
        if rank == 1:
            return self.min
        if rank == self.count:
            return self.max
        seen = 0
        for bucket in sorted(self._buckets):
            seen += self._buckets[bucket]
            if seen >= rank:
                # Never beyond the extremes, which a bucket's middle may be.
                return min(max(_middle(bucket), self.min), self.max)
        raise AssertionError("bucket counts do not add up to the sample count")

    def summary_ms(self) -> dict[str, float | None]:
        """min, avg, max, mdev, p50, p90 and p99 in milliseconds (None for each, without samples)."""
        if not self.count:
            return dict.fromkeys(("min", "avg", "max", "mdev", "p50", "p90", "p99"))
        figures = {"min": self.min, "avg": self.mean, "max": self.max, "mdev": self.mdev}
        figures.update({f"p{p}": self.percentile(p) for p in (50, 90, 99)})
        return {key: value * 1000 for key, value in figures.items()}


def _bucket(seconds: float) -> int:
    # Times at or below a nanosecond (a clock that did not move) share one bucket.
    if seconds <= 1e-9:
        return -(1 << 30)
    return math.floor(math.log(seconds) / _LOG_GROWTH)


def _middle(bucket: int) -> float:
    if bucket == -(1 << 30):
        return 0.0
    return _BUCKET_GROWTH ** (bucket + 0.5)


@dataclass
class Tally:
    """The counts of a run so far."""

    sent: int = 0
    received: int = 0
    late: int = 0
    lost: int = 0
    corrupted: int = 0
    failed: int = 0
    duplicates: int = 0
    reordered: int = 0
    #: Answers (datagrams) that match no probe sent: counted as corruption.
    unexpected: int = 0
    #: Bytes on a stream beyond every probe's echo: counted as corruption, in bytes (a stream has
    #: no answers to count, and its reads are cut anyhow).
    unexpected_bytes: int = 0

    def __post_init__(self) -> None:
        self.rtt = Distribution()
        self.connect = Distribution()

    def decide(self, verdict: Verdict) -> None:
        """Count a probe's verdict."""
        if verdict is Verdict.OK:
            self.received += 1
        elif verdict is Verdict.LATE:
            self.late += 1
        elif verdict is Verdict.LOST:
            self.lost += 1
        elif verdict is Verdict.CORRUPTED:
            self.corrupted += 1
        else:
            self.failed += 1

    def lost_turned_late(self) -> None:
        """A probe counted lost got its intact answer after all, after the timeout."""
        self.lost -= 1
        self.late += 1

    def lost_turned_corrupted(self) -> None:
        """A probe counted lost got an answer after the timeout, with wrong bytes."""
        self.lost -= 1
        self.corrupted += 1

    @property
    def decided(self) -> int:
        return self.received + self.late + self.lost + self.corrupted + self.failed

    @property
    def in_flight(self) -> int:
        """Probes sent whose timeout has not passed yet, with no answer so far."""
        return self.sent - self.decided

    @property
    def loss_percent(self) -> float | None:
        """The share of decided probes that got no intact answer in time; None before any is decided."""
        if not self.decided:
            return None
        return 100 * (self.decided - self.received) / self.decided


def exit_status(tally: Tally, error: bool) -> int:
    """
    The exit status of a run: 3 if any byte came back corrupted, else 2 after
    an error (the run's own, or a probe's failed connection) or when no probe
    was sent at all, else 1 if any probe was lost or late, or none was
    answered at all; else 0.
    """
    if tally.corrupted or tally.unexpected or tally.unexpected_bytes:
        return STATUS_CORRUPTED
    if error or tally.failed or not tally.sent:
        return STATUS_ERROR
    if tally.lost or tally.late or (tally.sent and not tally.received):
        return STATUS_LOSS
    return STATUS_OK
