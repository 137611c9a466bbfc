"""
The metrics port of a real echod under attack over real sockets: clients
that pipeline without reading, storms of scrapers, idle and slow
connections, Accept headers of any kind. Each time the echo listeners go on
answering, memory stays bounded, and an honest scraper is still served.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from echod.metrics.endpoint import FIRST_BYTE_TIMEOUT, REQUEST_TIMEOUT
from echod.metrics.limits import (
    ACCEPT_RATE,
    CONNECTION_RATE_PER_PEER,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_PEER,
)
from tests.integration.clients import connect, exchange, pattern, read_until_closed
from tests.integration.daemon import Daemon
from tests.integration.metrics import metrics_url
from tests.integration.test_metrics import config

ATTACKER = "127.0.0.1"
GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
#: A request for one answer, as curl or a one-off scraper sends it.
ONE_GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.fixture
def daemon(tmp_path):
    """An echod with an echo listener and its metrics, on 127.0.0.1; killed afterwards."""
    path = tmp_path / "echod.conf"
    path.write_text(config(echo={"protocol": "echo"}))
    started = Daemon(path).start()
    try:
        yield started.wait_ready()
    finally:
        started.kill()


def address(daemon: Daemon) -> tuple[str, int]:
    host, port = metrics_url(daemon).split("/")[2].rsplit(":", 1)
    return host, int(port)


def get(where: tuple[str, int], source: str, request: bytes = ONE_GET) -> tuple[str, dict[str, str], bytes]:
    """One request from C{source}, read until the server closes: status line, headers, body."""
    with socket.create_connection(where, timeout=10, source_address=(source, 0)) as sock:
        sock.sendall(request)
        answer = read_until_closed(sock, timeout=10)
    head, _, body = answer.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}, body


def parses(content_type: str | None, body: bytes) -> bool:
    """Whether C{body} is a page of metrics in the format C{content_type} names."""
    parse = openmetrics_families if content_type == OPENMETRICS else text_string_to_metric_families
    try:
        return bool(list(parse(body.decode())))
    except ValueError:
        return False


def echo_rounds(port: int, seconds: float, timeout: float = 5) -> int:
    """How many 64-byte echoes one connection got back in C{seconds}, each within C{timeout}."""
    rounds = 0
    with connect(port) as sock:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            payload = pattern(64, rounds)
            assert exchange([(sock, payload)], half_close=False, timeout=timeout) == [payload]
            rounds += 1
    return rounds


def test_a_client_pipelining_requests_gets_one_answer_and_the_connection_closed(daemon):
    with socket.create_connection(address(daemon), timeout=10) as sock:
        sock.sendall(GET * 500)
        answer = read_until_closed(sock, timeout=REQUEST_TIMEOUT + 5)
    assert answer.count(b"HTTP/1.1 ") == 1
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nConnection: close\r\n" in answer


def test_clients_pipelining_without_reading_starve_no_echo_and_grow_no_memory(daemon):
    where = address(daemon)
    before = daemon.rss_kib()
    stop = threading.Event()
    connections = []

    def attack() -> None:
        # 16 connections that send request after request and never read; one closed is opened again.
        burst = GET * 1000
        selector = selectors.DefaultSelector()
        socks: set[socket.socket] = set()
        try:
            while not stop.is_set():
                while len(socks) < MAX_CONNECTIONS:
                    sock = socket.create_connection(where, timeout=5)
                    sock.setblocking(False)
                    socks.add(sock)
                    selector.register(sock, selectors.EVENT_WRITE)
                    connections.append(sock)
                for key, _ in selector.select(0.1):
                    try:
                        key.fileobj.send(burst)
                    except BlockingIOError:
                        pass
                    except OSError:  # closed by the server
                        selector.unregister(key.fileobj)
                        socks.discard(key.fileobj)
                        key.fileobj.close()
        finally:
            for sock in socks:
                sock.close()
            selector.close()

    attacker = threading.Thread(target=attack, daemon=True)
    attacker.start()
    try:
        rounds = echo_rounds(daemon.port("echo"), 4)
    finally:
        stop.set()
        attacker.join(30)
    grown = daemon.rss_kib("VmHWM") - before
    assert rounds > 50, f"{rounds} echoes in 4 s while {len(connections)} connections pipelined"
    assert grown < 50 * 1024, f"echod grew by {grown} KiB"
    assert echo_rounds(daemon.port("echo"), 0.1) > 0
    assert get(where, "127.0.0.2")[0] == "HTTP/1.1 200 OK"


def test_a_storm_of_scrapers_is_held_to_the_rates_and_an_honest_scraper_is_served(daemon):
    where = address(daemon)
    stop = threading.Event()
    lock = threading.Lock()
    counts = {"served": 0, "taken": 0}

    def scraper() -> None:
        # As fast as it can: a new connection once the last one is answered or closed.
        while not stop.is_set():
            try:
                with socket.create_connection(where, timeout=5, source_address=(ATTACKER, 0)) as sock:
                    sock.sendall(GET)
                    answer = read_until_closed(sock, timeout=5)  # an answer, or closed unanswered
            except TimeoutError:
                continue  # still waiting to be taken
            except OSError:
                answer = b""  # reset at once
            with lock:
                counts["taken"] += 1
                counts["served"] += answer.startswith(b"HTTP/1.1 200 OK")

    storm = [threading.Thread(target=scraper, daemon=True) for _ in range(16)]
    started = time.monotonic()
    for thread in storm:
        thread.start()
    try:
        honest = []
        while time.monotonic() - started < 3:
            honest.append(get(where, "127.0.0.2")[0])
            stop.wait(0.25)  # Prometheus' pace, not a synchronisation
        rounds = echo_rounds(daemon.port("echo"), 0.5)
    finally:
        stop.set()
        for thread in storm:
            thread.join(30)
    elapsed = time.monotonic() - started
    assert set(honest) == {"HTTP/1.1 200 OK"}
    assert rounds > 0
    # The storm's address got its burst and its rate; the port took its rate of connections in all,
    # the honest ones among them; the rest waited in the kernel's queue. The daemon's buckets run on
    # its reactor's wall clock, this test on the monotonic one: a quarter of a second more of each
    # rate leaves room for the two to differ (48 served against a bound of 47.9 was seen once, on a
    # loaded machine), and none for the storm's thousands the old code answered.
    window = elapsed + 1 + 0.25
    assert 0 < counts["served"] <= CONNECTION_RATE_PER_PEER * window
    assert counts["taken"] <= ACCEPT_RATE * window


def test_idle_connections_from_one_address_lock_no_other_scraper_out(daemon):
    where = address(daemon)
    started = time.monotonic()
    idle = [socket.create_connection(where, timeout=30) for _ in range(MAX_CONNECTIONS)]
    try:
        for source in ("127.0.0.2", "127.0.0.3"):
            status, _, body = get(where, source)
            assert status == "HTTP/1.1 200 OK"
            assert b"echod_build_info" in body
        # Those it took are dropped at the first-byte deadline, long before a request's.
        for sock in idle:
            assert read_until_closed(sock, timeout=FIRST_BYTE_TIMEOUT + 10) == b""
        assert time.monotonic() - started < FIRST_BYTE_TIMEOUT + 5 < REQUEST_TIMEOUT
    finally:
        for sock in idle:
            sock.close()


def test_a_slowloris_against_the_metrics_port_does_not_stop_echoes(daemon):
    where = address(daemon)
    # Every slot taken, from as many addresses as that takes.
    sources = [f"127.0.0.{n // MAX_CONNECTIONS_PER_PEER + 10}" for n in range(MAX_CONNECTIONS)]
    slow = [socket.create_connection(where, timeout=30, source_address=(s, 0)) for s in sources]
    stop = threading.Event()
    for sock in slow:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")

    def trickle() -> None:
        # One header line a second on each: the pace of the attack, not a synchronisation.
        while not stop.wait(1.0):
            for sock in slow:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass

    attacker = threading.Thread(target=trickle, daemon=True)
    attacker.start()
    try:
        started = time.monotonic()
        # Every slot is taken: one more is closed at once.
        with socket.create_connection(where, timeout=10, source_address=("127.0.0.2", 0)) as extra:
            assert read_until_closed(extra, timeout=10) == b""
        # Echoes go on as usual meanwhile.
        assert echo_rounds(daemon.port("echo"), REQUEST_TIMEOUT - 2) > 100
        # However they trickle, the server cuts them at the deadline, and scrapes are served again.
        for sock in slow:
            assert read_until_closed(sock, timeout=REQUEST_TIMEOUT + 10) == b""
        assert time.monotonic() - started < REQUEST_TIMEOUT + 10
        assert get(where, "127.0.0.2")[0] == "HTTP/1.1 200 OK"
    finally:
        stop.set()
        attacker.join(10)
        for sock in slow:
            sock.close()


def test_any_accept_header_gets_one_of_two_content_types_and_never_an_error_or_a_log_line(daemon):
    where = address(daemon)
    accepts = [
        PROMETHEUS_ACCEPT,
        "application/openmetrics-text; version=ANY",
        "application/openmetrics-text; version=x",
        "application/openmetrics-text; version=1.0.0; escaping=\x1b[31m",
        "text/plain; version=0.0.4; q=0.5; charset=\xff",
        "application/openmetrics-text;;;=,;q=",
        "*/*",
        "",
        *(f"application/openmetrics-text; version=1.0.0; x={n}" for n in range(12)),
    ]
    lines = len(daemon.output.splitlines())
    answers = {}
    for n, accept in enumerate(accepts):
        request = f"GET /metrics HTTP/1.1\r\nConnection: close\r\nAccept: {accept}\r\n\r\n".encode("latin-1")
        status, headers, body = get(where, f"127.0.1.{n + 1}", request)
        answers[accept] = (status, headers.get("content-type"), parses(headers.get("content-type"), body))
    assert answers["application/openmetrics-text; version=x"] == ("HTTP/1.1 200 OK", TEXT, True)
    assert "Traceback" not in "\n".join(daemon.output.splitlines()[lines:])
    assert answers[PROMETHEUS_ACCEPT] == ("HTTP/1.1 200 OK", OPENMETRICS, True)
    good = {("HTTP/1.1 200 OK", TEXT, True), ("HTTP/1.1 200 OK", OPENMETRICS, True)}
    assert {accept: answer for accept, answer in answers.items() if answer not in good} == {}
    assert daemon.output.splitlines()[lines:] == []  # not a line
