"""
The probe's TCP client protocols against Twisted's test transports and a
clock: every verdict, as the bytes that come back decide it.
"""

from __future__ import annotations

import socket
import time

import pytest
from twisted.internet import error
from twisted.python.failure import Failure

from echod.probe import channels as probeclients
from echod.probe.options import make_options
from echod.probe.run import Run
from tests.probe.helpers import (
    KEY,
    Recorder,
    Silent,
    connect,
    expected,
    retained_per_probe,
    start,
)

# -- one persistent connection ------------------------------------------------------------------


def test_persistent_tcp_answers_split_and_joined_anyhow_are_each_intact_and_timed():
    run, recorder, reactor = start(count=3, interval=1)
    protocol, transport = connect(reactor)
    assert transport.nodelay
    assert transport.value() == expected(1)
    reactor.advance(0.25)
    protocol.dataReceived(expected(1)[:1])
    protocol.dataReceived(expected(1)[1:])
    reactor.advance(0.75)  # t=1: probe 2
    reactor.advance(1)  # t=2: probe 3
    assert transport.value() == expected(1) + expected(2) + expected(3)
    reactor.advance(0.5)
    protocol.dataReceived(expected(2) + expected(3)[:30])
    protocol.dataReceived(expected(3)[30:])
    assert recorder.kinds() == [("ok", 1), ("ok", 2), ("ok", 3)]
    rtts = [event[2]["rtt"] for event in recorder.events[1:]]
    assert rtts == pytest.approx([0.25, 1.5, 0.5])
    assert run.done.called and recorder.status == 0
    assert (recorder.tally.sent, recorder.tally.received) == (3, 3)
    assert transport.disconnecting
    assert not reactor.getDelayedCalls()


def test_persistent_tcp_a_flipped_byte_corrupts_its_probe_only():
    _run, recorder, reactor = start(count=3, interval=1, timeout=5)
    protocol, _ = connect(reactor)
    reactor.advance(2)
    stream = bytearray(expected(1) + expected(2) + expected(3))
    stream[64 + 36] ^= 0x5A
    protocol.dataReceived(bytes(stream))
    assert recorder.kinds() == [("ok", 1), ("corrupted", 2), ("ok", 3)]
    detail = recorder.detail("corrupted")["detail"]
    assert detail.startswith("1 of 64 bytes differ, the first at offset 36 (0x")
    assert (recorder.tally.received, recorder.tally.corrupted, recorder.status) == (2, 1, 3)


def test_persistent_tcp_an_answer_after_the_timeout_is_late_not_lost_nor_corrupted():
    _run, recorder, reactor = start(count=2, interval=1, timeout=0.5)
    protocol, _ = connect(reactor)
    reactor.advance(0.5)
    assert recorder.kinds() == [("timeout", 1)]
    assert recorder.tally is None  # the run goes on
    reactor.advance(0.2)
    protocol.dataReceived(expected(1))
    assert recorder.kinds() == [("timeout", 1), ("late", 1)]
    assert recorder.detail("late")["rtt"] == pytest.approx(0.7)
    reactor.advance(0.3)  # probe 2
    reactor.advance(0.1)
    protocol.dataReceived(expected(2))
    tally = recorder.tally
    assert (tally.received, tally.late, tally.lost) == (1, 1, 0)
    assert tally.rtt.count == 1  # the figures are those of answers in time
    assert recorder.status == 1


def test_persistent_tcp_a_probe_never_answered_is_lost_and_ends_the_run_at_its_timeout():
    _run, recorder, reactor = start(count=1, timeout=0.5)
    protocol, _ = connect(reactor)
    protocol.dataReceived(expected(1)[:10])
    reactor.advance(0.5)
    assert recorder.events[-1] == ("timeout", 1, "10 of 64 bytes so far")
    assert (recorder.tally.lost, recorder.status) == (1, 1)


def test_persistent_tcp_bytes_beyond_every_probe_are_unexpected():
    _run, recorder, reactor = start(count=2, interval=1)
    protocol, _ = connect(reactor)
    protocol.dataReceived(expected(1) + b"extra")
    assert recorder.kinds()[-1] == ("unexpected", 5)
    reactor.advance(1)
    protocol.dataReceived(expected(2))
    tally = recorder.tally
    assert (tally.received, tally.unexpected_bytes, tally.unexpected, recorder.status) == (2, 5, 0, 3)


def test_persistent_tcp_junk_is_counted_in_bytes_and_told_at_most_once_a_second():
    run, recorder, reactor = start(count=3, interval=1, timeout=5)
    protocol, _ = connect(reactor)
    protocol.dataReceived(expected(1))
    for _ in range(1000):  # a flood, read in a thousand chunks
        protocol.dataReceived(b"x" * 100)
    reactor.advance(0.5)
    protocol.dataReceived(b"y" * 7)
    assert [kind for kind in recorder.kinds() if kind[0] == "unexpected"] == [("unexpected", 100)]
    reactor.advance(0.5)  # probe 2, a second after the first junk
    protocol.dataReceived(expected(2) + b"z" * 3)
    junk = [event for event in recorder.events if event[0] == "unexpected"]
    assert [size for _, size, _ in junk] == [100, 99_910]
    assert junk[0][2] == "after every probe's echo; more are told at most once a second"
    assert junk[1][2] == "after every probe's echo (100010 bytes so far)"
    run.stop()
    tally = recorder.tally
    assert (tally.received, tally.corrupted, tally.unexpected, tally.unexpected_bytes) == (2, 0, 0, 100_010)
    assert recorder.status == 3


def test_persistent_tcp_the_server_closing_mid_echo_ends_the_run_with_an_error():
    _run, recorder, reactor = start(count=5, interval=1)
    protocol, _transport = connect(reactor)
    protocol.dataReceived(expected(1))
    reactor.advance(1)
    protocol.dataReceived(expected(2)[:36])
    protocol.readConnectionLost()
    assert recorder.error == "the server closed the connection with 36 of 64 bytes of seq=2 echoed"
    tally = recorder.tally
    assert (tally.sent, tally.received, tally.failed, recorder.status) == (2, 1, 1, 2)
    assert not reactor.getDelayedCalls()


def test_persistent_tcp_a_reset_ends_the_run_with_an_error():
    _run, recorder, reactor = start(count=5, interval=1)
    protocol, _ = connect(reactor)
    protocol.connectionLost(Failure(error.ConnectionLost()))
    assert recorder.error == "connection reset by the server"
    assert (recorder.tally.failed, recorder.status) == (1, 2)


def test_persistent_tcp_a_refused_connection_is_an_error_before_any_probe():
    _run, recorder, reactor = start(count=5)
    factory = reactor.tcpClients[0][2]
    factory.clientConnectionFailed(reactor.connectors[0], Failure(error.ConnectionRefusedError()))
    assert recorder.error == (
        "connection refused by 192.0.2.1:7 (7 is the default port; give the server's as HOST:PORT, "
        "e.g. 192.0.2.1:7007 for `make run`)"
    )
    assert (recorder.tally.sent, recorder.status) == (0, 2)


def test_persistent_tcp_gives_up_on_a_server_that_stops_reading(monkeypatch):
    monkeypatch.setattr(probeclients, "MAX_UNECHOED", 200)
    _run, recorder, reactor = start(interval=1, size=64, timeout=10)
    protocol, _ = connect(reactor)
    protocol.pauseProducing()  # what the transport does when the kernel takes no more
    reactor.advance(1)
    reactor.advance(1)  # 3 x 64 bytes unechoed; a fourth would pass 4 x 64
    assert recorder.tally is None
    reactor.advance(1)
    reactor.advance(1)
    assert recorder.error == (
        "4 probes (256 bytes) sent without their echo: the server is not reading them, "
        "or not as fast as they are sent; giving up"
    )
    assert recorder.status == 2


def test_persistent_tcp_a_server_that_reads_but_never_echoes_is_told_so_after_a_count_of_probes(monkeypatch):
    monkeypatch.setattr(probeclients, "MAX_UNECHOED_PROBES", 50)
    _run, recorder, reactor = start(interval=0.01, size=64, timeout=0.1)
    connect(reactor)
    for _ in range(49):
        reactor.advance(0.01)
    assert recorder.tally is None  # 50 probes awaited, 40 of them lost
    reactor.advance(0.01)  # the 51st is not sent, and fails with the run, as those awaited in time
    assert recorder.error == (
        "50 probes (3200 bytes) sent without their echo: the server reads them but does not echo; giving up"
    )
    tally = recorder.tally
    assert (tally.sent, tally.lost, tally.failed, recorder.status) == (51, 40, 11, 2)


def test_persistent_tcp_the_late_echo_of_a_lost_probe_is_still_checked_byte_for_byte():
    run, recorder, reactor = start(count=200, interval=0.01, timeout=0.05)
    protocol, _ = connect(reactor)
    for _ in range(199):
        reactor.advance(0.01)
    # 195 probes lost, 5 within their timeout.
    assert len(run.pending) == 5 and recorder.tally is None
    stream = bytearray(b"".join(expected(seq) for seq in range(1, 201)))
    stream[3 * 64 + 10] ^= 1  # probe 4, late and corrupted
    protocol.dataReceived(bytes(stream))
    tally = recorder.tally
    assert (tally.late, tally.corrupted, tally.received, tally.lost) == (194, 1, 5, 0)
    assert recorder.detail("late")["rtt"] == pytest.approx(1.99)


def test_persistent_tcp_a_lost_probe_keeps_a_few_bytes_not_its_payload():
    run, _recorder, reactor = start(interval=0.01, size=1000, timeout=0.05, reporter=Silent())
    _, transport = connect(reactor)
    reactor.advance(1)  # a hundred probes lost already
    assert retained_per_probe(reactor, 0.01, 2000, transport.clear) < 64
    assert not run.finished


# -- a connection a probe -----------------------------------------------------------------------


def test_connect_each_probe_its_connection_half_closed_timed_from_connect_and_send():
    _run, recorder, reactor = start("connect", count=2, interval=1)
    reactor.advance(0.002)
    protocol, transport = connect(reactor)
    assert transport.value() == expected(1) and transport.write_closed and transport.nodelay
    reactor.advance(0.001)
    protocol.dataReceived(expected(1))
    reactor.advance(0.001)
    protocol.readConnectionLost()
    assert transport.disconnecting
    reactor.advance(0.996)  # probe 2
    assert len(reactor.tcpClients) == 2
    protocol, transport = connect(reactor)
    protocol.dataReceived(expected(2))
    protocol.readConnectionLost()
    assert recorder.kinds() == [("ok", 1), ("ok", 2)]
    first = recorder.events[1][2]
    assert first["connect"] == pytest.approx(0.002) and first["rtt"] == pytest.approx(0.001)
    assert recorder.tally.connect.count == 2 and recorder.status == 0


def test_bytecount_sends_its_header_and_reads_to_the_servers_end_of_file():
    _run, recorder, reactor = start("bytecount", count=1, size=100)
    protocol, transport = connect(reactor)
    assert transport.value() == b"100 " + expected(1, 100)
    assert not transport.write_closed
    protocol.dataReceived(expected(1, 100))
    protocol.readConnectionLost()
    assert recorder.kinds() == [("ok", 1)] and recorder.status == 0


def test_connect_an_echo_cut_short_fails_the_probe_and_the_run_goes_on():
    _run, recorder, reactor = start("connect", count=2, interval=1)
    protocol, _ = connect(reactor)
    protocol.dataReceived(expected(1)[:20])
    protocol.readConnectionLost()
    assert recorder.detail("failed")["detail"] == "the server closed the connection after 20 of 64 bytes"
    reactor.advance(1)
    protocol, _ = connect(reactor)
    protocol.dataReceived(expected(2)[:10])
    protocol.connectionLost(Failure(error.ConnectionLost()))
    assert recorder.events[-1][2]["detail"] == "connection reset by the server after 10 of 64 bytes"
    assert (recorder.tally.failed, recorder.status) == (2, 2)


def test_connect_more_bytes_than_sent_corrupt_the_answer():
    _run, recorder, reactor = start("connect", count=1)
    protocol, _ = connect(reactor)
    protocol.dataReceived(expected(1) + b"!")
    protocol.readConnectionLost()
    assert recorder.detail("corrupted")["detail"] == "1 bytes more than sent"
    assert recorder.status == 3


def test_connect_refused_and_timed_out_probes_are_told_apart():
    _run, recorder, reactor = start("connect", count=3, interval=1, timeout=0.5)
    reactor.tcpClients[0][2].clientConnectionFailed(None, Failure(error.ConnectionRefusedError()))
    reactor.advance(1)
    _protocol, transport = connect(reactor)  # connected, never answered
    reactor.advance(0.5)
    assert transport.aborted
    reactor.advance(0.5)  # probe 3: the connection attempt itself never finishes
    reactor.advance(0.5)
    assert reactor.connectors[2].stoppedConnecting
    assert recorder.kinds() == [("failed", 1), ("timeout", 2), ("timeout", 3)]
    assert [e[2] for e in recorder.events[2:]] == ["connected, no echo", "not connected"]
    assert (recorder.tally.failed, recorder.tally.lost, recorder.status) == (1, 2, 2)


def test_connect_time_counts_from_the_sockets_connect_not_from_twisteds_set_up(reactor):
    # A real (not installed, not running) reactor and a real listening socket: Twisted makes
    # the connect() a turn of the loop after the connector, and that turn must not count.
    now = [0.0]
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        target = f"127.0.0.1:{server.getsockname()[1]}"
        options = make_options(target, mode="connect", count=1, timeout=60)
        run = Run(options, "127.0.0.1", Recorder(), reactor, lambda: now[0], KEY)
        try:
            run.start()  # probe 1 at t=0: Twisted's connector and socket made
            now[0] = 0.5
            reactor.runUntilCurrent()  # its connect()
            now[0] = 0.75
            end = time.monotonic() + 10
            while not run.tally.connect.count and time.monotonic() < end:
                reactor.doIteration(0.1)  # the connection completes
            assert run.tally.connect.count == 1
            assert run.tally.connect.min == pytest.approx(0.25)
        finally:
            run.stop()


@pytest.mark.parametrize(
    ("failure", "text"),
    [
        (error.ConnectionRefusedError(), "connection refused"),
        (error.ConnectionLost(), "connection reset by the server"),
        (error.TCPTimedOutError(), "connection timed out"),
        # The connect()'s errno, as the kernel gave it: an ICMP error to the SYN.
        (error.getConnectError((113, "No route to host")), "connection failed: No route to host"),
        # The socket the options could not be had on (echod.probe.sockets names the option first) ...
        (
            error.ConnectBindError(19, "-I eth9: no network interface 'eth9' here"),
            "-I eth9: no network interface 'eth9' here",
        ),
        # ... and one Twisted could not make at all.
        (error.ConnectBindError(24, "Too many open files"), "connection failed: Too many open files"),
    ],
)
def test_a_connections_failure_is_told_in_a_few_words(failure, text):
    assert probeclients.describe_failure(Failure(failure)) == text
