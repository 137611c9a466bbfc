"""
What the kernel knows of its clock, for an honest Error Estimate: the
state adjtimex(2) reports (C{STA_UNSYNC} in the status; the estimated and
the maximum error, in microseconds), read with C{modes} 0, which needs no
privilege and changes nothing.

Python has no wrapper for adjtimex, and none is kept up for it in Debian
or on PyPI (what exists are experiments, such as python-adjtimex-experiments
on GitHub; Debian's C{adjtimex} package is the command-line tool), so this
calls glibc's C{adjtimex} through ctypes, with C{struct timex} as
<sys/timex.h> lays it out.

A sandbox may refuse the call: systemd's C{ProtectClock=yes} (and
C{SystemCallFilter=~@clock}) filters adjtimex even for reading, as does
systemd-nspawn without CAP_SYS_TIME. Then nothing is known of the clock,
and L{read_or_unknown} says so with L{UNKNOWN}: not synchronized, off by as
much as the kernel says of a clock nothing keeps.
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from echod.stamp.estimate import ErrorEstimate

#: linux/timex.h: the clock is not synchronized (status bit).
STA_UNSYNC = 0x0040
#: linux/timex.h: the clock hardware has failed (status bit).
STA_CLOCKERR = 0x1000
#: linux/timex.h: adjtimex's result for a clock not synchronized (STA_UNSYNC or STA_CLOCKERR set).
TIME_ERROR = 5
#: linux/timex.h, NTP_PHASE_LIMIT: the largest maximum error the kernel states (16 s, in µs); it
#: holds an unsynchronized clock's there.
PHASE_LIMIT_US = 16_000_000

_NS_PER_US = 1_000


class _Timeval(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long))


class _Timex(ctypes.Structure):
    """struct timex (glibc's <sys/timex.h>, bits/timex.h), its fields at their C alignment."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        # The kernel writes the whole struct: its eleven reserved ints too.
        ("_reserved", ctypes.c_int * 11),
    )


@dataclass(frozen=True, slots=True)
class ClockState:
    """
    The kernel's clock as adjtimex(2) reports it: C{status} (STA_* bits),
    C{state} (its result, TIME_OK to TIME_ERROR), the estimated and maximum
    error in microseconds, and TAI - UTC in seconds (0 until a time daemon
    sets it).
    """

    status: int
    state: int
    estimated_error_us: int
    maximum_error_us: int
    tai_offset: int = 0

    @property
    def synchronized(self) -> bool:
        """Whether a time daemon keeps the clock (STA_UNSYNC clear) and its hardware has not failed."""
        return not self.status & (STA_UNSYNC | STA_CLOCKERR)

    def error_estimate(self, ptp: bool = False) -> ErrorEstimate:
        """
        The Error Estimate (RFC 8762 §4.2.1) this state allows: S only when
        synchronized, covering the estimated error then and the maximum
        error otherwise, rounded up (L{ErrorEstimate.covering}).
        """
        error_us = self.estimated_error_us if self.synchronized else self.maximum_error_us
        return ErrorEstimate.covering(max(error_us, 0) * _NS_PER_US, self.synchronized, ptp)


#: What is known of a clock adjtimex was refused for: nothing, said as the kernel says it of a clock
#: no daemon keeps.
UNKNOWN = ClockState(STA_UNSYNC, TIME_ERROR, PHASE_LIMIT_US, PHASE_LIMIT_US)


@functools.cache
def _libc_adjtimex() -> Callable[[Any], int]:
    # The process's own symbols, libc's among them: no search for the library (ctypes.util would run
    # ldconfig for it).
    function = ctypes.CDLL(None, use_errno=True).adjtimex
    function.argtypes = (ctypes.POINTER(_Timex),)
    function.restype = ctypes.c_int
    return function


def _read_timex() -> tuple[int, _Timex]:
    """adjtimex's result and the whole struct it filled; OSError if it was refused."""
    timex = _Timex()  # modes 0: read only
    state = _libc_adjtimex()(ctypes.byref(timex))
    if state == -1:
        number = ctypes.get_errno()
        raise OSError(number, f"adjtimex: {os.strerror(number)}")
    return state, timex


def read() -> ClockState:
    """The clock's state now; OSError if the kernel (or a sandbox) refuses."""
    state, timex = _read_timex()
    return ClockState(timex.status, state, timex.esterror, timex.maxerror, timex.tai)


def read_or_unknown() -> ClockState:
    """The clock's state now, or L{UNKNOWN} if adjtimex is refused."""
    try:
        return read()
    except OSError:
        return UNKNOWN
