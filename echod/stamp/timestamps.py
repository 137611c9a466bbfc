"""
STAMP's two timestamp formats (RFC 8762 §4.2.1), from and to nanoseconds
since the Unix epoch on CLOCK_REALTIME, as C{time.time_ns()} and
L{echod.ancillary.Facts.received_ns} give them.

A timestamp is kept as the 64-bit number on the wire (big-endian in the
packet), so that a reflector copies a sender's timestamp bit for bit.

NTP 64-bit (RFC 5905 §6), Z = 0: seconds since 1900-01-01 in the upper 32
bits, a binary fraction of a second in the lower 32 (units of 2^-32 s,
0.23 ns). A nanosecond count goes to the nearest fraction and comes back
exactly: the fraction is finer than a nanosecond, so the error of either
rounding (at most 0.12 ns) never reaches half of one. A fraction that is not
a whole number of nanoseconds comes back rounded to the nearest nanosecond
(halves up).

The format has no era: its seconds wrap on 2036-02-07 06:28:16 UTC. Decoding
takes RFC 4330 §3's window: with the top bit of the seconds set, the time is
in 1968-2036 (era 0); with it clear, in 2036-2104 (era 1). So every instant
from 1968-01-20 03:14:08 to 2104-02-26 09:42:24 UTC comes back as it went;
one outside the window comes back 2^32 seconds (136 years) off.

PTPv2 truncated (RFC 8762 §4.2.1, IEEE 1588's Timestamp without the top 16
bits of its seconds), Z = 1: seconds since 1970-01-01 in the upper 32 bits,
nanoseconds in the lower 32, exact both ways. PTP counts TAI, CLOCK_REALTIME
counts UTC: C{tai_offset} is TAI - UTC in seconds (37 since 2017; the
kernel's C{tai} in L{echod.stamp.clock.ClockState} when a time daemon has
set it). Its default, 0, reads PTP seconds as UTC ones, as many
implementations do. The seconds wrap in 2106; a nanoseconds field of 10^9
or more, which PTP never sends, is added as it is.
"""

from __future__ import annotations

#: Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01): 70 years, 17 of them leap.
NTP_UNIX_OFFSET = 2_208_988_800

_NS = 1_000_000_000
_WORD = 1 << 32
_LOW = _WORD - 1
_ERA0 = 1 << 31


def ntp_from_ns(ns: int) -> int:
    """The NTP 64-bit timestamp of C{ns}, its fraction rounded to the nearest (halves up)."""
    seconds, rest = divmod(ns, _NS)
    # rest < 10^9, so the fraction stays below 2^32: no carry into the seconds.
    fraction = (rest * _WORD + _NS // 2) // _NS
    return (((seconds + NTP_UNIX_OFFSET) & _LOW) << 32) | fraction


def ns_from_ntp(value: int) -> int:
    """The nanoseconds an NTP 64-bit timestamp stands for, in RFC 4330's 1968-2104 window."""
    seconds, fraction = value >> 32, value & _LOW
    if not seconds & _ERA0:
        seconds += _WORD
    return (seconds - NTP_UNIX_OFFSET) * _NS + ((fraction * _NS + _ERA0) >> 32)


def ptp_from_ns(ns: int, tai_offset: int = 0) -> int:
    """The PTPv2 truncated timestamp of C{ns} (UTC), C{tai_offset} seconds ahead on TAI."""
    seconds, nanoseconds = divmod(ns + tai_offset * _NS, _NS)
    return ((seconds & _LOW) << 32) | nanoseconds


def ns_from_ptp(value: int, tai_offset: int = 0) -> int:
    """The nanoseconds (UTC) a PTPv2 truncated timestamp stands for, in 1970-2106."""
    return (value >> 32) * _NS + (value & _LOW) - tai_offset * _NS


def to_wire(ns: int, ptp: bool = False, tai_offset: int = 0) -> int:
    """C{ns} in the format an Error Estimate's Z names: PTPv2 truncated if C{ptp}, else NTP."""
    return ptp_from_ns(ns, tai_offset) if ptp else ntp_from_ns(ns)


def from_wire(value: int, ptp: bool = False, tai_offset: int = 0) -> int:
    """The nanoseconds of a timestamp in the format an Error Estimate's Z names."""
    return ns_from_ptp(value, tai_offset) if ptp else ns_from_ntp(value)
