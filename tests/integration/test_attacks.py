"""
Attacks on the TCP listeners, bounded in count and time and aimed at
loopback only, each measured by what honest clients get meanwhile.
"""

import re
import resource
import selectors
import socket
import time

import pytest

from tests.integration.clients import connect, converse, echo, held, pattern, read_until_closed


@pytest.fixture(autouse=True)
def enough_descriptors():
    """The attacks hold over a thousand sockets at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"needs 4096 open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


#: The most an attack may make the daemon's memory (its RSS) grow, in KiB.
GROWTH_KIB = 16 * 1024


def wait_all_closed(socks: list[socket.socket], timeout: float) -> list[float]:
    """Wait until the server has closed every socket; return when each closed."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed_at = []
    deadline = time.monotonic() + timeout
    while len(closed_at) < len(socks):
        left = deadline - time.monotonic()
        assert left > 0, f"{len(socks) - len(closed_at)} connection(s) still open after {timeout}s"
        for key, _ in selector.select(left):
            try:
                data = key.fileobj.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data:
                selector.unregister(key.fileobj)
                closed_at.append(time.monotonic())
    selector.close()
    return closed_at


def honest_round(port: int, rounds: int, host: str = "127.0.0.1") -> int:
    """How many of C{rounds} echoes came back intact."""
    ok = 0
    for i in range(rounds):
        payload = pattern(2000, seed=i)
        ok += echo(port, payload, host=host) == payload
    return ok


def count_access_log(path, cause: str) -> int:
    return sum(line.endswith(f" closed={cause}") for line in path.read_text().splitlines())


def test_slowloris_idle_connections_are_all_closed_at_the_idle_timeout(start_daemon, tmp_path):
    log = tmp_path / "access.log"
    daemon = start_daemon(
        {"access_log": str(log)},
        echo={"protocol": "echo", "idle_timeout": "2s", "max_connections": "2000"},
    )
    port = daemon.port("echo")
    # Before the first connects: each one is closed no sooner than the timeout after its own.
    opened = time.monotonic()
    with held([connect(port) for _ in range(1000)]) as idle:
        rss_before = daemon.rss_kib()
        assert honest_round(port, 100) == 100  # all served while the 1000 sit there
        closed_at = wait_all_closed(idle, timeout=60)
    assert min(closed_at) - opened >= 1.8, "closed before the idle timeout"
    assert honest_round(port, 20) == 20
    assert daemon.rss_kib() - rss_before < GROWTH_KIB
    daemon.stop()
    assert count_access_log(log, "idle-timeout") == 1000


def test_connection_flood_from_one_host_is_capped_and_others_get_through(start_daemon, tmp_path):
    log = tmp_path / "access.log"
    daemon = start_daemon(
        {"access_log": str(log)},
        echo={"protocol": "echo", "max_connections": "500", "max_connections_per_peer": "50"},
    )
    port = daemon.port("echo")
    rss_before = daemon.rss_kib()
    with held([connect(port, source="127.0.0.2") for _ in range(600)]) as flood:
        assert honest_round(port, 100) == 100
        # The 550 over the per-peer cap were closed as soon as they were accepted.
        closed = wait_all_closed(flood[50:], timeout=30)
        assert len(closed) == 550
        for sock in flood[:50]:
            assert sock.send(b"x") == 1  # the first 50 are still served
        assert daemon.rss_kib() - rss_before < GROWTH_KIB
    daemon.stop()
    assert count_access_log(log, "refused-max_connections_per_peer") == 550


def test_connection_flood_from_many_hosts_meets_the_total_cap(start_daemon, tmp_path):
    log = tmp_path / "access.log"
    daemon = start_daemon(
        {"access_log": str(log)},
        echo={"protocol": "echo", "max_connections": "300", "max_connections_per_peer": "40"},
    )
    port = daemon.port("echo")
    rss_before = daemon.rss_kib()
    with held([connect(port, source=f"127.0.1.{host}") for host in range(1, 11) for _ in range(40)]) as flood:
        refused = wait_all_closed(flood[300:], timeout=30)
        assert len(refused) == 100
        assert daemon.rss_kib() - rss_before < GROWTH_KIB
    assert honest_round(port, 20) == 20  # capacity is back once the flood lets go
    daemon.stop()
    assert count_access_log(log, "refused-max_connections") == 100


def test_bytecount_abuse_is_bounded_in_time_and_memory(start_daemon, tmp_path):
    log = tmp_path / "access.log"
    daemon = start_daemon(
        {"access_log": str(log)},
        bc={
            "protocol": "bytecount",
            "idle_timeout": "2s",
            "max_message_size": "1M",
            "max_connections": "1000",
        },
    )
    port = daemon.port("bc")
    rss_before = daemon.rss_kib()
    attacks = {
        "endless header": b"1" * 5 + b"0" * 100,  # no space within max_header_length
        "absurd length": b"99999999999999999999 ",
        "non-digits": b"GET / HTTP/1.1\r\n\r\n",
        "length then silence": b"1000000 " + b"x" * 1000,
    }
    started = time.monotonic()
    socks = {name: [connect(port) for _ in range(50)] for name in attacks}
    with held([sock for group in socks.values() for sock in group]):
        for name, request in attacks.items():
            for sock in socks[name]:
                sock.sendall(request)
        ok = sum(
            echo(port, b"%d " % len(p) + p, half_close=False) == p
            for p in [pattern(5000, s) for s in range(50)]
        )
        assert ok == 50
        for name in ("endless header", "absurd length", "non-digits"):
            for sock in socks[name]:
                assert read_until_closed(sock, timeout=10) == b"", name
        silent = wait_all_closed(socks["length then silence"], timeout=30)
    assert min(silent) - started >= 1.8, "the silent ones are closed by the idle timeout"
    assert daemon.rss_kib() - rss_before < GROWTH_KIB
    daemon.stop()
    # Bad headers are refused by the parser at once; only the silent ones wait for the idle timeout.
    assert count_access_log(log, "bad-request") == 150
    assert count_access_log(log, "idle-timeout") == 50


def access_log_lines(daemon, path) -> list[str]:
    """The access log once the daemon has stopped (and so written every line)."""
    daemon.stop()
    return path.read_text().splitlines()


def test_bytecount_bytes_after_the_payload_do_not_cut_the_echo(start_daemon, tmp_path):
    """
    A client sending more than it announced still gets the whole echo and a
    clean end of file: closing with its extra bytes unread would make the
    kernel send a reset and drop the echo not yet delivered.
    """
    log = tmp_path / "access.log"
    daemon = start_daemon({"access_log": str(log)}, bc={"protocol": "bytecount", "max_message_size": "16M"})
    payload = pattern(4_000_000)
    with connect(daemon.port("bc")) as sock:
        received, error = converse(sock, b"%d " % len(payload) + payload + pattern(1_000_000, seed=1))
    assert error is None, f"{error!r} after {len(received)} of {len(payload)} bytes"
    assert len(received) == len(payload)
    assert received == payload
    (line,) = access_log_lines(daemon, log)
    assert line.split()[3:5] == ["in=5000008", "out=4000000"] and line.endswith(" closed=server"), line


def small_window_connection(port: int) -> socket.socket:
    """A connection whose receive buffer is small (set before connecting, so the window stays small)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect(("127.0.0.1", port))
    return sock


@pytest.mark.parametrize("protocol", ["echo", "bytecount"])
def test_a_slow_reader_is_not_idle(start_daemon, tmp_path, protocol):
    """
    A client that reads its echo slowly makes the server stop reading
    (backpressure) for far longer than the idle timeout, yet it is busy:
    progress in either direction keeps the connection open.
    """
    log = tmp_path / "access.log"
    daemon = start_daemon({"access_log": str(log)}, s={"protocol": protocol, "idle_timeout": "500ms"})
    payload = pattern(4 * 1024 * 1024)
    request = payload if protocol == "echo" else b"%d " % len(payload) + payload
    started = time.monotonic()
    with small_window_connection(daemon.port("s")) as sock:
        # 4 KiB reads at 1 MiB/s. The server's kernel takes megabytes, and takes more only
        # once a good part of that is read: for longer than the idle timeout at this pace,
        # with the server reading nothing meanwhile (measured: closed after 0.6 to 0.8 s).
        received, error = converse(sock, request, half_close=True, read_size=4096, read_rate=1 << 20)
    took = time.monotonic() - started
    assert error is None and len(received) == len(payload), (
        f"{error!r} after {len(received)} bytes, {took:.1f}s"
    )
    assert received == payload
    (line,) = access_log_lines(daemon, log)
    assert " closed=idle-timeout" not in line, line


def test_a_client_that_stops_reading_and_sending_is_still_closed_at_the_idle_timeout(start_daemon, tmp_path):
    """Echo still queued for it is no activity: nothing moves either way."""
    log = tmp_path / "access.log"
    daemon = start_daemon({"access_log": str(log)}, echo={"protocol": "echo", "idle_timeout": "500ms"})
    with small_window_connection(daemon.port("echo")) as sock:
        block = pattern(1 << 20)
        started = time.monotonic()
        sock.settimeout(10)
        # Send, never reading, until the server stops taking more (its output is stuck)
        # and then closes the connection.
        with pytest.raises(OSError):
            while True:
                sock.send(block)
        assert time.monotonic() - started < 10, "the server never closed the connection"
    (line,) = access_log_lines(daemon, log)
    assert line.endswith(" closed=idle-timeout"), line


def warning_lines(daemon, pattern_: str) -> list[str]:
    """The daemon's warnings matching C{pattern_}, once it has stopped."""
    daemon.stop()
    return [line for line in daemon.output.splitlines() if " warn " in line and re.search(pattern_, line)]


def summarised(lines: list[str]) -> int:
    """How many events the summary lines among C{lines} stand for."""
    return sum(
        int(m["n"].replace(",", "")) for line in lines if (m := re.search(r"and (?P<n>[\d,]+) more", line))
    )


def test_bad_requests_cannot_flood_the_log(start_daemon):
    daemon = start_daemon(bc={"protocol": "bytecount"})
    port = daemon.port("bc")
    for _ in range(3000):
        with connect(port, source="127.0.0.2") as sock:
            sock.sendall(b"x ")
            assert read_until_closed(sock) == b""
    lines = warning_lines(daemon, r"bc: .*bad request")
    assert len(lines) <= 5, lines[:10]
    # The one in full names the peer and the reason; the rest are counted, not lost.
    assert re.search(r"bad request from 127\.0\.0\.2:\d+, closing: byte b'x'", lines[0]), lines
    assert len(lines) - 1 + summarised(lines) == 3000, lines
    # In one summary, or more if the 3,000 took longer than one interval on a slow machine.
    assert all(
        re.search(r"and [\d,]+ more bad requests from 127\.0\.0\.2 in the last", line) for line in lines[1:]
    )


def test_churn_at_the_per_peer_cap_cannot_flood_the_log(start_daemon):
    daemon = start_daemon(echo={"protocol": "echo", "max_connections_per_peer": "1"})
    port = daemon.port("echo")
    for i in range(1000):
        with connect(port, source="127.0.0.2") as held, connect(port, source="127.0.0.2") as extra:
            assert read_until_closed(extra) == b""  # refused: over the cap
            # The held one is served, and closed by the server before the next round.
            assert converse(held, b"%d" % i, half_close=True) == (b"%d" % i, None)
    lines = warning_lines(daemon, r"max_connections_per_peer")
    assert len(lines) <= 5, lines[:10]
    assert len(lines) - 1 + summarised(lines) == 1000, lines
