"""
bench/udpload.c, the benchmark's UDP load client, counts every datagram for what it is: driven against
a deliberately faulty echo server (tests/integration/faulty_echo.py, one fault a server, counting the
datagrams from 1 as they arrive) and against a socket that never reads, over loopback.

With no warm-up (-w 0) every datagram the client sends is one it counts, so the server's own count
of what it received is the client's "sent", and each fault's toll is known exactly.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.daemon import Daemon

ROOT = Path(__file__).resolve().parent.parent.parent

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build bench/udpload.c")

#: Every count udpload gives a datagram, or a datagram's answer.
COUNTS = ("sent", "answered", "late", "lost", "duplicates", "corrupted", "send_errors", "stale")


@pytest.fixture(scope="module")
def udpload(tmp_path_factory) -> Path:
    """bench/udpload.c built as `make bench` builds it."""
    binary = tmp_path_factory.mktemp("bench") / "udpload"
    source = ROOT / "bench" / "udpload.c"
    subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-o", str(binary), str(source)], check=True)
    return binary


@pytest.fixture
def faulty():
    started: list[Daemon] = []

    def start(*fault: str) -> int:
        server = Daemon(None, command=[sys.executable, "-m", "tests.integration.faulty_echo", *fault]).start()
        started.append(server)
        return int(server.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1))

    yield start
    for server in started:
        server.kill()


def run(udpload: Path, port: int, *options: str) -> dict:
    out = subprocess.run(
        [str(udpload), "-p", str(port), "-w", "0", *options], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def counts(result: dict) -> dict:
    """The counts that are not zero."""
    return {key: result[key] for key in COUNTS if result[key]}


#: Open loop, 500 datagrams a second for half a second from one socket: late after 0.1 s.
RATE = ("-m", "rate", "-r", "500", "-d", "0.5", "-t", "0.1", "-D", "1")


def test_datagrams_answered_out_of_order_are_all_answered_and_nothing_else(udpload, faulty):
    result = run(udpload, faulty("udp", "swap", "5"), *RATE)
    assert result["sent"] > 200
    assert counts(result) == {"sent": result["sent"], "answered": result["sent"]}
    assert result["loss_pct"] == 0


def test_a_dropped_datagram_is_lost(udpload, faulty):
    result = run(udpload, faulty("udp", "drop", "10"), *RATE, "-s", "1400")
    dropped = result["sent"] // 10
    assert dropped > 20
    assert counts(result) == {"sent": result["sent"], "answered": result["sent"] - dropped, "lost": dropped}
    assert result["loss_pct"] == pytest.approx(100 * dropped / result["sent"], abs=1e-4)


def test_an_answer_after_the_timeout_is_late_not_lost(udpload, faulty):
    result = run(udpload, faulty("udp", "late", "5", "0.3"), *RATE)
    assert counts(result) == {"sent": result["sent"], "answered": result["sent"] - 1, "late": 1}
    assert result["max_us"] < 100_000  # the late one's round trip is not among the answered ones


def test_an_answer_that_comes_twice_is_one_answer_and_a_duplicate(udpload, faulty):
    result = run(udpload, faulty("udp", "duplicate", "5"), *RATE)
    assert counts(result) == {"sent": result["sent"], "answered": result["sent"], "duplicates": 1}


def test_an_answer_with_a_byte_flipped_is_corrupted_and_its_datagram_lost(udpload, faulty):
    result = run(udpload, faulty("udp", "flip", "5", "40"), *RATE, "-s", "64")
    sent = result["sent"]
    assert counts(result) == {"sent": sent, "answered": sent - 1, "corrupted": 1, "lost": 1}


def test_the_closed_loop_sends_on_past_a_lost_datagram_once_its_timeout_expires(udpload, faulty):
    result = run(udpload, faulty("udp", "drop", "10"), "-m", "window", "-W", "4", "-d", "0.5", "-t", "0.05")
    dropped = result["sent"] // 10
    # Every dropped datagram holds one of the 4 slots for 50 ms: without sending on, 4 drops would stop it.
    assert dropped > 4
    assert counts(result) == {"sent": result["sent"], "answered": result["sent"] - dropped, "lost": dropped}


def test_datagrams_the_servers_full_queue_dropped_are_counted_as_its_kernel_drops(udpload):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as deaf:
        deaf.bind(("127.0.0.1", 0))
        result = run(udpload, deaf.getsockname()[1], "-m", "rate", "-r", "4000", "-d", "0.5", "-t", "0.05")
        deaf.setblocking(False)
        queued = 0
        while True:
            try:
                deaf.recv(65536)
            except BlockingIOError:
                break
            queued += 1
    assert result["sent"] > queued > 0
    assert counts(result) == {"sent": result["sent"], "lost": result["sent"]}
    assert result["server_rx_drops"] == result["sent"] - queued
    assert result["client_rx_drops"] == 0
