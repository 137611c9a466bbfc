"""
The contract between a probe run and the channel that carries its probes,
in both directions, so that neither reads the other's insides: the run
(L{echod.probe.run}) drives a L{Channel}; a channel (L{echod.probe.channels},
L{echod.probe.datagram}) sees its run only as a L{RunView}, and counts and
remakes its probes with the two helpers at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from echod.probe.options import ProbeOptions
from echod.probe.payload import Mismatch, Probe


class Channel(Protocol):
    """What carries a run's probes to the server and their answers back."""

    def open(self) -> None:
        """Begin (connect, or bind): L{RunView.ready} once probes can be sent."""

    def send(self, probe: Probe) -> None:
        """Send C{probe} now: its send time is stamped here, as close to the kernel as can be."""

    def expired(self, probe: Probe) -> str:
        """C{probe} had no whole answer in time: let go of it, and say what was seen of it."""

    def close(self) -> None:
        """The run is over: close whatever is open, abandon whatever is under way."""


class RunView(Protocol):
    """What a channel sees of its run, and what it tells it."""

    options: ProbeOptions
    #: The address probed (resolved, with its IPv6 scope).
    address: str
    reactor: Any
    #: Whether the run is over: nothing told after counts.
    finished: bool
    #: The clock of sends, and that of answers (the reactor's wake-up, see L{echod._twisted.ReceiveClock}).
    timer: Callable[[], float]
    received: Callable[[], float]

    def awaited(self, seq: int) -> Probe | None:
        """Probe C{seq}, if it is still awaited (neither decided nor timed out)."""

    def latest_awaited(self) -> Probe | None:
        """The probe sent last of those still awaited, if any."""

    def expected(self, seq: int) -> bytes:
        """The payload probe C{seq} was sent with: what its echo must be."""

    def ready(self) -> None:
        """The channel can carry probes."""

    def fatal(self, message: str) -> None:
        """The run cannot go on: C{message} says why."""

    def unreachable(self, reason: str | None) -> None:
        """The run's one connection failed: C{reason}, or None for no answer within the timeout."""

    def connected(self, probe: Probe | None, now: float) -> None:
        """A connection was made at C{now}: C{probe}'s own, or (None) the run's one."""

    def answer(
        self, probe: Probe, now: float, mismatch: Mismatch | None = None, reordered: bool = False
    ) -> None:
        """The whole answer to C{probe} came back at C{now}; C{mismatch} if its bytes differ."""

    def failed(self, probe: Probe, detail: str) -> None:
        """C{probe}'s own connection failed, or an error names it."""

    def duplicate(self, seq: int, size: int, rtt: float | None) -> None:
        """Probe C{seq} was answered again."""

    def unexpected(self, size: int, detail: str) -> None:
        """An answer that matches no probe came."""

    def stray(self, size: int, detail: str) -> None:
        """C{size} bytes on a stream beyond every probe's echo."""


def probes_in(run: RunView, timeouts: int) -> int:
    """How many probes the run sends in C{timeouts} of its timeouts."""
    return math.ceil(timeouts * run.options.timeout / run.options.interval)


def late_probe(run: RunView, seq: int, sent_at: float) -> Probe:
    """The record of probe C{seq}, timed out and let go already, to decide its late answer with."""
    probe = Probe(seq, None, run.options.size, sent_at, sent_at=sent_at)
    probe.timed_out = True
    return probe
