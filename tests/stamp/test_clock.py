"""
The kernel's view of the clock (L{echod.stamp.clock}): adjtimex(2) read
through ctypes agrees with Debian's own adjtimex(8) on this machine, and
the Error Estimate drawn from it never claims more than the kernel knows.
"""

from __future__ import annotations

import ctypes
import errno
import shutil
import subprocess

import pytest

from echod.stamp import clock
from echod.stamp.clock import STA_CLOCKERR, STA_UNSYNC, UNKNOWN, ClockState

#: Debian's adjtimex(8) (package adjtimex, which the Makefile installs for the tests), in /sbin.
ADJTIMEX = shutil.which("adjtimex") or shutil.which("adjtimex", path="/usr/sbin:/sbin")


def printed() -> subprocess.CompletedProcess:
    if ADJTIMEX is None:
        pytest.skip("adjtimex(8), Debian's package adjtimex, is not installed: nothing to compare with")
    return subprocess.run([ADJTIMEX, "--print"], capture_output=True, text=True, check=False)


def fields(output: str) -> dict[str, int]:
    """adjtimex --print's 'name: value' lines, and its 'return value = N'."""
    found = {}
    for line in output.splitlines():
        name, separator, value = line.replace("=", ":", 1).partition(":")
        if separator and value.strip().lstrip("-").isdigit():
            found[name.strip()] = int(value)
    return found


def test_the_state_read_is_the_one_adjtimex_prints():
    try:
        before = clock.read()
    except PermissionError:
        # A sandbox that refuses the call (a container without CAP_SYS_TIME) refuses adjtimex(8) alike.
        done = printed()
        assert done.returncode != 0
        assert "not permitted" in done.stderr.lower()
        return
    done = printed()
    after = clock.read()
    assert done.returncode == 0, done.stderr
    theirs = fields(done.stdout)
    # The maximum error grows between a time daemon's updates (500 µs a second): between the two reads.
    for name, ours in (("status", "status"), ("return value", "state")):
        assert theirs[name] in (getattr(before, ours), getattr(after, ours))
    for name, ours in (("maxerror", "maximum_error_us"), ("esterror", "estimated_error_us")):
        low, high = sorted((getattr(before, ours), getattr(after, ours)))
        assert low <= theirs[name] <= high


def test_every_field_adjtimex_prints_is_where_the_struct_has_it():
    # The values that do not move (tick, tolerance, ...) differ from each other: a field at the wrong
    # offset shows.
    try:
        state, timex = clock._read_timex()
    except PermissionError:
        # systemd-nspawn refuses the call to a container without CAP_SYS_TIME (the unit and
        # integration suite on Debian 13 runs in one): there is no struct to compare.
        pytest.skip(
            "adjtimex(2) is refused here: test_the_state_read_is_the_one_adjtimex_prints checks the refusal"
        )
    theirs = fields(printed().stdout)
    assert theirs["return value"] == state
    for name, field in (
        ("mode", "modes"),
        ("offset", "offset"),
        ("frequency", "freq"),
        ("status", "status"),
        ("time_constant", "constant"),
        ("precision", "precision"),
        ("tolerance", "tolerance"),
        ("tick", "tick"),
    ):
        assert theirs[name] == getattr(timex, field), name


def test_a_synchronized_clock_states_its_estimated_error_rounded_up():
    state = ClockState(status=0x2001, state=0, estimated_error_us=1234, maximum_error_us=500_000)
    estimate = state.error_estimate()
    assert state.synchronized
    assert (estimate.synchronized, estimate.ptp) == (True, False)
    assert 1_234_000 <= estimate.ns < 1_234_000 * 1.01
    assert state.error_estimate(ptp=True).ptp


@pytest.mark.parametrize("status", [STA_UNSYNC, STA_CLOCKERR, STA_UNSYNC | 0x2001])
def test_a_clock_nothing_keeps_states_its_maximum_error_and_no_s(status):
    state = ClockState(status=status, state=5, estimated_error_us=10, maximum_error_us=16_000_000)
    estimate = state.error_estimate()
    assert not state.synchronized
    assert not estimate.synchronized
    assert estimate.ns >= 16_000_000_000


def test_what_the_kernel_will_not_say_is_told_as_a_clock_nothing_keeps(monkeypatch):
    def refused(_timex) -> int:
        ctypes.set_errno(errno.EPERM)
        return -1

    monkeypatch.setattr(clock, "_libc_adjtimex", lambda: refused)
    with pytest.raises(PermissionError, match="adjtimex"):
        clock.read()
    assert clock.read_or_unknown() is UNKNOWN
    assert (UNKNOWN.synchronized, UNKNOWN.error_estimate().seconds) == (False, 16)
