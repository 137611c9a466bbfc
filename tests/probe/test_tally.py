import math
import random
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echod.probe.tally import (
    STATUS_CORRUPTED,
    STATUS_ERROR,
    STATUS_LOSS,
    STATUS_OK,
    Distribution,
    Tally,
    Verdict,
    exit_status,
)


def filled(samples: list[float]) -> Distribution:
    distribution = Distribution()
    for sample in samples:
        distribution.add(sample)
    return distribution


def nearest_rank(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def ping_mdev(samples_s: list[float]) -> float:
    """mdev as iputils ping computes it: integer microseconds, sqrt(tsum2/n - (tsum/n)^2)."""
    us = [round(s * 1e6) for s in samples_s]
    tsum, tsum2, n = sum(us), sum(u * u for u in us), len(us)
    return math.sqrt(tsum2 / n - (tsum / n) ** 2) / 1e6


def test_min_avg_max_and_mdev_are_what_ping_prints():
    samples = [0.000412, 0.000388, 0.000950, 0.000401, 0.012003, 0.000399]
    d = filled(samples)
    assert d.count == 6
    assert d.min == 0.000388
    assert d.max == 0.012003
    assert d.mean == pytest.approx(statistics.fmean(samples), rel=1e-12)
    assert d.mdev == pytest.approx(ping_mdev(samples), rel=1e-6)
    assert d.mdev == pytest.approx(statistics.pstdev(samples), rel=1e-9)


def test_percentiles_are_nearest_rank():
    samples = [i / 1000 for i in range(1, 101)]  # 1 .. 100 ms
    d = filled(samples)
    assert d.percentile(50) == pytest.approx(0.050, rel=5e-4)
    assert d.percentile(90) == pytest.approx(0.090, rel=5e-4)
    assert d.percentile(99) == pytest.approx(0.099, rel=5e-4)
    assert d.percentile(100) == 0.100
    assert d.percentile(0.5) == 0.001


def test_a_single_sample_is_every_percentile_exactly():
    d = filled([0.000123])
    assert d.percentile(50) == d.percentile(99) == d.min == d.max == 0.000123
    assert d.mdev == 0.0


@given(st.lists(st.floats(min_value=1e-7, max_value=100.0), min_size=1, max_size=300))
def test_percentiles_are_within_half_a_bucket_of_the_exact_samples(samples):
    d = filled(samples)
    for p in (1, 25, 50, 90, 99, 99.9):
        assert d.percentile(p) == pytest.approx(nearest_rank(samples, p), rel=5.1e-4)
        assert d.min <= d.percentile(p) <= d.max


def test_memory_stays_bounded_however_many_samples():
    rng = random.Random(1)
    d = filled([rng.lognormvariate(math.log(0.0005), 0.5) for _ in range(200_000)])
    assert d.count == 200_000
    assert len(d._buckets) < 6000  # 0.1 % buckets over the range the samples span


def test_zero_times_count_and_report_as_zero():
    d = filled([0.0, 0.0, 0.001])
    assert d.min == 0.0
    assert d.percentile(50) == 0.0


def test_no_samples_no_figures():
    d = Distribution()
    assert d.mean is None and d.mdev is None and d.percentile(50) is None
    assert d.summary_ms() == dict.fromkeys(("min", "avg", "max", "mdev", "p50", "p90", "p99"))


def test_summary_is_in_milliseconds():
    ms = filled([0.001, 0.002, 0.003]).summary_ms()
    assert ms["min"] == pytest.approx(1.0)
    assert ms["avg"] == pytest.approx(2.0)
    assert ms["max"] == pytest.approx(3.0)
    assert ms["p50"] == pytest.approx(2.0, rel=5e-4)


def tally(**counts: int) -> Tally:
    t = Tally()
    for name, value in counts.items():
        setattr(t, name, value)
    return t


def test_every_verdict_has_its_count():
    t = Tally(sent=5)
    for verdict in Verdict:
        t.decide(verdict)
    assert (t.received, t.late, t.lost, t.corrupted, t.failed) == (1, 1, 1, 1, 1)
    assert t.decided == 5 and t.in_flight == 0


def test_a_lost_probe_answered_after_its_timeout_becomes_late_or_corrupted():
    t = Tally(sent=2)
    t.decide(Verdict.LOST)
    t.decide(Verdict.LOST)
    t.lost_turned_late()
    t.lost_turned_corrupted()
    assert (t.lost, t.late, t.corrupted, t.decided) == (0, 1, 1, 2)


def test_loss_is_the_share_of_decided_probes_not_answered_intact_in_time():
    assert tally(sent=10, received=8, lost=1, late=1).loss_percent == 20.0
    assert tally(sent=10, received=8, corrupted=1, failed=1).loss_percent == 20.0
    # Probes still awaited (the run was interrupted) count neither way.
    t = tally(sent=10, received=9)
    assert t.in_flight == 1 and t.loss_percent == 0.0
    assert tally(sent=1).loss_percent is None


@pytest.mark.parametrize(
    ("counts", "error", "status"),
    [
        ({"sent": 3, "received": 3}, False, STATUS_OK),
        ({"sent": 3, "received": 3, "duplicates": 2, "reordered": 1}, False, STATUS_OK),
        ({"sent": 3, "received": 2, "lost": 1}, False, STATUS_LOSS),
        ({"sent": 3, "received": 2, "late": 1}, False, STATUS_LOSS),
        ({"sent": 1}, False, STATUS_LOSS),  # interrupted before any answer
        ({"sent": 3, "received": 2, "failed": 1}, False, STATUS_ERROR),
        ({"sent": 0}, True, STATUS_ERROR),
        ({"sent": 0}, False, STATUS_ERROR),  # nothing sent is never a success, whatever the reason
        ({"sent": 3, "received": 1, "lost": 1, "corrupted": 1}, True, STATUS_CORRUPTED),
        ({"sent": 3, "received": 3, "unexpected": 1}, False, STATUS_CORRUPTED),
        ({"sent": 3, "received": 3, "unexpected_bytes": 1}, False, STATUS_CORRUPTED),
    ],
)
def test_exit_status_ranks_corruption_over_errors_over_loss(counts, error, status):
    assert exit_status(tally(**counts), error) == status
