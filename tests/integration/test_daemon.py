"""
echod as its users meet it: a real process started through twistd, real
sockets, real signals.
"""

import hashlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.integration.clients import connect, echo, exchange, held, pattern, read_until_closed
from tests.integration.daemon import TAC, Daemon, config_text, environment, without_bind_privilege
from tests.integration.systemd import taken_port

MiB = 1 << 20


def assert_start_fails(path, status: int, message: str, command: list[str] | None = None) -> None:
    """echod started with the configuration at C{path} exits with C{status}, having said C{message}."""
    daemon = Daemon(path, command).start()
    try:
        assert daemon.process.wait(60) == status
        daemon.wait_for(message)
    finally:
        daemon.kill()


def assert_clean_exit(code: int, signum: int, output: str) -> None:
    """Exit 0, or death by the same signal (as twistd re-raises it): both success to systemd."""
    assert code in (0, -signum), output
    assert "Traceback" not in output
    bad = [line for line in output.splitlines() if line.split()[2:3] in (["error"], ["critical"])]
    assert not bad, output


@pytest.mark.parametrize("size", [0, 1, MiB, 64 * MiB])
def test_echo_returns_every_byte(start_daemon, size):
    daemon = start_daemon(echo={"protocol": "echo"})
    payload = pattern(size)
    received = echo(daemon.port("echo"), payload)
    assert len(received) == size
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


def test_echo_without_half_close_keeps_the_connection_open(start_daemon):
    daemon = start_daemon(echo={"protocol": "echo"})
    with connect(daemon.port("echo")) as sock:
        for i in range(5):
            assert exchange([(sock, b"round %d" % i)], half_close=False) == [b"round %d" % i]


def test_200_concurrent_connections_each_get_their_own_bytes(start_daemon):
    daemon = start_daemon(echo={"protocol": "echo"})
    payloads = [pattern(10_000 + i, seed=i) for i in range(200)]
    with held([connect(daemon.port("echo")) for _ in range(200)]) as socks:
        assert exchange(list(zip(socks, payloads, strict=True))) == payloads


def test_half_closing_clients_never_lose_their_echo(start_daemon):
    """What `printf hello | nc -N host 7` does, 300 times over."""
    daemon = start_daemon(echo={"protocol": "echo"})
    for i in range(300):
        assert echo(daemon.port("echo"), b"hello %d\n" % i) == b"hello %d\n" % i


def test_echo_over_ipv6_and_dual_stack(start_daemon):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    daemon = start_daemon(echo={"protocol": "echo", "address": "::"})
    assert echo(daemon.port("echo"), b"v6", host="::1") == b"v6"
    assert echo(daemon.port("echo"), b"v4", host="127.0.0.1") == b"v4"


def test_bytecount_echoes_the_payload_and_closes(start_daemon):
    daemon = start_daemon(bc={"protocol": "bytecount"})
    assert echo(daemon.port("bc"), b"5 hello", half_close=False) == b"hello"
    assert echo(daemon.port("bc"), b"5 helloTRAILING") == b"hello"
    assert echo(daemon.port("bc"), b"0 ") == b""
    payload = pattern(3 * MiB)
    assert echo(daemon.port("bc"), b"%d " % len(payload) + payload, half_close=False) == payload


def test_bytecount_header_split_across_packets(start_daemon):
    daemon = start_daemon(bc={"protocol": "bytecount"})
    with connect(daemon.port("bc")) as sock:
        for piece in (b"1", b"2", b" ", b"hello", b" world!"):
            sock.sendall(piece)
        assert read_until_closed(sock) == b"hello world!"


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        (b"-5 hello", "is not a digit"),
        (b" 5 hello", "no digits before the space"),
        (b"5x hello", "is not a digit"),
        (b"1" * 30, "exceeds max_message_size"),
        (b"0" * 30, "no space after 20 header bytes"),
        (b"99999999999 x", "exceeds max_message_size"),
    ],
)
def test_bytecount_bad_header_closes_that_connection_only(start_daemon, request_bytes, reason):
    daemon = start_daemon(bc={"protocol": "bytecount", "max_message_size": "1M"}, echo={"protocol": "echo"})
    with connect(daemon.port("echo")) as bystander:
        assert exchange([(bystander, b"before")], half_close=False) == [b"before"]
        with connect(daemon.port("bc")) as sock:
            local_port = sock.getsockname()[1]
            sock.sendall(request_bytes)
            assert read_until_closed(sock) == b""
        line = daemon.wait_for(rf"bc: bad request from 127\.0\.0\.1:{local_port}, closing: .*").group(0)
        assert reason in line
        assert exchange([(bystander, b"after")], half_close=False) == [b"after"]
    assert echo(daemon.port("bc"), b"2 ok") == b"ok"


def test_idle_connection_is_closed_after_idle_timeout(start_daemon):
    daemon = start_daemon(echo={"protocol": "echo", "idle_timeout": "700ms"})
    with connect(daemon.port("echo")) as sock:
        assert exchange([(sock, b"wake")], half_close=False) == [b"wake"]
        started = time.monotonic()
        assert read_until_closed(sock, timeout=30) == b""
        assert time.monotonic() - started >= 0.6
    assert echo(daemon.port("echo"), b"still serving") == b"still serving"


def test_connection_caps_refuse_the_extra_connection_only(start_daemon):
    daemon = start_daemon(echo={"protocol": "echo", "max_connections": "3", "max_connections_per_peer": "2"})
    port = daemon.port("echo")
    opened: list[socket.socket] = []

    def open_from(source: str) -> socket.socket:
        sock = connect(port, source=source)
        opened.append(sock)
        return sock

    def served(sock: socket.socket) -> bool:
        return exchange([(sock, b"x")], half_close=False) == [b"x"]

    with held(opened):
        assert served(open_from("127.0.0.1"))
        assert served(open_from("127.0.0.1"))
        assert read_until_closed(open_from("127.0.0.1")) == b""  # per-peer cap
        assert served(open_from("127.0.0.2"))  # another peer still gets in
        assert read_until_closed(open_from("127.0.0.3")) == b""  # total cap
        daemon.wait_for(
            r"echo: max_connections_per_peer \(2\) reached, refusing new connections from 127\.0\.0\.1"
        )
        daemon.wait_for(r"echo: max_connections \(3\) reached")
        opened.pop(0).close()
        daemon.wait_for(r"echo: below max_connections again")
        assert served(open_from("127.0.0.3"))


def test_clients_that_never_read_do_not_grow_the_server(start_daemon):
    daemon = start_daemon(echo={"protocol": "echo"})
    port = daemon.port("echo")
    total = 50 * MiB
    socks = [connect(port) for _ in range(20)]
    block = memoryview(pattern(MiB))
    sent = [0] * len(socks)
    baseline = daemon.rss_kib()
    with open(f"/proc/{daemon.process.pid}/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM, so that it measures the peak from here on
    selector = selectors.DefaultSelector()
    for i, sock in enumerate(socks):
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_WRITE, i)
    try:
        # Send until every connection is finished or has stalled for a second: a server
        # without backpressure would read all 1000 MiB and hold it.
        while events := selector.select(timeout=1.0):
            for key, _ in events:
                i = key.data
                offset = sent[i] % MiB
                sent[i] += key.fileobj.send(block[offset : offset + min(MiB - offset, total - sent[i])])
                if sent[i] == total:
                    selector.unregister(key.fileobj)
        growth = daemon.rss_kib("VmHWM") - baseline
        assert sum(sent) < 20 * total, "the server read everything: no backpressure"
        assert growth < 8 * 1024, f"server grew by {growth} KiB while clients sent {sum(sent)} bytes"
        assert echo(port, b"honest client") == b"honest client"
        # The stalled connection is intact: the rest of its 50 MiB goes through, in order.
        socks[0].setblocking(True)
        rest = (pattern(MiB) * 50)[sent[0] :]
        received = exchange([(socks[0], rest)])[0]
        assert hashlib.sha256(received).digest() == hashlib.sha256(pattern(MiB) * 50).digest()
    finally:
        selector.close()
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(start_daemon, signum):
    daemon = start_daemon(echo={"protocol": "echo"}, bc={"protocol": "bytecount"})
    assert echo(daemon.port("echo"), b"x") == b"x"
    assert_clean_exit(daemon.stop(signum), signum, daemon.output)
    assert "Server Shut Down." in daemon.output


def test_reload_and_reopen_signals_while_starting_do_not_kill_it(tmp_path):
    path = tmp_path / "echod.conf"
    path.write_text(config_text({"access_log": str(tmp_path / "access.log")}, echo={"protocol": "echo"}))
    daemon = Daemon(path).start()
    try:
        daemon.wait_for(r"Loading .*echod\.tac")  # twistd is starting: the service is not running yet
        daemon.send_signal(signal.SIGHUP)
        daemon.send_signal(signal.SIGUSR1)
        daemon.wait_ready()
        assert echo(daemon.port("echo"), b"alive") == b"alive"
        assert_clean_exit(daemon.stop(), signal.SIGTERM, daemon.output)
    finally:
        daemon.kill()


def test_a_reload_turning_on_the_access_log_and_debug_applies_to_a_connection_already_open(
    start_daemon, tmp_path
):
    daemon = start_daemon({}, echo={"protocol": "echo"})
    log = tmp_path / "access.log"
    with connect(daemon.port("echo")) as sock:
        assert exchange([(sock, b"before")], half_close=False) == [b"before"]
        client = "{}:{}".format(*sock.getsockname())
        general = {"access_log": str(log), "log_level": "debug"}
        daemon.config_path.write_text(config_text(general, echo={"protocol": "echo"}))
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for(r"reloaded: serving 1 listener")
        assert exchange([(sock, b"after")], half_close=True) == [b"after"]
    daemon.wait_for(rf"echo: closed connection from {re.escape(client)}$")
    assert_clean_exit(daemon.stop(), signal.SIGTERM, daemon.output)
    (line,) = log.read_text().splitlines()  # the one connection, its bytes from before the reload too
    fields = line.split()[1:]
    assert fields[:4] + fields[5:] == ["echo", client, "in=11", "out=11", "closed=client"]


def test_stop_lets_an_open_connection_finish_within_the_grace_period(start_daemon):
    daemon = start_daemon({"shutdown_grace": "30s"}, echo={"protocol": "echo"})
    with connect(daemon.port("echo")) as sock:
        assert exchange([(sock, b"first")], half_close=False) == [b"first"]
        daemon.send_signal(signal.SIGTERM)
        daemon.wait_for(r"waiting up to 30s for 1 open connection")
        with pytest.raises(ConnectionRefusedError):
            connect(daemon.port("echo"))
        assert exchange([(sock, b"in flight")], half_close=True) == [b"in flight"]
    assert_clean_exit(daemon.process.wait(30), signal.SIGTERM, daemon.output)
    daemon.wait_for_end()
    assert "still open after shutdown_grace" not in daemon.output


def test_stop_closes_what_is_still_open_after_the_grace_period(start_daemon):
    daemon = start_daemon({"shutdown_grace": "500ms"}, echo={"protocol": "echo"})
    with connect(daemon.port("echo")) as sock:
        assert exchange([(sock, b"idle now")], half_close=False) == [b"idle now"]
        daemon.send_signal(signal.SIGTERM)
        assert read_until_closed(sock) == b""
    assert daemon.process.wait(30) in (0, -signal.SIGTERM)
    daemon.wait_for(r"closed 1 connection\(s\) still open after shutdown_grace \(500ms\)")


def test_under_the_journal_every_line_carries_its_priority(tmp_path):
    path = tmp_path / "echod.conf"
    path.write_text(config_text(bc={"protocol": "bytecount"}))
    daemon = Daemon(path, journal=True).start()
    try:
        daemon.wait_ready()
        assert echo(daemon.port("bc"), b"x") == b""
        daemon.wait_for(r"^<4>bc: bad request from 127\.0\.0\.1:\d+, closing: byte b'x'")
        assert_clean_exit(daemon.stop(), signal.SIGTERM, daemon.output)
    finally:
        daemon.kill()
    lines = daemon.output.splitlines()
    assert all(re.match(r"<[2-7]>", line) for line in lines), lines
    assert "<6>Server Shut Down." in lines


def test_config_errors_under_the_journal_are_errors(tmp_path):
    path = tmp_path / "bad.conf"
    path.write_text(BAD_CONFIG)
    daemon = Daemon(path, journal=True).start()
    assert daemon.process.wait(60) == 78
    daemon.wait_for_end()
    assert daemon.output == f"<3>echod: configuration error: {path}:4: {BAD_CONFIG_MESSAGE}"


def test_access_log_rotation_under_load_loses_and_repeats_no_line(start_daemon, tmp_path):
    log = tmp_path / "access.log"
    daemon = start_daemon({"access_log": str(log)}, echo={"protocol": "echo"}, bc={"protocol": "bytecount"})
    ports = set()
    for round_ in range(3):
        for i in range(100):
            with connect(daemon.port("echo")) as sock:
                ports.add(sock.getsockname()[1])
                assert exchange([(sock, b"%d" % i)]) == [b"%d" % i]
            if i == 50:
                os.rename(log, tmp_path / f"access.log.{round_ + 1}")
                daemon.send_signal(signal.SIGUSR1)
    with connect(daemon.port("bc")) as sock:
        sock.sendall(b"-1 ")
        read_until_closed(sock)
    assert_clean_exit(daemon.stop(), signal.SIGTERM, daemon.output)
    lines = []
    for path in sorted(tmp_path.glob("access.log*")):
        lines += path.read_text().splitlines()
    echo_ports = [int(line.split()[2].rsplit(":", 1)[1]) for line in lines if line.split()[1] == "echo"]
    assert sorted(echo_ports) == sorted(ports)  # every connection once: none lost, none repeated
    assert all(
        re.fullmatch(r"\S+Z echo 127\.0\.0\.1:\d+ in=\d+ out=\d+ duration=\S+s closed=client", line)
        for line in lines
        if " echo " in line
    ), lines[:3]
    assert [line.split()[-1] for line in lines if " bc " in line] == ["closed=bad-request"]


def test_unwritable_access_log_stops_the_start_with_the_fix(tmp_path):
    path = tmp_path / "echod.conf"
    path.write_text(
        config_text({"access_log": str(tmp_path / "nowhere" / "access.log")}, echo={"protocol": "echo"})
    )
    assert_start_fails(
        path,
        73,
        r"cannot open access_log .*/nowhere/access.log: No such file or directory; create its directory",
    )


def test_reuse_port_lets_instances_share_a_port_and_both_serve(tmp_path):
    from tests.integration.systemd import free_port

    port = free_port()
    daemons = []
    try:
        for i in range(2):
            path = tmp_path / f"echod-{i}.conf"
            path.write_text(
                config_text(
                    {"access_log": str(tmp_path / f"access-{i}.log")},
                    echo={"protocol": "echo", "port": str(port), "reuse_port": "yes"},
                )
            )
            daemons.append(Daemon(path).start().wait_ready())
        for i in range(64):
            assert echo(port, b"%d" % i) == b"%d" % i
        for daemon in daemons:
            assert_clean_exit(daemon.stop(), signal.SIGTERM, daemon.output)
        served = [len((tmp_path / f"access-{i}.log").read_text().splitlines()) for i in range(2)]
        assert sum(served) == 64
        assert min(served) > 0, served  # the kernel spread the connections over both
    finally:
        for daemon in daemons:
            daemon.kill()


def test_tac_runs_under_plain_twistd(tmp_path):
    """The tutorial's own command: ECHOD_CONFIG=FILE twistd -ny echod/echod.tac."""
    path = tmp_path / "echod.conf"
    path.write_text(config_text(echo={"protocol": "echo"}))
    twistd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    daemon = Daemon(path, [*twistd, "-ny", str(TAC), "--pidfile="], env=environment(ECHOD_CONFIG=str(path)))
    try:
        daemon.start().wait_ready()
        assert echo(daemon.port("echo"), b"tac") == b"tac"
        assert_clean_exit(daemon.stop(), signal.SIGTERM, daemon.output)
    finally:
        daemon.kill()


BAD_CONFIG = "[listener:echo]\nprotocol = echo\nport = 7\nmax_conections = 5\n"
BAD_CONFIG_MESSAGE = (
    "[listener:echo] max_conections: unknown key 'max_conections'; did you mean 'max_connections'?"
)


@pytest.mark.parametrize("face", ["echod run", "twistd -ny echod.tac"])
def test_bad_config_exits_78_with_the_message(tmp_path, face):
    path = tmp_path / "bad.conf"
    path.write_text(BAD_CONFIG)
    if face == "echod run":
        command, env = [sys.executable, "-m", "echod", "run", "-c", str(path)], environment()
    else:
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-ny", str(TAC)]
        env = environment(ECHOD_CONFIG=str(path))
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 78, result
    assert f"echod: configuration error: {path}:4: {BAD_CONFIG_MESSAGE}" in result.stderr.splitlines()


def test_port_in_use_is_explained(tmp_path):
    with taken_port() as port:
        path = tmp_path / "echod.conf"
        path.write_text(config_text(echo={"protocol": "echo", "port": str(port)}))
        assert_start_fails(
            path,
            71,
            rf"cannot listen on tcp 127\.0\.0\.1:{port}: the address is already in use by another socket",
        )


def test_privileged_port_without_privilege_says_what_to_do(tmp_path):
    path = tmp_path / "echod.conf"
    path.write_text(config_text(echo={"protocol": "echo", "port": "7"}))
    command = without_bind_privilege([sys.executable, "-m", "echod", "run", "-c", str(path)])
    assert_start_fails(
        path,
        77,
        r"cannot listen on tcp 127\.0\.0\.1:7: port 7 is privileged .* socket activation",
        command=command,
    )


def test_per_peer_cap_counts_a_prefix_as_one_peer_and_logs_full_addresses(start_daemon, tmp_path):
    log = tmp_path / "access.log"
    daemon = start_daemon(
        {"access_log": str(log)},
        echo={"protocol": "echo", "max_connections_per_peer": "2", "peer_prefix_ipv4": "24"},
    )
    port = daemon.port("echo")
    with held([connect(port, source="127.0.0.2"), connect(port, source="127.0.0.3")]) as two:
        assert exchange([(sock, b"in") for sock in two], half_close=False) == [b"in", b"in"]
        with connect(port, source="127.0.0.4") as third:  # a third host of the same /24
            assert read_until_closed(third) == b""
        daemon.wait_for(
            r"echo: max_connections_per_peer \(2\) reached, refusing new connections from 127\.0\.0\.0/24$"
        )
        with connect(port, source="127.0.1.1") as elsewhere:  # another /24 is another peer
            assert exchange([(elsewhere, b"elsewhere")]) == [b"elsewhere"]
    assert_clean_exit(daemon.stop(), signal.SIGTERM, daemon.output)
    lines = log.read_text().splitlines()
    peers = sorted((line.split()[2].rsplit(":", 1)[0], line.split()[-1]) for line in lines)
    assert peers == [
        ("127.0.0.2", "closed=client"),
        ("127.0.0.3", "closed=client"),
        ("127.0.0.4", "closed=refused-max_connections_per_peer"),
        ("127.0.1.1", "closed=client"),
    ]


def test_a_reload_asked_for_while_starting_is_carried_out_once_running(tmp_path):
    # The configuration is a FIFO: echod blocks reading it until the test writes, so
    # the SIGHUP certainly comes after the file was opened (after echod deferred the
    # signal) and before the service could handle it itself.
    path = tmp_path / "echod.conf"
    os.mkfifo(path)
    first = config_text(echo={"protocol": "echo"})
    daemon = Daemon(path).start()
    try:
        with open(path, "w") as fifo:  # returns once echod has opened it for reading
            daemon.send_signal(signal.SIGHUP)
            fifo.write(first)
        daemon.wait_ready()
        daemon.wait_for(r"reloading .*echod\.conf")  # the SIGHUP, carried out now
        with open(path, "w") as fifo:
            fifo.write(first + "[listener:bc]\nprotocol = bytecount\naddress = 127.0.0.1\nport = 0\n")
        daemon.wait_for(r"reloaded: serving 2 listener\(s\)")
        assert echo(daemon.port("bc"), b"2 ok") == b"ok"
        assert_clean_exit(daemon.stop(), signal.SIGTERM, daemon.output)
    finally:
        daemon.kill()
