"""
The probe's run (its schedule, deadline, interruption, the time of its
answers) against a clock, and its command line.
"""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock

from echod import cli, probe
from echod.probe import Run
from echod.probeoptions import make_options
from tests.probehelpers import (
    ADDRESS,
    KEY,
    Recorder,
    connect,
    expected,
    start,
)

# -- the schedule -------------------------------------------------------------------------------


def test_probes_keep_to_their_interval_and_a_stalled_run_does_not_burst():
    run, _recorder, reactor = start(interval=1, timeout=0.5)
    connect(reactor)
    assert run.tally.sent == 1
    reactor.advance(1)
    reactor.advance(1)
    assert run.tally.sent == 3
    reactor.advance(10)  # the machine stalled: one probe now, the next an interval later
    assert run.tally.sent == 4
    reactor.advance(0.99)
    assert run.tally.sent == 4
    reactor.advance(0.01)
    assert run.tally.sent == 5


def test_the_deadline_ends_the_run_leaving_the_probe_in_flight_undecided():
    _run, recorder, reactor = start(interval=1, deadline=2.5, timeout=2)
    protocol, _ = connect(reactor)
    protocol.dataReceived(expected(1))
    reactor.advance(1)
    protocol.dataReceived(expected(2))
    reactor.advance(1)  # probe 3, unanswered
    reactor.advance(0.5)
    tally = recorder.tally
    assert (tally.sent, tally.received, tally.in_flight, tally.loss_percent) == (3, 2, 1, 0.0)
    assert recorder.status == 0
    assert not reactor.getDelayedCalls()


def test_an_interruption_ends_the_run_at_once_with_the_status_so_far():
    run, recorder, reactor = start(interval=1, timeout=0.5)
    protocol, _ = connect(reactor)
    protocol.dataReceived(expected(1))
    reactor.advance(1)  # probe 2, unanswered
    reactor.advance(0.5)  # lost
    reactor.advance(0.5)  # probe 3, in flight
    run.stop()
    tally = recorder.tally
    assert (tally.received, tally.lost, tally.in_flight, recorder.status) == (1, 1, 1, 1)
    assert run.done.called and not reactor.getDelayedCalls()


# -- the command line ---------------------------------------------------------------------------


def test_a_bad_argument_is_a_usage_error_with_status_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["probe", "-i", "0.0001", "192.0.2.1"])
    assert exit_.value.code == 2
    assert "-i 0.0001: at least 0.001 s" in capsys.readouterr().err


def test_a_bad_argument_to_a_monitoring_check_is_its_unknown(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["probe", "--critical", "100,20%", "-s", "huge", "192.0.2.1"])
    out = capsys.readouterr().out
    assert exit_.value.code == 3
    assert out.startswith("ECHO UNKNOWN - echod probe: argument -s/--size: 'huge' is not a size")


def test_a_warning_above_the_critical_threshold_is_the_checks_unknown(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["probe", "--warning", "100,70%", "--critical", "500,60%", "192.0.2.1"])
    assert exit_.value.code == 3
    assert capsys.readouterr().out.startswith(
        "ECHO UNKNOWN - echod probe: --warning's loss (70%) is above --critical's (60%)"
    )


def test_an_unknown_argument_to_a_monitoring_check_is_its_unknown_too(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["probe", "--warning", "100,20%", "--no-such-option", "192.0.2.1"])
    assert exit_.value.code == 3
    assert capsys.readouterr().out.startswith(
        "ECHO UNKNOWN - echod: unrecognized arguments: --no-such-option"
    )


def test_a_name_that_does_not_resolve_is_an_error_with_status_2(capsys):
    assert cli.main(["probe", "-c", "1", "no-such-host.invalid"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("echod probe: cannot resolve no-such-host.invalid: ")
    assert captured.out == ""


# -- the time of answers ----------------------------------------------------------------------


class FakePoller:
    def __init__(self) -> None:
        self.registered: list[int] = []

    def poll(self, timeout: float, most: int) -> list[tuple[int, int]]:
        return [(3, 1)]

    def register(self, fd: int, events: int) -> None:
        self.registered.append(fd)


class Ticking:
    """A clock that moves a second each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def test_answers_are_stamped_when_the_reactors_wait_returns():
    reactor = type("Reactor", (), {})()
    poller = reactor._poller = FakePoller()
    clock = probe.ReceiveClock(reactor, Ticking())
    assert clock.now() == 1.0  # the time it was made, until a wait returns
    assert reactor._poller.poll(0.5, 10) == [(3, 1)]
    assert clock.now() == clock.now() == 2.0  # reading it does not move it
    reactor._poller.register(7, 1)  # the rest is the poller's own
    assert poller.registered == [7]


def test_without_a_poller_answers_are_stamped_when_handled():
    timer = Ticking()
    clock = probe.ReceiveClock(object(), timer)
    assert (clock.now(), clock.now()) == (2.0, 3.0)


def test_a_stamp_older_than_the_send_is_never_used():
    reactor = MemoryReactorClock()
    recorder = Recorder()
    run = Run(
        make_options(ADDRESS, count=1),
        ADDRESS,
        recorder,
        reactor,
        reactor.seconds,
        KEY,
        received=lambda: -1.0,
    )
    run.start()
    protocol, _ = connect(reactor)
    reactor.advance(0.25)
    protocol.dataReceived(expected(1))
    assert recorder.detail("ok")["rtt"] == pytest.approx(0.25)


def test_an_interruption_before_the_run_began_ends_it_without_a_probe():
    reactor = MemoryReactorClock()
    recorder = Recorder()
    run = Run(make_options(ADDRESS), ADDRESS, recorder, reactor, reactor.seconds, KEY)
    run.stop()
    assert run.start() is run.done and run.done.called
    assert reactor.tcpClients == [] and recorder.tally.sent == 0
