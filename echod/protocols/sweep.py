"""
A sweep: one timer that visits a set of connections now and then, in place
of a timer per connection reset on every event (which puts a timer on the
data path, and one more object on every connection).
"""

from __future__ import annotations

from collections.abc import Callable, Sized

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall


class Sweep:
    """
    Calls C{sweep} every C{interval} seconds while C{over} (the connections
    it looks through) holds any; the first run that finds C{over} empty
    stops it. Stopped there rather than when the last one leaves: a set
    whose members come and go one at a time would otherwise start and stop
    a timer for each of them.

    A C{LoopingCall} whose function raised is over for good; L{start} then
    begins a new one, so that one failed sweep does not end sweeping.
    """

    def __init__(self, clock: IReactorTime, over: Sized, sweep: Callable[[], None]) -> None:
        self._clock = clock
        self._over = over
        self._sweep = sweep
        self._call: LoopingCall | None = None

    @property
    def running(self) -> bool:
        """Whether a sweep is due."""
        return self._call is not None and self._call.running

    def start(self, interval: float, now: bool = False) -> None:
        """Sweep every C{interval} seconds (the first at once if C{now}), unless already sweeping."""
        if self.running:
            return
        self._call = LoopingCall(self._run)
        self._call.clock = self._clock
        self._call.start(interval, now=now)

    def stop(self) -> None:
        """No more sweeps until the next L{start}."""
        if self.running:
            self._call.stop()
        self._call = None

    def _run(self) -> None:
        if not self._over:
            self.stop()
            return
        self._sweep()
