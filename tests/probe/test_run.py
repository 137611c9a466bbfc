"""
The probe's run (its schedule, deadline, interruption, the time of its
answers) against a clock; its command line: tests/test_cli.py.
"""

from __future__ import annotations

import socket

import pytest
from twisted.internet import defer

from tests.probe.helpers import (
    connect,
    expected,
    made,
    start,
    udp,
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


def test_with_a_deadline_the_count_is_of_answers_as_pings():
    # ping -c 2 -w 10: probes go on past the second until two answers came back.
    run, recorder, reactor, protocol = udp(count=2, deadline=10, interval=1, timeout=0.5)
    protocol.datagramReceived(expected(1), None)
    reactor.advance(1)  # probe 2, never answered
    reactor.advance(0.5)
    assert recorder.tally is None  # one answer of two so far: the run goes on
    reactor.advance(0.5)  # probe 3
    protocol.datagramReceived(expected(3), None)
    tally = recorder.tally
    assert (tally.sent, tally.received, tally.lost, recorder.status) == (3, 2, 1, 1)
    assert run.done.called and not reactor.getDelayedCalls()


def test_with_a_deadline_the_count_of_answers_may_leave_probes_in_flight():
    _run, recorder, reactor = start(count=1, deadline=10, interval=0.1, timeout=5)
    protocol, _ = connect(reactor)
    reactor.advance(0.1)  # probe 2 is sent before probe 1's answer
    protocol.dataReceived(expected(1))
    tally = recorder.tally
    assert (tally.sent, tally.received, tally.in_flight, recorder.status) == (2, 1, 1, 0)


def test_without_a_deadline_the_count_is_of_probes_sent():
    _run, recorder, reactor = start(count=2, interval=1, timeout=0.5)
    protocol, _ = connect(reactor)
    protocol.dataReceived(expected(1))
    reactor.advance(1)
    reactor.advance(0.5)  # probe 2 lost: the run is over
    tally = recorder.tally
    assert (tally.sent, tally.received, tally.lost, recorder.status) == (2, 1, 1, 1)


# -- runs that never reach the server ------------------------------------------------------------


def test_the_deadline_while_connecting_is_an_error_not_a_success():
    _run, recorder, reactor = start(deadline=2, timeout=10)
    reactor.advance(2)  # the connection attempt never finished
    assert recorder.error == "no connection to 192.0.2.1:7 within 2 s"
    assert (recorder.tally.sent, recorder.status) == (0, 2)
    assert reactor.connectors[0].stoppedConnecting


def test_connect_probes_that_never_connect_are_an_error_not_only_loss():
    _run, recorder, reactor = start("connect", count=2, interval=1, timeout=0.5)
    reactor.advance(1)
    reactor.advance(0.5)
    assert (recorder.tally.lost, recorder.status) == (2, 2)
    assert recorder.error == "no connection to 192.0.2.1:7 within 1.5 s"


def test_a_run_that_connected_once_has_no_such_error():
    _run, recorder, reactor = start("connect", count=2, interval=1, timeout=0.5)
    protocol, _ = connect(reactor)
    protocol.dataReceived(expected(1))
    protocol.readConnectionLost()
    reactor.advance(1)
    reactor.advance(0.5)  # probe 2's connection never came
    assert (recorder.error, recorder.status) == (None, 1)


def test_the_deadline_or_an_interruption_while_resolving_ends_the_run_with_an_error():
    for end in ("deadline", "interruption"):
        run, recorder, reactor = made("echo.example", deadline=1)
        resolving = defer.Deferred()
        run.start(resolving)
        reactor.advance(0.25)
        if end == "deadline":
            reactor.advance(0.75)
        else:
            run.stop()
        waited = "1" if end == "deadline" else "0.25"
        assert recorder.error == f"cannot resolve echo.example: no answer within {waited} s"
        assert (recorder.status, reactor.tcpClients) == (2, [])
        resolving.callback((socket.AF_INET, "192.0.2.1"))  # the answer, too late: nothing more
        assert reactor.tcpClients == [] and recorder.events == []


def test_a_resolved_name_is_probed_at_its_address():
    run, recorder, reactor = made("echo.example:7007", count=1)
    resolving = defer.Deferred()
    run.start(resolving)
    assert reactor.tcpClients == []
    resolving.callback((socket.AF_INET6, "2001:db8::7"))
    assert recorder.events == [("started", "2001:db8::7")]
    assert reactor.tcpClients[0][:2] == ("2001:db8::7", 7007)


def test_a_name_that_fails_to_resolve_ends_the_run_with_its_error():
    run, recorder, _reactor = made("echo.example", mode="udp", size=65520)
    resolving = defer.Deferred()
    run.start(resolving)
    resolving.callback((socket.AF_INET, "192.0.2.1"))  # too small a family for 65520 bytes
    assert recorder.error == "-s 65520: 8 to 65507 bytes a datagram over IPv4"
    assert recorder.status == 2


# -- the time of answers ----------------------------------------------------------------------


def test_a_stamp_older_than_the_send_is_never_used():
    run, recorder, reactor = made(count=1, received=lambda: -1.0)
    run.start()
    protocol, _ = connect(reactor)
    reactor.advance(0.25)
    protocol.dataReceived(expected(1))
    assert recorder.detail("ok")["rtt"] == pytest.approx(0.25)


def test_an_interruption_before_the_run_began_ends_it_without_a_probe():
    run, recorder, reactor = made()
    run.stop()
    assert run.start() is run.done and run.done.called
    assert reactor.tcpClients == [] and recorder.tally.sent == 0
