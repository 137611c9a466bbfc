"""
The probe's datagram protocol against a test transport and a clock: every
verdict, as the datagrams that come back decide it.
"""

from __future__ import annotations

import errno

import pytest

from echod.probe import datagram
from tests.probe.helpers import (
    ADDRESS,
    Silent,
    expected,
    retained_per_probe,
    start,
    udp,
)


def test_udp_probes_go_to_the_connected_server_and_answers_are_matched_by_number():
    _run, recorder, reactor, protocol = udp(count=2, interval=1)
    assert protocol.transport.connected_to == (ADDRESS, 7)
    reactor.advance(0.003)
    protocol.datagramReceived(expected(1), (ADDRESS, 7))
    reactor.advance(0.997)
    protocol.datagramReceived(expected(2), (ADDRESS, 7))
    assert protocol.transport.sent == [expected(1), expected(2)]
    assert recorder.kinds() == [("ok", 1), ("ok", 2)]
    assert recorder.events[1][2]["rtt"] == pytest.approx(0.003)
    assert recorder.status == 0


def test_udp_duplicates_are_counted_apart_and_do_not_change_the_status():
    _run, recorder, reactor, protocol = udp(count=2, interval=1)
    protocol.datagramReceived(expected(1), None)
    protocol.datagramReceived(expected(1), None)
    reactor.advance(1)
    protocol.datagramReceived(expected(2), None)
    assert recorder.kinds() == [("ok", 1), ("duplicate", 1), ("ok", 2)]
    assert (recorder.tally.received, recorder.tally.duplicates, recorder.status) == (2, 1, 0)


def test_udp_an_answer_after_a_later_probes_is_out_of_order_but_in_time():
    _run, recorder, reactor, protocol = udp(count=3, interval=0.1)
    reactor.advance(0.1)
    reactor.advance(0.1)
    protocol.datagramReceived(expected(2), None)
    protocol.datagramReceived(expected(1), None)
    protocol.datagramReceived(expected(3), None)
    assert recorder.kinds() == [("ok", 2), ("ok", 1), ("ok", 3)]
    assert [event[2]["reordered"] for event in recorder.events[1:]] == [False, True, False]
    assert (recorder.tally.received, recorder.tally.reordered, recorder.status) == (3, 1, 0)


def test_udp_late_lost_and_corrupted_answers_each_count_as_what_they_are():
    _run, recorder, reactor, protocol = udp(count=4, interval=1, timeout=0.5)
    reactor.advance(0.5)  # 1 times out
    reactor.advance(0.3)
    protocol.datagramReceived(expected(1), None)  # late, checked against its payload made again
    protocol.datagramReceived(expected(1), None)  # and then a duplicate
    reactor.advance(0.2)  # probe 2: never answered
    reactor.advance(1)  # probe 3
    bad = bytearray(expected(3))
    bad[40] ^= 1
    protocol.datagramReceived(bytes(bad), None)
    reactor.advance(1)  # probe 4: cut short
    protocol.datagramReceived(expected(4)[:50], None)
    reactor.advance(0.5)
    tally = recorder.tally
    assert (tally.late, tally.duplicates, tally.lost, tally.corrupted, tally.received) == (1, 1, 1, 2, 0)
    assert recorder.detail("late")["rtt"] == pytest.approx(0.8)
    details = [e[2]["detail"] for e in recorder.events if e[0] == "corrupted"]
    assert details[0].startswith("1 of 64 bytes differ, the first at offset 40")
    assert details[1] == "14 bytes short"
    assert recorder.status == 3


def test_udp_a_late_answer_with_wrong_bytes_is_corrupted_not_late():
    _run, recorder, reactor, protocol = udp(count=1, interval=1, timeout=0.5)
    reactor.advance(0.5)
    protocol.datagramReceived(expected(1)[:8] + bytes(56), None)
    # The run ended at the timeout; what follows it is not counted.
    assert recorder.tally.lost == 1


def test_udp_datagrams_without_a_number_of_this_run_are_unexpected():
    _run, recorder, _reactor, protocol = udp(count=1, interval=1)
    protocol.datagramReceived(b"short", None)
    protocol.datagramReceived((99).to_bytes(8, "big") + bytes(56), None)
    protocol.datagramReceived(expected(1), None)
    assert recorder.kinds() == [("unexpected", 5), ("unexpected", 64), ("ok", 1)]
    assert recorder.status == 3


def test_udp_port_unreachable_fails_the_latest_probe_and_the_run_goes_on():
    _run, recorder, reactor, protocol = udp(count=2, interval=1)
    protocol.connectionRefused()
    reactor.advance(1)
    protocol.socketError(errno.EHOSTUNREACH)
    assert [e[2]["detail"] for e in recorder.events[1:]] == ["port unreachable", "no route to host"]
    assert (recorder.tally.failed, recorder.status) == (2, 2)


def test_udp_state_is_kept_for_a_window_of_recent_probes_only(monkeypatch):
    monkeypatch.setattr(datagram, "DATAGRAM_WINDOW", 1024)
    run, _recorder, reactor = start("udp", interval=0.01, timeout=0.02, reporter=Silent())
    protocol = run.channel.protocol

    def answer() -> None:
        while protocol.transport.sent:
            protocol.datagramReceived(protocol.transport.sent.pop(0), None)

    for _ in range(2048):
        reactor.advance(0.01)
        answer()
    assert retained_per_probe(reactor, 0.01, 5000, answer) < 1
    tally = run.tally
    assert tally.received == tally.sent > 7000 and not run.finished


def test_udp_late_and_duplicate_answers_are_told_within_the_window_and_older_ones_change_no_verdict(
    monkeypatch,
):
    monkeypatch.setattr(datagram, "DATAGRAM_WINDOW", 8)
    run, recorder, reactor, protocol = udp(interval=1, timeout=0.5)
    protocol.datagramReceived(expected(1), None)
    for _ in range(8):
        reactor.advance(1)  # probes 2 to 9; 2 to 8 lost
    protocol.datagramReceived(expected(2), None)  # seq 2 is within the last 8: late
    protocol.datagramReceived(expected(2), None)  # and now a duplicate
    protocol.datagramReceived(expected(1), None)  # older than the last 8: no verdict changes
    bad = bytearray(expected(1))
    bad[20] ^= 1
    protocol.datagramReceived(bytes(bad), None)  # and not even its bytes: matches no probe
    protocol.datagramReceived(expected(10), None)  # not sent yet
    assert recorder.kinds()[-5:] == [
        ("late", 2),
        ("duplicate", 2),
        ("duplicate", 1),
        ("unexpected", 64),
        ("unexpected", 64),
    ]
    assert recorder.events[-3][2] is None  # its send time is no longer known
    run.stop()
    tally = recorder.tally
    assert (tally.received, tally.late, tally.lost, tally.duplicates, tally.unexpected) == (1, 1, 6, 2, 2)
    assert len(protocol.states) <= 8


def test_udp_a_send_the_system_refuses_fails_that_probe_only():
    _run, recorder, reactor, protocol = udp(count=2, interval=1)
    protocol.transport.fail_with = OSError(errno.EPERM, "Operation not permitted")
    reactor.advance(1)
    protocol.datagramReceived(expected(1), None)
    assert recorder.kinds() == [("failed", 2), ("ok", 1)]
    assert recorder.detail("failed")["detail"] == "not sent: Operation not permitted"
