"""
STAMP's NTP and PTPv2 timestamps from and to nanoseconds
(L{echod.stamp.timestamps}): exact where the format allows, rounded as
documented where it does not, at the edges of NTP's window, and checked
against the calendar of Python's datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from echod.stamp.timestamps import (
    NTP_UNIX_OFFSET,
    from_wire,
    ns_from_ntp,
    ns_from_ptp,
    ntp_from_ns,
    ptp_from_ns,
    to_wire,
)

NS = 1_000_000_000
WORD = 1 << 32


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_ns(*fields: int, nanosecond: int = 0) -> int:
    """Nanoseconds since the Unix epoch of a UTC date and time, by the datetime module's calendar."""
    return (datetime(*fields, tzinfo=UTC) - EPOCH) // timedelta(seconds=1) * NS + nanosecond


def ntp(seconds: int, fraction: int) -> int:
    return seconds << 32 | fraction


#: RFC 4330's window: from NTP second 2^31 of era 0 to the last second of era 1 before 2^31.
WINDOW_START = utc_ns(1968, 1, 20, 3, 14, 8)
WINDOW_END = utc_ns(2104, 2, 26, 9, 42, 24)  # the first instant past it
ROLLOVER = utc_ns(2036, 2, 7, 6, 28, 16)  # NTP era 1 begins


def test_the_ntp_epoch_is_seventy_years_of_the_calendar_before_the_unix_one():
    assert (EPOCH - datetime(1900, 1, 1, tzinfo=UTC)) // timedelta(seconds=1) == NTP_UNIX_OFFSET


def test_the_unix_epoch_is_ntp_second_2208988800_with_no_fraction():
    assert ntp_from_ns(0) == ntp(NTP_UNIX_OFFSET, 0)
    assert ns_from_ntp(ntp(NTP_UNIX_OFFSET, 0)) == 0


def test_half_a_second_is_half_the_fraction():
    assert ntp_from_ns(utc_ns(2026, 12, 3, 12, 0, 0, nanosecond=NS // 2)) & (WORD - 1) == 1 << 31


def test_a_time_before_1970_inside_the_window_comes_back():
    before = utc_ns(1969, 12, 31, 23, 59, 59, nanosecond=999_999_999)
    assert ntp_from_ns(before) >> 32 == NTP_UNIX_OFFSET - 1
    assert ns_from_ntp(ntp_from_ns(before)) == before


def test_the_2036_rollover_wraps_the_seconds_to_zero_and_both_sides_come_back():
    assert ntp_from_ns(ROLLOVER) == 0
    last = ROLLOVER - 1
    assert ntp_from_ns(last) == ntp(WORD - 1, WORD - 4)  # 0.999999999 s is 2^32 - 4.29 units, rounded
    assert ns_from_ntp(0) == ROLLOVER
    assert ns_from_ntp(ntp_from_ns(last)) == last


def test_the_window_ends_are_kept_and_a_time_past_either_is_136_years_off():
    assert ntp_from_ns(WINDOW_START) == ntp(1 << 31, 0)
    assert ns_from_ntp(ntp_from_ns(WINDOW_START)) == WINDOW_START
    assert ns_from_ntp(ntp_from_ns(WINDOW_START - 1)) == WINDOW_START - 1 + WORD * NS
    assert ns_from_ntp(ntp_from_ns(WINDOW_END - 1)) == WINDOW_END - 1
    assert ns_from_ntp(ntp_from_ns(WINDOW_END)) == WINDOW_END - WORD * NS


def test_a_fraction_finer_than_a_nanosecond_goes_to_the_nearest_one_halves_up():
    base = ntp(NTP_UNIX_OFFSET, 0)
    assert [ns_from_ntp(base | fraction) for fraction in (1, 2, 3)] == [0, 0, 1]  # 0.23, 0.47, 0.70 ns
    # 2^22 units are 10^9 / 1024 ns = 976562.5 ns exactly.
    assert ns_from_ntp(base | 1 << 22) == 976_563
    # The last unit of a second is 0.23 ns short of the next second: it goes to it.
    assert ns_from_ntp(base | (WORD - 1)) == NS


@given(st.integers(WINDOW_START, WINDOW_END - 1))
def test_every_nanosecond_of_the_window_comes_back_exactly_through_ntp(ns):
    assert ns_from_ntp(ntp_from_ns(ns)) == ns


@given(st.integers(0, (1 << 64) - 1))
def test_an_ntp_timestamp_comes_back_within_the_two_units_a_nanosecond_rounding_costs(value):
    back = ntp_from_ns(ns_from_ntp(value))
    distance = (back - value + (1 << 63)) % (1 << 64) - (1 << 63)  # across the wrap at 2^64 too
    assert abs(distance) <= 2


def test_ptp_counts_seconds_and_nanoseconds_from_1970_and_tai_is_ahead():
    moment = utc_ns(2026, 12, 3, 12, 0, 0, nanosecond=123_456_789)
    seconds = moment // NS
    assert ptp_from_ns(moment) == seconds << 32 | 123_456_789
    assert ptp_from_ns(moment, tai_offset=37) == (seconds + 37) << 32 | 123_456_789
    assert ns_from_ptp(ptp_from_ns(moment, tai_offset=37), tai_offset=37) == moment


def test_a_ptp_nanoseconds_field_past_a_second_is_added_as_it_is():
    assert ns_from_ptp(5 << 32 | 1_500_000_000) == 6_500_000_000


@given(st.integers(0, (WORD - 40) * NS - 1), st.integers(0, 40))
def test_every_nanosecond_from_1970_to_2106_comes_back_exactly_through_ptp(ns, tai_offset):
    # PTP's seconds, TAI - UTC ahead of the Unix ones, run out 2^32 s after 1970.
    assert ns_from_ptp(ptp_from_ns(ns, tai_offset), tai_offset) == ns


@given(st.integers(0, (1 << 64) - 1).filter(lambda value: value & (WORD - 1) < NS))
def test_a_ptp_timestamp_comes_back_exactly(value):
    assert ptp_from_ns(ns_from_ptp(value)) == value


def test_z_chooses_the_format():
    moment = utc_ns(2030, 1, 1, 0, 0, 0, nanosecond=7)
    assert to_wire(moment) == ntp_from_ns(moment)
    assert to_wire(moment, ptp=True, tai_offset=37) == ptp_from_ns(moment, 37)
    assert from_wire(to_wire(moment, ptp=True, tai_offset=37), ptp=True, tai_offset=37) == moment
    assert from_wire(to_wire(moment)) == moment
