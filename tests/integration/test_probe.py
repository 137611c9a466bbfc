"""
`echod probe` as a real process against real servers over real sockets: echod
itself (every mode), socat, openbsd-inetd's builtin echo, a deliberately faulty
echo server (faulty_echo.py), and real loss made by nftables between two
network namespaces.
"""

from __future__ import annotations

import json
import math
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.daemon import Daemon, config_text, environment
from tests.integration.systemd import free_port
from tests.probe.test_output import STATUS_CODES, parse_plugin_output

PROBE = [sys.executable, "-m", "echod", "probe"]
#: What the servers of these tests answer within, on a machine however loaded: a probe
#: timeout well above it keeps loss out of the tests that expect none.
TIMEOUT = "5"


def probe(*args: str, prefix: tuple[str, ...] = (), timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `echod probe ARGS` (inside a namespace with PREFIX) to its end."""
    return subprocess.run(
        [*prefix, *PROBE, *args], capture_output=True, text=True, env=environment(), timeout=timeout
    )


def probe_json(*args: str, **kwargs) -> tuple[int, dict]:
    """`echod probe --json ARGS`: its exit status and its report, which must agree."""
    done = probe("--json", *args, **kwargs)
    assert done.stdout.count("\n") == 1, f"one JSON line expected:\n{done.stdout}\n{done.stderr}"
    report = json.loads(done.stdout)
    assert report["status"] == done.returncode, report
    return done.returncode, report


def counts(report: dict) -> dict[str, int]:
    keys = (
        "sent",
        "received",
        "lost",
        "late",
        "corrupted",
        "failed",
        "duplicates",
        "reordered",
        "unexpected",
        "unexpected_bytes",
    )
    return {key: report[key] for key in keys if report[key] or key in ("sent", "received")}


def assert_all_answered(report: dict, sent: int) -> None:
    assert counts(report) == {"sent": sent, "received": sent}, report
    rtt = report["rtt_ms"]
    assert 0 < rtt["min"] <= rtt["p50"] <= rtt["p90"] <= rtt["p99"] <= rtt["max"]
    assert rtt["min"] <= rtt["avg"] <= rtt["max"] and rtt["mdev"] >= 0


def udp_listener(name: str, address: str, port: str) -> str:
    """A UDP echo listener whose rate limits leave a probe at 1,000 datagrams a second alone."""
    keys = {"protocol": "echo", "transport": "udp", "address": address, "port": port}
    keys.update(datagram_rate_per_peer="100000", datagram_rate="100000", byte_rate="1G")
    return f"[listener:{name}]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items())


# -- against echod --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def echod(tmp_path_factory):
    """One echod for the module: echo over TCP (IPv4 and IPv6) and UDP, and bytecount."""
    path = tmp_path_factory.mktemp("echod") / "echod.conf"
    tcp = config_text(
        echo={"protocol": "echo"},
        echo6={"protocol": "echo", "address": "::1"},
        bytecount={"protocol": "bytecount"},
    )
    path.write_text(tcp + udp_listener("udp", "127.0.0.1", "0"))
    daemon = Daemon(path).start().wait_ready()
    daemon.udp_port = int(daemon.wait_for(r"udp: echo/udp listening on \S+:(\d+)").group(1))
    yield daemon
    daemon.kill()


@pytest.mark.parametrize(
    ("mode", "listener"),
    [("--tcp", "echo"), ("--connect", "echo"), ("--udp", "udp"), ("--bytecount", "bytecount")],
)
def test_every_mode_gets_every_probe_answered_intact_by_echod(echod, mode, listener):
    port = echod.udp_port if listener == "udp" else echod.port(listener)
    status, report = probe_json(mode, "-c", "20", "-i", "0.01", "-W", TIMEOUT, f"127.0.0.1:{port}")
    assert status == 0
    assert_all_answered(report, 20)
    assert report["mode"] == mode[2:] and report["address"] == "127.0.0.1"
    if mode in ("--connect", "--bytecount"):
        assert report["connect_ms"]["min"] > 0
    else:
        assert "connect_ms" not in report


def test_probes_at_one_millisecond_are_all_answered(echod):
    for mode, port in (("--tcp", echod.port("echo")), ("--udp", echod.udp_port)):
        status, report = probe_json(mode, "-c", "300", "-i", "1ms", "-W", TIMEOUT, f"127.0.0.1:{port}")
        assert status == 0, report
        assert_all_answered(report, 300)


def test_the_largest_payloads_come_back_whole(echod):
    status, report = probe_json(
        "-s", "16M", "-c", "2", "-i", "0.1", "-W", "60", f"127.0.0.1:{echod.port('echo')}"
    )
    assert status == 0 and report["size"] == 16 << 20
    assert_all_answered(report, 2)
    status, report = probe_json(
        "--udp", "-s", "65507", "-c", "3", "-W", TIMEOUT, f"127.0.0.1:{echod.udp_port}"
    )
    assert status == 0
    assert_all_answered(report, 3)


def test_ipv6_addresses_in_brackets_and_names_are_probed(echod):
    status, report = probe_json("-c", "3", "-i", "0.01", f"[::1]:{echod.port('echo6')}")
    assert (status, report["address"], report["received"]) == (0, "::1", 3)
    status, report = probe_json("-4", "-c", "3", "-i", "0.01", f"localhost:{echod.port('echo')}")
    assert (status, report["address"], report["received"]) == (0, "127.0.0.1", 3)


def test_lines_and_summary_read_like_pings(echod):
    port = echod.port("echo")
    done = probe("-c", "3", "-i", "0.05", "-W", TIMEOUT, f"127.0.0.1:{port}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"ECHO 127.0.0.1 port {port} over tcp: 64 bytes a probe, every 0.05 s")
    for seq, line in enumerate(lines[1:4], 1):
        assert re.fullmatch(rf"64 bytes from 127\.0\.0\.1 port {port}: seq={seq} time=[\d.]+ ms", line), line
    assert lines[4] == ""
    assert lines[5] == f"--- 127.0.0.1:{port} echo statistics ---"
    assert lines[6].startswith("3 probes sent, 3 answered intact in time, 0% loss, time ")
    assert lines[7] == "0 lost, 0 late, 0 corrupted, 0 failed, 0 duplicates, 0 out of order"
    assert re.fullmatch(r"rtt min/avg/max/mdev = [\d.]+/[\d.]+/[\d.]+/[\d.]+ ms", lines[8])
    assert re.fullmatch(r"rtt p50/p90/p99 = [\d.]+/[\d.]+/[\d.]+ ms", lines[9])
    assert done.stderr == ""


def test_quiet_prints_only_the_first_line_and_the_summary(echod):
    done = probe("-q", "-c", "3", "-i", "0.01", f"127.0.0.1:{echod.port('echo')}")
    assert done.returncode == 0 and "seq=" not in done.stdout
    assert "3 probes sent, 3 answered intact in time" in done.stdout


def test_ctrl_c_prints_the_summary_and_exits_with_the_status_so_far(echod):
    running = Daemon(None, command=[*PROBE, "-i", "0.02", f"127.0.0.1:{echod.port('echo')}"]).start()
    try:
        running.wait_for(r"seq=3 time=")
        status = running.stop(signal.SIGINT)
    finally:
        running.kill()
    assert status == 0, running.output
    answered = len(re.findall(r"^64 bytes from .* seq=\d+ time=", running.output, re.MULTILINE))
    summary = re.search(r"^(\d+) probes sent, (\d+) answered intact in time", running.output, re.MULTILINE)
    assert summary, running.output
    assert int(summary[2]) == answered >= 3
    assert int(summary[1]) in (answered, answered + 1)  # one may have been in flight


def test_the_deadline_ends_an_endless_run(echod):
    status, report = probe_json("-i", "0.05", "-w", "0.5", f"127.0.0.1:{echod.port('echo')}")
    assert status == 0
    assert report["sent"] >= 1 and report["received"] + report["in_flight"] == report["sent"]


def test_monitoring_check_against_echod_is_ok_or_crosses_its_thresholds(echod):
    target = f"127.0.0.1:{echod.port('echo')}"
    for thresholds, expected in (
        (["--warning", "5000,20%", "--critical", "10000,60%"], "OK"),
        (["--warning", "0,20%", "--critical", "10000,60%"], "WARNING"),  # any round trip is above 0 ms
        (["--warning", "0,20%", "--critical", "0,60%"], "CRITICAL"),
    ):
        done = probe(*thresholds, "-i", "0.01", target)
        parsed = parse_plugin_output(done.stdout)
        assert parsed["status"] == expected, done.stdout
        assert done.returncode == {"OK": 0, "WARNING": 1, "CRITICAL": 2}[expected]
        assert parsed["perfdata"]["loss"]["value"] == "0"
        assert float(parsed["perfdata"]["rtt"]["value"]) > 0
        assert "5 of 5 answered intact in time" in parsed["text"]


def raw_connect_times(port: int, count: int) -> list[float]:
    """
    A second implementation of --connect's connect time: a plain non-blocking
    connect() until epoll reports the socket writable, then the same echo of
    64 bytes, one connection every 10 ms.
    """
    times = []
    with select.epoll() as poller:
        for _ in range(count):
            with socket.socket() as sock:
                sock.setblocking(False)
                began = time.monotonic()
                sock.connect_ex(("127.0.0.1", port))
                poller.register(sock, select.EPOLLOUT)
                assert poller.poll(5), "no connection within 5 s"
                times.append(time.monotonic() - began)
                poller.modify(sock, select.EPOLLIN)
                sock.send(b"x" * 64)
                sock.shutdown(socket.SHUT_WR)
                while poller.poll(5) and sock.recv(65536):
                    pass
                poller.unregister(sock)
            time.sleep(0.01)  # the probe's interval, not a wait for anything
    return times


def test_connect_times_are_of_the_order_of_a_plain_connect(echod):
    port = echod.port("echo")
    status, report = probe_json("--connect", "-c", "60", "-i", "10ms", "-W", TIMEOUT, f"127.0.0.1:{port}")
    assert status == 0, report
    probe_ms = report["connect_ms"]["p50"]
    plain_ms = statistics.median(raw_connect_times(port, 60)) * 1000
    # Generous: the same handshake to the same server, timed by Python either way; Twisted's
    # set-up before the connect() (a turn of the loop) once made it 2 to 4 times as long.
    assert plain_ms / 3 < probe_ms < 3 * plain_ms + 0.2, (probe_ms, plain_ms)


CHECK_PING = Path("/usr/lib/nagios/plugins/check_ping")


@pytest.mark.parametrize(
    ("warning", "critical"),
    [
        ("5000,0%", "10000,100%"),  # no loss, at a warning of 0%: WARNING
        ("5000,0%", "10000,0%"),  # and CRITICAL at a critical of 0%
        ("500,60%", "500,60%"),  # warning and critical equal: OK
        ("600,20%", "500,60%"),  # the warning's round trip above the critical's: refused, UNKNOWN
        ("100,70%", "500,60%"),  # the warning's loss above the critical's: refused, UNKNOWN
    ],
)
def test_thresholds_mean_to_the_check_what_they_mean_to_check_ping(echod, warning, critical):
    if not CHECK_PING.exists():
        pytest.skip("monitoring-plugins-basic is not installed (make system-packages installs it)")

    def check_ping(warning: str, critical: str) -> subprocess.CompletedProcess:
        command = [str(CHECK_PING), "-H", "127.0.0.1", "-p", "1", "-t", "10", "-w", warning, "-c", critical]
        return subprocess.run(command, capture_output=True, text=True, timeout=30)

    works = check_ping("5000,80%", "10000,90%")
    if works.returncode != 0:
        pytest.skip(f"check_ping cannot ping 127.0.0.1 here: {works.stdout.strip()}")
    pinged = check_ping(warning, critical)
    done = probe("--warning", warning, "--critical", critical, "-c", "1", f"127.0.0.1:{echod.port('echo')}")
    assert done.returncode == pinged.returncode, (pinged.stdout, done.stdout)
    parsed = parse_plugin_output(done.stdout)
    assert STATUS_CODES[parsed["status"]] == done.returncode


# -- errors ---------------------------------------------------------------------------------------


def test_a_refused_connection_is_an_error_and_critical_to_a_monitoring_check():
    port = free_port()
    done = probe("-c", "3", f"127.0.0.1:{port}")
    assert (done.returncode, done.stderr) == (2, f"echod probe: connection refused by 127.0.0.1:{port}\n")
    done = probe("--connect", "-c", "2", "-i", "0.01", f"127.0.0.1:{port}")
    assert done.returncode == 2 and done.stdout.count("connection refused") == 2
    assert done.stderr == f"echod probe: connection refused by 127.0.0.1:{port}\n"
    done = probe("--critical", "100,50%", f"127.0.0.1:{port}")
    parsed = parse_plugin_output(done.stdout)
    assert (done.returncode, parsed["status"], parsed["perfdata"]["rtt"]["value"]) == (2, "CRITICAL", "U")
    assert "connection refused" in parsed["text"]


def test_a_closed_udp_port_is_told_by_its_port_unreachable():
    status, report = probe_json("--udp", "-c", "3", "-i", "0.05", f"127.0.0.1:{free_port()}")
    assert status == 2
    assert counts(report) == {"sent": 3, "received": 0, "failed": 3}, report


def test_a_name_that_does_not_resolve_is_an_error_said_in_one_line():
    done = probe("-c", "1", "no-such-host.invalid")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("echod probe: cannot resolve no-such-host.invalid: ")
    status, report = probe_json("-c", "1", "no-such-host.invalid")
    assert status == 2 and report["error"].startswith("cannot resolve") and report["sent"] == 0


# -- against a deliberately faulty server ---------------------------------------------------------


@pytest.fixture
def faulty():
    started: list[Daemon] = []

    def start(*fault: str) -> str:
        server = Daemon(None, command=[sys.executable, "-m", "tests.integration.faulty_echo", *fault]).start()
        started.append(server)
        port = server.wait_for(r"listening on 127\.0\.0\.1:(\d+)").group(1)
        return f"127.0.0.1:{port}"

    start.servers = started
    yield start
    for server in started:
        server.kill()


def test_a_flipped_byte_over_tcp_is_one_corrupted_probe_and_status_3(faulty):
    target = faulty("tcp", "flip", "100")  # probe 2's byte 36
    status, report = probe_json("-c", "3", "-i", "0.05", "-W", TIMEOUT, target)
    assert status == 3
    assert counts(report) == {"sent": 3, "received": 2, "corrupted": 1}
    done = probe("-c", "3", "-i", "0.05", "-W", TIMEOUT, target)
    assert re.search(
        r"seq=2 time=[\d.]+ ms CORRUPTED: 1 of 64 bytes differ, the first at offset 36 ", done.stdout
    )


def test_a_flipped_byte_in_a_datagram_is_one_corrupted_probe_and_status_3(faulty):
    target = faulty("udp", "flip", "2", "30")
    status, report = probe_json("--udp", "-c", "3", "-i", "0.05", "-W", TIMEOUT, target)
    assert status == 3
    assert counts(report) == {"sent": 3, "received": 2, "corrupted": 1}


def test_junk_on_the_stream_is_counted_in_bytes_and_told_once_and_the_probes_stay_truthful(faulty):
    # 1 MiB of junk (16 reads at least) in place of probe 1's echo: probe 1 is corrupted by its
    # first 64 bytes, the rest matches no probe; probes 2 and 3, sent a second apart (loopback
    # carries the junk in milliseconds), come back intact.
    target = faulty("tcp", "junk", "64", str(1 << 20))
    done = probe("-c", "3", "-i", "1", "-W", TIMEOUT, target)
    junk = int(faulty.servers[-1].wait_for(r"sent (\d+) bytes of junk").group(1))
    assert done.returncode == 3, done.stdout
    lines = done.stdout.splitlines()
    told = [line for line in lines if "match no probe sent" in line]
    assert 1 <= len(told) <= 2, told  # once, and again at most once a second
    assert "3 probes sent, 2 answered intact in time, 33.3% loss" in done.stdout
    summary = "0 lost, 0 late, 1 corrupted, 0 failed, 0 duplicates, 0 out of order"
    assert f"{summary}, {junk - 64} bytes matching no probe" in lines
    assert len(lines) <= 12, done.stdout


def test_every_fifth_datagram_dropped_is_exactly_a_fifth_lost_and_status_1(faulty):
    target = faulty("udp", "drop", "5")
    status, report = probe_json("--udp", "-c", "20", "-i", "0.01", "-W", "1", target)
    assert status == 1
    assert counts(report) == {"sent": 20, "received": 16, "lost": 4}
    assert report["loss_percent"] == 20.0


def test_exactly_the_warning_loss_is_a_warning(faulty):
    target = faulty("udp", "drop", "5")  # 2 of 10: exactly the 20% of the threshold
    done = probe(
        "--udp", "--warning", "5000,20%", "--critical", "10000,60%", "-c", "10", "-i", "0.01", target
    )
    parsed = parse_plugin_output(done.stdout)
    assert (done.returncode, parsed["status"], parsed["perfdata"]["loss"]["value"]) == (1, "WARNING", "20")
    assert "loss 20% >= 20%" in parsed["text"]


def test_a_late_echo_over_tcp_is_late_not_lost_nor_corrupted_and_status_1(faulty):
    # Probe 3's bytes start at 128; they and whatever follows are held 0.45 s, the timeout is 0.3 s.
    target = faulty("tcp", "late", "128", "0.45")
    done = probe("-c", "4", "-i", "0.6", "-W", "0.3", target)
    assert done.returncode == 1, done.stdout
    assert re.search(r"^no answer yet for seq=3 .* within 0\.3 s$", done.stdout, re.MULTILINE)
    assert re.search(r"seq=3 time=\d+ ms \(LATE: after the 0\.3 s timeout\)", done.stdout)
    assert "4 probes sent, 3 answered intact in time, 25% loss" in done.stdout
    assert "0 lost, 1 late, 0 corrupted, 0 failed" in done.stdout


def test_a_late_datagram_is_late_and_status_1(faulty):
    target = faulty("udp", "late", "2", "0.5")
    status, report = probe_json("--udp", "-c", "6", "-i", "0.3", "-W", "0.3", target)
    assert status == 1
    assert counts(report) == {"sent": 6, "received": 5, "late": 1}


def test_a_server_closing_the_connection_early_is_an_error_and_status_2(faulty):
    target = faulty("tcp", "close", "100")  # mid probe 2
    done = probe("-c", "5", "-i", "0.2", "-W", TIMEOUT, target)
    assert done.returncode == 2
    assert (
        done.stderr == "echod probe: the server closed the connection with 36 of 64 bytes of seq=2 echoed\n"
    )
    assert "2 probes sent, 1 answered intact in time, 50% loss" in done.stdout
    assert "0 lost, 0 late, 0 corrupted, 1 failed" in done.stdout


def test_a_server_cutting_every_connection_short_fails_every_probe(faulty):
    target = faulty("tcp", "close", "20")
    status, report = probe_json("--connect", "-c", "3", "-i", "0.05", "-W", TIMEOUT, target)
    assert status == 2
    assert counts(report) == {"sent": 3, "received": 0, "failed": 3}
    done = probe("--connect", "-c", "1", "-W", TIMEOUT, target)
    assert "seq=1 " in done.stdout and "after 20 of 64 bytes" in done.stdout


def test_a_duplicated_datagram_is_counted_and_changes_nothing_else(faulty):
    target = faulty("udp", "duplicate", "3")
    done = probe("--udp", "-c", "6", "-i", "0.05", "-W", TIMEOUT, target)
    assert done.returncode == 0
    assert re.search(r"seq=3 time=[\d.]+ ms \(DUP!\)", done.stdout)
    assert "6 probes sent, 6 answered intact in time, 0% loss" in done.stdout
    assert "0 lost, 0 late, 0 corrupted, 0 failed, 1 duplicates, 0 out of order" in done.stdout


def test_datagrams_answered_out_of_order_are_counted_as_such(faulty):
    target = faulty("udp", "swap", "3")
    status, report = probe_json("--udp", "-c", "6", "-i", "0.05", "-W", TIMEOUT, target)
    assert status == 0
    assert counts(report) == {"sent": 6, "received": 6, "reordered": 1}


def test_a_server_that_reads_and_never_echoes_does_not_make_the_probe_grow_with_its_lost_probes(faulty):
    target = faulty("tcp", "discard")
    running = Daemon(None, command=[*PROBE, "-i", "1ms", "-W", "0.1", "-s", "1000", target]).start()
    try:
        running.wait_for(r"^no answer yet for seq=1000 ", timeout=60)
        before = running.rss_kib()
        running.wait_for(r"^no answer yet for seq=4000 ", timeout=60)
        grown = running.rss_kib() - before
        assert running.stop(signal.SIGINT) == 1
    finally:
        running.kill()
    # 3,000 more probes lost: had each kept its payload (1,000 bytes) and record, 3.9 MB more;
    # a lost probe keeps its send time only.
    assert grown < 1024, f"{grown} KiB more after 3,000 more lost probes"
    assert re.search(r"^\d+ lost, 0 late, 0 corrupted, 0 failed", running.output, re.MULTILINE)


@pytest.mark.parametrize(
    ("fault", "interval", "why"),
    [
        # A second for the server to read each 16 MiB, and for each probe to be made and time out
        # before the next is due, however loaded the machine (at -i 0.2 a probe made slowly was
        # still awaited when the fifth gave the run up: failed, not lost).
        ("discard", "1", "the server reads them but does not echo"),
        ("deaf", "1", "the server is not reading them, or not as fast as they are sent"),
    ],
)
def test_a_server_that_does_not_echo_is_given_up_on_saying_whether_it_reads(faulty, fault, interval, why):
    target = faulty("tcp", fault)
    done = probe("-s", "16M", "-i", interval, "-W", "0.1", "-q", target)
    assert done.returncode == 2, done.stdout + done.stderr
    assert (
        done.stderr == f"echod probe: 4 probes (67108864 bytes) sent without their echo: {why}; giving up\n"
    )
    # The fifth, refused, fails with the run.
    assert "5 probes sent, 0 answered intact in time, 100% loss" in done.stdout
    assert "4 lost, 0 late, 0 corrupted, 1 failed" in done.stdout


# -- other servers: socat, openbsd-inetd ----------------------------------------------------------


def wait_until_bound(port: int, kind: int, deadline: float = 30) -> None:
    """Until something holds C{port} (our own bind fails), or fail."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.01)  # polling for the server's bind, with the deadline above
    raise AssertionError(f"nothing bound port {port} within {deadline}s")


@pytest.fixture
def socat():
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed (make system-packages installs it)")
    processes: list[subprocess.Popen] = []

    def start(address: str, kind: int) -> int:
        port = free_port()
        processes.append(
            subprocess.Popen(["socat", f"{address}:{port},bind=127.0.0.1,reuseaddr,fork", "PIPE"])
        )
        wait_until_bound(port, kind)
        return port

    yield start
    for process in processes:
        process.kill()
        process.wait()


def test_socat_as_a_tcp_echo_answers_every_probe_of_every_tcp_mode(socat):
    port = socat("TCP-LISTEN", socket.SOCK_STREAM)
    for mode in ("--tcp", "--connect"):
        status, report = probe_json(mode, "-c", "10", "-i", "0.02", "-W", TIMEOUT, f"127.0.0.1:{port}")
        assert status == 0, report
        assert_all_answered(report, 10)


def test_socat_as_a_udp_echo_answers_every_datagram(socat):
    port = socat("UDP-RECVFROM", socket.SOCK_DGRAM)
    status, report = probe_json("--udp", "-c", "10", "-i", "0.05", "-W", TIMEOUT, f"127.0.0.1:{port}")
    assert status == 0, report
    assert_all_answered(report, 10)


def test_openbsd_inetd_builtin_echo_answers_tcp_and_udp_and_cuts_datagrams_at_4096_bytes(network, tmp_path):
    inetd = shutil.which("inetd") or "/usr/sbin/inetd"
    if not Path(inetd).exists():
        pytest.skip("openbsd-inetd is not installed (make system-packages installs it)")
    host = network.host("inetd", 1)
    config = tmp_path / "inetd.conf"
    config.write_text("echo stream tcp nowait nobody internal\necho dgram udp wait nobody internal\n")
    # Its own namespace, so port 7 is free whatever the machine runs; -R: no rate limit to trip.
    host.popen(
        [inetd, "-d", "-R", "1000000", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    end = time.monotonic() + 30
    while True:
        try:
            host.connect(host.ipv4, 7, timeout=1).close()
            break
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.01)  # polling for inetd's listening socket, with the deadline above
    inside = tuple(host.command([]))
    for mode in ("--tcp", "--connect", "--udp"):
        # Over eth0, not loopback: inetd answers no datagram from 127.0.0.0/8.
        status, report = probe_json(mode, "-c", "10", "-i", "0.02", "-W", TIMEOUT, host.ipv4, prefix=inside)
        assert status == 0, report
        assert_all_answered(report, 10)
    status, report = probe_json("--udp", "-s", "8192", "-c", "2", "-i", "0.05", host.ipv4, prefix=inside)
    assert status == 3
    assert counts(report) == {"sent": 2, "received": 0, "corrupted": 2}
    done = probe("--udp", "-s", "8192", "-c", "1", host.ipv4, prefix=inside)
    assert "CORRUPTED: 4096 bytes short" in done.stdout


# -- real loss --------------------------------------------------------------------------------------


def test_udp_loss_made_by_nftables_is_reported_within_binomial_bounds_and_exactly(network, tmp_path):
    if shutil.which("nft") is None:
        pytest.skip("nftables is not installed (make system-packages installs it)")
    client, server = network.host("client", 1), network.host("server", 2)
    path = tmp_path / "echod.conf"
    path.write_text(udp_listener("udp", server.ipv4, "7"))
    daemon = Daemon(path, command=server.command([sys.executable, "-m", "echod", "run", "-c", str(path)]))
    try:
        daemon.start().wait_ready()
        # A fifth of the datagrams to the echo port, at random, dropped as they come in.
        rules = (
            "table inet loss {\n  chain input {\n    type filter hook input priority 0;\n"
            "    udp dport 7 numgen random mod 5 0 counter drop\n  }\n}\n"
        )
        server.run(["nft", "-f", "-"], input=rules, text=True, check=True)
        n = 500
        status, report = probe_json(
            "--udp", "-c", str(n), "-i", "0.002", "-W", "1", server.ipv4, prefix=tuple(client.command([]))
        )
        ruleset = server.run(["nft", "list", "table", "inet", "loss"], capture_output=True, text=True).stdout
    finally:
        daemon.kill()
    dropped = int(re.search(r"counter packets (\d+)", ruleset).group(1))
    assert report["sent"] == n and report["late"] == report["corrupted"] == report["failed"] == 0, report
    # Each datagram the firewall dropped is one probe lost, and no other was.
    assert report["lost"] == dropped
    assert report["received"] == n - dropped
    # 20% of 500 is 100, binomial sigma sqrt(500 * 0.2 * 0.8) = 8.9: within 5 sigma, 55 to 145.
    sigma = math.sqrt(n * 0.2 * 0.8)
    assert abs(report["lost"] - n * 0.2) <= 5 * sigma, report
    assert status == 1
