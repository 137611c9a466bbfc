"""
The Error Estimate (L{echod.stamp.estimate}): its 16 bits, and the
smallest estimate that covers an error, never less than it.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echod.stamp.estimate import ErrorEstimate

NS = 1_000_000_000
#: The largest error an estimate states: Multiplier 255 at Scale 63, 255 x 2^31 s.
LARGEST_NS = 255 * (1 << 31) * NS


def test_the_bits_are_s_z_six_of_scale_and_eight_of_multiplier():
    assert ErrorEstimate.decode(0xC5FF) == ErrorEstimate(True, True, 5, 255)
    assert ErrorEstimate.decode(0x3F01) == ErrorEstimate(False, False, 63, 1)
    assert ErrorEstimate(True, False, 0, 1).encode() == 0x8001
    assert ErrorEstimate(False, True, 1, 2).encode() == 0x4102


@given(st.integers(0, 0xFFFF))
def test_every_field_comes_back(value):
    assert ErrorEstimate.decode(value).encode() == value


def test_the_error_is_the_multiplier_times_two_to_the_scale_less_32_seconds():
    assert ErrorEstimate(scale=32, multiplier=3).seconds == 3
    assert ErrorEstimate(scale=0, multiplier=1).seconds == Fraction(1, 1 << 32)
    assert ErrorEstimate(scale=0, multiplier=1).ns == 1  # 0.23 ns, rounded up


def test_a_multiplier_of_zero_is_read_but_not_valid():
    estimate = ErrorEstimate.decode(0x0000)
    assert estimate.multiplier == 0
    assert not estimate.valid


@pytest.mark.parametrize(("scale", "multiplier"), [(64, 1), (-1, 1), (0, 256), (0, -1)])
def test_a_field_out_of_its_bits_is_refused(scale, multiplier):
    with pytest.raises(ValueError, match="bits"):
        ErrorEstimate(scale=scale, multiplier=multiplier)


@given(st.integers(0, LARGEST_NS), st.booleans(), st.booleans())
def test_the_covering_estimate_is_never_below_the_error_and_the_tightest_there_is(error_ns, synced, ptp):
    estimate = ErrorEstimate.covering(error_ns, synced, ptp)
    error = Fraction(error_ns, NS)
    assert (estimate.synchronized, estimate.ptp, estimate.valid) == (synced, ptp, True)
    assert estimate.seconds >= error
    assert estimate.ns >= error_ns
    # One step less at the same Scale falls short, and so does the finest step of a smaller Scale.
    if estimate.multiplier > 1:
        assert Fraction((estimate.multiplier - 1) << estimate.scale, 1 << 32) < error
    if estimate.scale > 0:
        assert Fraction(255 << (estimate.scale - 1), 1 << 32) < error


def test_no_error_is_the_smallest_valid_estimate():
    assert ErrorEstimate.covering(0, True) == ErrorEstimate(True, False, 0, 1)


def test_sixteen_seconds_is_exactly_two_to_the_four():
    assert ErrorEstimate.covering(16 * NS, False).seconds == 16


def test_an_error_beyond_the_largest_estimate_or_below_zero_is_refused():
    assert ErrorEstimate.covering(LARGEST_NS, False) == ErrorEstimate(False, False, 63, 255)
    with pytest.raises(ValueError, match="more than"):
        ErrorEstimate.covering(LARGEST_NS + 1, False)
    with pytest.raises(ValueError, match="negative"):
        ErrorEstimate.covering(-1, False)
