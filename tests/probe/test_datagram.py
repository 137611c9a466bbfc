"""
The probe's datagram protocol against a test transport and a clock: every
verdict, as the datagrams that come back decide it.
"""

from __future__ import annotations

import errno
import socket
import struct

import pytest

from echod.ancillary import SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6, SO_EE_ORIGIN_LOCAL
from echod.probe import datagram
from echod.sockopts import IP_MTU, IP_RECVERR, IPV6_RECVERR
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


# -- ICMP errors from the error queue ------------------------------------------------------------


def queued(origin: int, kind: int, code: int, info: int = 0, sender: str = "198.18.1.1") -> list:
    """The control message of one error of the queue, as the kernel gives it (see tests/test_ancillary.py)."""
    family = socket.AF_INET6 if ":" in sender else socket.AF_INET
    err = struct.pack("=IBBBBII", errno.EHOSTUNREACH, origin, kind, code, 0, info, 0)
    if family == socket.AF_INET6:
        address = struct.pack("=H", family) + bytes(6) + socket.inet_pton(family, sender) + bytes(4)
        return [(socket.IPPROTO_IPV6, IPV6_RECVERR, err + address)]
    address = struct.pack("=H", family) + bytes(2) + socket.inet_aton(sender) + bytes(8)
    return [(socket.IPPROTO_IP, IP_RECVERR, err + address)]


def test_an_icmp_error_fails_the_probe_whose_number_it_quotes_and_names_its_sender():
    _run, recorder, reactor, protocol = udp(count=3, interval=0.1)
    reactor.advance(0.1)
    reactor.advance(0.1)  # probes 1, 2 and 3 in flight
    protocol.errorQueued(expected(2)[:28], queued(SO_EE_ORIGIN_ICMP, 11, 0))
    protocol.errorQueued(expected(1)[:8], queued(SO_EE_ORIGIN_ICMP6, 3, 0, sender="2001:db8:1::1"))
    protocol.datagramReceived(expected(3), None)
    assert recorder.kinds() == [("failed", 2), ("failed", 1), ("ok", 3)]
    details = [event[2]["detail"] for event in recorder.events[1:3]]
    assert details == ["time to live exceeded from 198.18.1.1", "time to live exceeded from 2001:db8:1::1"]
    assert recorder.status == 2


def test_an_icmp_error_quoting_too_little_to_name_its_probe_fails_the_latest():
    _run, recorder, reactor, protocol = udp(count=2, interval=0.1)
    reactor.advance(0.1)
    protocol.errorQueued(expected(1)[:7], queued(SO_EE_ORIGIN_ICMP, 3, 3, sender="198.18.1.2"))
    protocol.datagramReceived(expected(1), None)
    assert recorder.kinds() == [("failed", 2), ("ok", 1)]
    assert recorder.detail("failed")["detail"] == "port unreachable from 198.18.1.2"


def test_an_answer_after_the_icmp_error_that_failed_its_probe_is_a_duplicate():
    _run, recorder, reactor, protocol = udp(count=2, interval=0.1)
    protocol.errorQueued(expected(1), queued(SO_EE_ORIGIN_ICMP, 3, 4, 1280))
    protocol.datagramReceived(expected(1), None)
    reactor.advance(0.1)
    protocol.datagramReceived(expected(2), None)
    assert recorder.kinds() == [("failed", 1), ("duplicate", 1), ("ok", 2)]
    assert recorder.detail("failed")["detail"] == "fragmentation needed from 198.18.1.1: path MTU 1280"


def test_errors_that_name_no_probe_awaited_or_come_from_its_own_sends_change_nothing():
    _run, recorder, reactor, protocol = udp(count=2, interval=1)
    protocol.datagramReceived(expected(1), None)
    protocol.errorQueued(expected(1), queued(SO_EE_ORIGIN_ICMP, 11, 0))  # answered already
    protocol.errorQueued(b"", queued(SO_EE_ORIGIN_LOCAL, 0, 0, 1280))  # a send's own, told as it failed
    protocol.errorQueued(expected(1), [])  # nothing the error queue would hold
    reactor.advance(1)
    protocol.datagramReceived(expected(2), None)
    assert recorder.kinds() == [("ok", 1), ("ok", 2)] and recorder.status == 0


class PathOf1280:
    """A connected socket's stand-in whose path MTU the kernel learnt is 1280."""

    family = socket.AF_INET

    def getsockopt(self, level: int, option: int) -> int:
        assert (level, option) == (socket.IPPROTO_IP, IP_MTU)
        return 1280


def test_a_datagram_too_large_for_the_path_fails_with_the_path_mtu_and_the_run_goes_on():
    _run, recorder, reactor, protocol = udp(count=2, interval=1, size=1400)
    protocol.transport.handle = PathOf1280()
    protocol.transport.fail_with = OSError(errno.EMSGSIZE, "Message too long")
    reactor.advance(1)
    protocol.datagramReceived(expected(1, 1400), None)
    assert recorder.kinds() == [("failed", 2), ("ok", 1)]
    assert recorder.detail("failed")["detail"] == "message too long: path MTU 1280"
