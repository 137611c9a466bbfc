import os
import socket

from twisted.internet.task import Clock

from echod.systemd.notify import Notifier, monotonic_usec, watchdog_interval


def test_watchdog_interval_is_half_of_watchdog_usec():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0


def test_no_watchdog_when_unset_zero_garbage_or_for_another_process():
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None


def test_monotonic_usec_is_clock_monotonic_in_microseconds():
    import time

    before = time.clock_gettime(time.CLOCK_MONOTONIC)
    value = monotonic_usec()
    after = time.clock_gettime(time.CLOCK_MONOTONIC)
    assert before * 1e6 - 1 <= value <= after * 1e6 + 1


def test_messages_reach_the_notify_socket_and_status_only_when_it_changes(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        clock = Clock()
        notifier = Notifier(clock, {"WATCHDOG_USEC": "2000000"})
        status = ["starting"]
        notifier.ready("up")
        notifier.start(lambda: status[0], every=5)
        clock.advance(1)
        status[0] = "busy"
        for _ in range(4):
            clock.advance(1)
        notifier.reloading()
        notifier.stopping("bye")
        received = []
        server.setblocking(False)
        while True:
            try:
                received.append(server.recv(4096).decode())
            except BlockingIOError:
                break
    others = [m for m in received if m != "WATCHDOG=1"]
    assert others[:3] == ["READY=1\nSTATUS=up", "STATUS=starting", "STATUS=busy"]
    assert others[3].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert others[4:] == ["STOPPING=1\nSTATUS=bye"]
    assert received.count("WATCHDOG=1") == 6  # at 0, 1, 2, 3, 4 and 5 seconds
