"""
A real echod with its metrics on, scraped over HTTP while real clients use it:
each metric equals what was sent; promtool accepts the output; the metrics
port bounded against slow clients; running out of file descriptors counted;
reloads turning the metrics on, off, moving them, and never sending a
counter back.
"""

from __future__ import annotations

import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.clients import connect, echo, exchange, held, pattern, read_until_closed
from tests.integration.daemon import Daemon, environment
from tests.integration.metrics import fetch, get, listener_info, metrics_url, refused, scrape, total, until
from tests.integration.systemd import NotifySocket, free_port, taken_port
from tests.proxyheaders import proxy_v1

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is missing: apt install prometheus (make system-packages does)"
)


def config(metrics: str | None = "127.0.0.1:0", **listeners: dict[str, str]) -> str:
    """INI text: [echod] with C{metrics}, and each listener on 127.0.0.1, a free port."""
    lines = ["[echod]"] + ([f"metrics = {metrics}"] if metrics is not None else [])
    for name, keys in listeners.items():
        lines.append(f"[listener:{name}]")
        lines += [f"{k} = {v}" for k, v in {"address": "127.0.0.1", "port": "0", **keys}.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def run(tmp_path):
    """Start echod with a configuration text; killed afterwards."""
    daemons: list[Daemon] = []

    def start(text: str, preexec=None, **env: str) -> Daemon:
        path = tmp_path / f"echod-{len(daemons)}.conf"
        path.write_text(text)
        daemon = Daemon(path, env=environment(**env), preexec=preexec)
        daemons.append(daemon)
        return daemon.start().wait_ready()

    yield start
    for daemon in daemons:
        daemon.kill()


def reload(daemon: Daemon, text: str, timeout: float = 30) -> None:
    """Write C{text} as the configuration and SIGHUP; return once that reload is done."""

    def done() -> int:
        output = daemon.output
        return output.count("reloaded: serving") + output.count("reload failed")

    before = done()
    daemon.config_path.write_text(text)
    daemon.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while done() == before:
        assert time.monotonic() < deadline, f"no reload in {timeout}s:\n{daemon.output}"
        time.sleep(0.02)  # polling the daemon's output


def udp_port(daemon: Daemon, name: str) -> int:
    return int(daemon.wait_for(rf"{name}: echo/udp listening on \S+:(\d+)").group(1))


def test_each_metric_equals_the_traffic_sent(run):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocked:
        blocked.bind(("127.0.0.1", 0))
        daemon = run(
            config(
                echo={"protocol": "echo", "idle_timeout": "300ms"},
                bc={"protocol": "bytecount", "max_connections_per_peer": "2"},
                u={
                    "protocol": "echo",
                    "transport": "udp",
                    "blocked_source_ports": str(blocked.getsockname()[1]),
                },
            )
        )
        url = metrics_url(daemon)
        sizes = [1000, 20000, 300000, 1, 4096]
        for n, size in enumerate(sizes):
            assert echo(daemon.port("echo"), pattern(size, n)) == pattern(size, n)
        # Two that sit after their echo until the idle timeout closes them.
        idle = [connect(daemon.port("echo")) for _ in range(2)]
        assert exchange([(sock, b"0123456789") for sock in idle], half_close=False) == [b"0123456789"] * 2
        for sock in idle:
            assert read_until_closed(sock) == b""
            sock.close()
        for _ in range(3):
            assert echo(daemon.port("bc"), b"5 hello") == b"hello"
        for _ in range(4):
            assert echo(daemon.port("bc"), b"x 1") == b""
        held = [connect(daemon.port("bc")) for _ in range(2)]  # at the per-peer cap, sending nothing
        for _ in range(3):
            with connect(daemon.port("bc")) as over:
                assert read_until_closed(over) == b""
        for sock in held:
            sock.close()
        port = udp_port(daemon, "u")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(10)
            for n in range(6):
                client.sendto(b"d" * (100 + n), ("127.0.0.1", port))
                assert client.recv(1000) == b"d" * (100 + n)
        for _ in range(2):
            blocked.sendto(b"never echoed", ("127.0.0.1", port))

        echoed = sum(sizes) + 20
        samples = until(
            url,
            lambda s: (
                get(s, "echod_connections_accepted_total", listener="bc") == 9
                and get(s, "echod_connections_open", listener="bc") == 0
                and get(s, "echod_datagrams_dropped_total", listener="u", reason="blocked_source_ports") == 2
                and get(s, "echod_idle_timeouts_total", listener="echo") == 2
            ),
        )
    assert get(samples, "echod_connections_accepted_total", listener="echo") == 7
    assert get(samples, "echod_connections_open", listener="echo") == 0
    assert get(samples, "echod_connections_closed_total", listener="echo", cause="client") == 5
    assert get(samples, "echod_connections_closed_total", listener="echo", cause="idle-timeout") == 2
    assert get(samples, "echod_received_bytes_total", listener="echo") == echoed
    assert get(samples, "echod_sent_bytes_total", listener="echo") == echoed
    assert get(samples, "echod_connection_duration_seconds_count", listener="echo") == 7
    # The idle ones lasted at least the idle timeout, the others less on loopback.
    assert get(samples, "echod_connection_duration_seconds_bucket", listener="echo", le="0.25") <= 5
    assert get(samples, "echod_connection_duration_seconds_bucket", listener="echo", le="+Inf") == 7

    assert get(samples, "echod_bad_requests_total", listener="bc") == 4
    assert get(samples, "echod_connections_closed_total", listener="bc", cause="bad-request") == 4
    assert total(samples, "echod_connections_closed_total", listener="bc") == 9
    assert (
        get(samples, "echod_connections_refused_total", listener="bc", reason="max_connections_per_peer") == 3
    )
    assert get(samples, "echod_connections_refused_total", listener="bc", reason="max_connections") == 0
    assert get(samples, "echod_received_bytes_total", listener="bc") == 3 * 7 + 4 * 3
    assert get(samples, "echod_sent_bytes_total", listener="bc") == 3 * 5

    assert get(samples, "echod_datagrams_echoed_total", listener="u") == 6
    assert get(samples, "echod_sent_bytes_total", listener="u") == sum(100 + n for n in range(6))
    assert get(samples, "echod_received_bytes_total", listener="u") == sum(100 + n for n in range(6)) + 24
    assert total(samples, "echod_datagrams_dropped_total", listener="u") == 2
    assert get(samples, "echod_connections_accepted_total", listener="u") is None

    assert listener_info(samples, "u") == [
        {"protocol": "echo", "transport": "udp", "address": "127.0.0.1", "port": str(port)}
    ]
    assert get(samples, "echod_config_last_reload_successful") == 1
    assert get(samples, "process_open_fds") > 5
    assert "echod_alerts" not in {name for name, _ in samples}  # none was ever raised


def test_scrapes_during_traffic_always_add_up_and_only_grow(run):
    daemon = run(config(echo={"protocol": "echo"}))
    url = metrics_url(daemon)
    stop = threading.Event()
    errors: list[str] = []

    def traffic() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            payload = pattern(8192, n)
            try:
                with connect(daemon.port("echo")) as persistent:
                    for _ in range(5):
                        if exchange([(persistent, payload)], half_close=False) != [payload]:
                            errors.append(f"round {n}: wrong bytes")
                if echo(daemon.port("echo"), payload) != payload:
                    errors.append(f"round {n}: wrong bytes")
            except OSError as e:
                errors.append(f"round {n}: {e!r}")

    counters = (
        "echod_connections_accepted_total",
        "echod_received_bytes_total",
        "echod_sent_bytes_total",
        "echod_connection_duration_seconds_count",
    )
    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        last = dict.fromkeys(counters, 0.0)
        for _ in range(15):
            samples = scrape(url)
            accepted = get(samples, "echod_connections_accepted_total", listener="echo")
            open_now = get(samples, "echod_connections_open", listener="echo")
            closed = total(samples, "echod_connections_closed_total", listener="echo")
            assert accepted == open_now + closed, samples
            for name in counters:
                now = total(samples, name, listener="echo")
                assert now >= last[name], name
                last[name] = now
            time.sleep(FRESH_ENOUGH)  # past the page's freshness: each scrape is a new reading
    finally:
        stop.set()
        thread.join(30)
    assert errors == []
    assert last["echod_connections_accepted_total"] > 10
    assert last["echod_received_bytes_total"] > 10 * 8192


#: Longer than the metrics page is served again for (metricsweb.FRESH).
FRESH_ENOUGH = 0.3


@needs_promtool
def test_promtool_accepts_the_metrics(run, tmp_path):
    daemon = run(
        config(
            echo={"protocol": "echo"},
            bc={"protocol": "bytecount"},
            u={"protocol": "echo", "transport": "udp"},
        )
    )
    assert echo(daemon.port("echo"), b"hello") == b"hello"
    assert echo(daemon.port("bc"), b"x") == b""
    text = fetch(metrics_url(daemon))
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""  # not even a lint warning


@needs_promtool
def test_the_shipped_alerting_rules_are_valid_and_fire_on_what_they_say(tmp_path):
    rules = ROOT / "examples" / "prometheus-alerts.yml"
    checked = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", str(ROOT / "tests" / "integration" / "prometheus-alerts-test.yml")],
        capture_output=True,
        text=True,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_other_paths_and_methods_answer_404_and_405(run):
    url = metrics_url(run(config(echo={"protocol": "echo"})))
    with pytest.raises(urllib.error.HTTPError) as caught:
        fetch(url.replace("/metrics", "/other"))
    assert caught.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(urllib.request.Request(url, data=b"x", method="POST"), timeout=10)
    assert caught.value.code in (405, 413)
    assert "echod_build_info" in fetch(url.replace("/metrics", "/"))


def limit_files(count: int):
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))

    return preexec


def test_running_out_of_file_descriptors_is_counted_and_told_once(run, tmp_path):
    notify = NotifySocket(tmp_path / "notify")
    try:
        daemon = run(
            config(echo={"protocol": "echo", "max_connections_per_peer": "1000"}),
            preexec=limit_files(64),
            NOTIFY_SOCKET=str(notify.path),
        )
        url = metrics_url(daemon)
        with held([connect(daemon.port("echo")) for _ in range(120)]) as socks:
            outcomes = []
            for sock in socks:
                try:
                    outcomes.append(exchange([(sock, b"x")], half_close=False, timeout=10) == [b"x"])
                except OSError:
                    outcomes.append(False)  # reset: dropped
            kept, dropped = outcomes.count(True), outcomes.count(False)
            assert kept > 10 and dropped > 10, outcomes
            _, fields = notify.wait_for(
                lambda f: "out of file descriptors" in f.get("STATUS", ""), timeout=15
            )
            assert fields["STATUS"].startswith("WARNING: out of file descriptors, new connections dropped")
        samples = until(url, lambda s: get(s, "echod_connections_open", listener="echo") == 0)
        assert (
            get(samples, "echod_connections_refused_total", listener="echo", reason="file_descriptors")
            == dropped
        )
        assert get(samples, "echod_connections_accepted_total", listener="echo") == kept
        assert get(samples, "echod_alerts", kind="file_descriptors") == 1
        assert get(samples, "process_max_fds") == 64
        warnings = [line for line in daemon.output.splitlines() if "out of file descriptors" in line]
        assert len(warnings) == 1, warnings
        assert "echo: out of file descriptors (limit 64): dropping new connections" in warnings[0]
        assert "EMFILE" not in daemon.output
        assert echo(daemon.port("echo"), b"served again") == b"served again"
    finally:
        notify.close()


def test_reload_turns_the_metrics_on_moves_them_and_turns_them_off(run):
    listeners = {"echo": {"protocol": "echo"}}
    daemon = run(config(None, **listeners))
    assert "metrics:" not in daemon.output
    port = daemon.port("echo")
    keep = {"echo": {"protocol": "echo", "port": str(port)}}
    reload(daemon, config("127.0.0.1:0", **keep))
    first = metrics_url(daemon)
    assert echo(port, b"counted") == b"counted"
    until(first, lambda s: get(s, "echod_connections_accepted_total", listener="echo") == 1)

    moved_to = free_port()
    reload(daemon, config(f"127.0.0.1:{moved_to}", **keep))
    assert refused(first)
    second = f"http://127.0.0.1:{moved_to}/metrics"
    samples = until(second, lambda s: get(s, "echod_connections_accepted_total", listener="echo") == 1)
    assert get(samples, "echod_config_last_reload_successful") == 1

    with taken_port() as taken:
        reload(daemon, config(f"127.0.0.1:{taken}", **keep))
        daemon.wait_for(
            rf"reload: metrics: cannot listen on tcp 127\.0\.0\.1:{taken}: .*metrics still served at"
        )
        samples = until(second, lambda s: get(s, "echod_alerts", kind="metrics") == 1)  # still served there
        assert get(samples, "echod_config_last_reload_successful") == 1

    reload(daemon, config(f"127.0.0.1:{moved_to}", **keep))
    until(second, lambda s: get(s, "echod_alerts", kind="metrics") == 0)
    reload(daemon, config(None, **keep))
    assert refused(second)
    assert echo(port, b"still echoing") == b"still echoing"


def test_a_rejected_reload_is_exported_until_a_good_one(run):
    daemon = run(config(echo={"protocol": "echo"}))
    url = metrics_url(daemon)
    text = daemon.config_path.read_text()
    loaded = get(scrape(url), "echod_config_last_reload_success_timestamp_seconds")
    reload(daemon, text + "bogus = 1\n")
    samples = until(url, lambda s: get(s, "echod_config_last_reload_successful") == 0)
    assert get(samples, "echod_config_last_reload_success_timestamp_seconds") == loaded
    assert get(samples, "echod_alerts", kind="reload") == 1
    reload(daemon, text)
    samples = until(url, lambda s: get(s, "echod_config_last_reload_successful") == 1)
    assert get(samples, "echod_config_last_reload_success_timestamp_seconds") > loaded


def test_counters_never_go_back_across_reloads_and_a_removed_listener_goes(run):
    daemon = run(config(a={"protocol": "echo"}, other={"protocol": "echo"}))
    url = metrics_url(daemon)
    metrics = "127.0.0.1:0"  # unchanged: the port it got stays
    a, other = daemon.port("a"), daemon.port("other")
    for _ in range(3):
        assert echo(a, b"abc") == b"abc"
    assert echo(other, b"o") == b"o"
    until(url, lambda s: get(s, "echod_connections_accepted_total", listener="a") == 3)
    # Renamed (same socket), then switched to bytecount: its counts go along.
    reload(
        daemon,
        config(
            metrics, b={"protocol": "echo", "port": str(a)}, other={"protocol": "echo", "port": str(other)}
        ),
    )
    samples = until(url, lambda s: get(s, "echod_connections_accepted_total", listener="b") == 3)
    assert get(samples, "echod_received_bytes_total", listener="b") == 9
    assert get(samples, "echod_connections_accepted_total", listener="a") is None
    reload(
        daemon,
        config(
            metrics,
            b={"protocol": "bytecount", "port": str(a)},
            other={"protocol": "echo", "port": str(other)},
        ),
    )
    assert echo(a, b"2 hi") == b"hi"
    samples = until(url, lambda s: get(s, "echod_connections_accepted_total", listener="b") == 4)
    assert get(samples, "echod_received_bytes_total", listener="b") == 13
    assert listener_info(samples, "b") == [
        {"protocol": "bytecount", "transport": "tcp", "address": "127.0.0.1", "port": str(a)}
    ]
    # Moved to another port: the same.
    reload(
        daemon, config(metrics, b={"protocol": "bytecount"}, other={"protocol": "echo", "port": str(other)})
    )

    def ports_of_b(samples) -> set[str]:
        return {info["port"] for info in listener_info(samples, "b")}

    samples = until(url, lambda s: ports_of_b(s) - {str(a)})
    assert get(samples, "echod_connections_accepted_total", listener="b") == 4
    # Removed: no longer exported; the other listener's counts carry on.
    reload(daemon, config(metrics, other={"protocol": "echo", "port": str(other)}))
    samples = until(url, lambda s: not ports_of_b(s))
    assert not [key for key in samples if dict(key[1]).get("listener") == "b"]
    assert get(samples, "echod_connections_accepted_total", listener="other") == 1


def test_a_metrics_port_in_use_stops_the_start_with_the_fix(tmp_path):
    with taken_port() as taken:
        path = tmp_path / "echod.conf"
        path.write_text(config(f"127.0.0.1:{taken}", echo={"protocol": "echo"}))
        daemon = Daemon(path).start()
        assert daemon.process.wait(30) == 71
        daemon.wait_for_end()
    assert (
        f"metrics: cannot listen on tcp 127.0.0.1:{taken}: the address is already in use by another socket"
        in daemon.output
    )
    assert "or set metrics = (empty) to turn the metrics off" in daemon.output


def test_the_metrics_are_served_while_open_connections_drain_at_stop(run):
    daemon = run(config(echo={"protocol": "echo"}).replace("[echod]\n", "[echod]\nshutdown_grace = 60s\n"))
    url = metrics_url(daemon)
    with connect(daemon.port("echo")) as sock:
        assert exchange([(sock, b"draining")], half_close=False) == [b"draining"]
        daemon.send_signal(signal.SIGTERM)
        daemon.wait_for(r"waiting up to 1m for 1 open connection")
        samples = until(url, lambda s: get(s, "echod_connections_open", listener="echo") == 1)
        assert get(samples, "echod_received_bytes_total", listener="echo") == 8
    assert daemon.process.wait(30) in (0, -signal.SIGTERM)
    daemon.wait_for_end()
    assert refused(url)


def test_proxy_protocol_refusals_and_bad_headers_are_counted(run):
    daemon = run(config(echo={"protocol": "echo", "proxy_protocol": "yes", "trusted_proxies": "127.0.0.2"}))
    url = metrics_url(daemon)
    port = daemon.port("echo")
    with connect(port, source="127.0.0.1") as untrusted:
        try:
            untrusted.sendall(proxy_v1(("198.18.1.10", 40000)) + b"forged")
            assert read_until_closed(untrusted) == b""
        except ConnectionResetError:
            pass  # closed with the forged header unread
    with connect(port, source="127.0.0.2") as bad:
        try:
            bad.sendall(b"hello, no header\r\n")
            assert read_until_closed(bad) == b""
        except ConnectionResetError:
            pass
    for n in range(3):
        with connect(port, source="127.0.0.2") as good:
            assert exchange([(good, proxy_v1(("198.18.1.10", 40000 + n)) + b"believed")]) == [b"believed"]
    samples = until(
        url,
        lambda s: (
            get(s, "echod_connections_accepted_total", listener="echo") == 3
            and total(s, "echod_connections_closed_total", listener="echo") == 4
        ),
    )
    assert get(samples, "echod_connections_refused_total", listener="echo", reason="trusted_proxies") == 1
    assert get(samples, "echod_connections_closed_total", listener="echo", cause="bad-proxy-header") == 1
    assert get(samples, "echod_connections_closed_total", listener="echo", cause="client") == 3
    assert get(samples, "echod_connections_open", listener="echo") == 0
