import pytest
from twisted.internet.task import Clock

from echod.protocols.sweep import Sweep


class Swept:
    """A set to sweep over, on a fake clock; each sweep's time is recorded."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.over: set[str] = set()
        self.times: list[float] = []
        self.sweep = Sweep(self.clock, self.over, lambda: self.times.append(self.clock.seconds()))

    def advance(self, seconds: int) -> None:
        for _ in range(seconds):
            self.clock.advance(1)


def test_it_sweeps_every_interval_while_there_is_something_to_sweep():
    swept = Swept()
    swept.over.add("a")
    swept.sweep.start(2)
    swept.advance(7)
    assert swept.times == [2, 4, 6]


def test_the_first_sweep_is_at_once_when_asked():
    swept = Swept()
    swept.over.add("a")
    swept.sweep.start(2, now=True)
    swept.advance(3)
    assert swept.times == [0, 2]


def test_it_stops_at_the_first_run_that_finds_nothing():
    swept = Swept()
    swept.over.add("a")
    swept.sweep.start(2)
    swept.advance(2)
    swept.over.clear()
    swept.advance(1)
    assert swept.sweep.running  # not when the last one left: at the next run
    swept.advance(1)
    assert not swept.sweep.running
    assert not swept.clock.getDelayedCalls()
    assert swept.times == [2]


def test_starting_it_again_while_it_runs_does_not_postpone_it():
    swept = Swept()
    swept.over.add("a")
    swept.sweep.start(4)
    for _ in range(3):
        swept.advance(1)
        swept.sweep.start(4)
    swept.advance(1)
    assert swept.times == [4]


def test_a_sweep_that_raised_is_started_again_by_the_next_start():
    clock, over, calls = Clock(), {"a"}, []

    def sweep() -> None:
        calls.append(clock.seconds())
        if len(calls) == 1:
            raise RuntimeError("a bug in a sweep ends its LoopingCall")

    sweeping = Sweep(clock, over, sweep)
    sweeping.start(2)
    clock.advance(2)
    assert not sweeping.running and not clock.getDelayedCalls()
    sweeping.start(2)
    clock.advance(2)
    assert calls == [2, 4] and sweeping.running


@pytest.mark.parametrize("running", [True, False])
def test_stop_leaves_nothing_due(running):
    swept = Swept()
    swept.over.add("a")
    if running:
        swept.sweep.start(2)
    swept.sweep.stop()
    swept.advance(5)
    assert swept.times == [] and not swept.clock.getDelayedCalls()
