"""
echod under systemd's protocols, without a booted systemd: sockets passed by
systemd-socket-activate, sd_notify messages caught on a test NOTIFY_SOCKET.
"""

import itertools
import os
import resource
import select
import signal
import socket
import statistics
import sys
import threading
import time

import pytest

from tests.integration.clients import connect, echo, exchange, held, pattern, read_until_closed
from tests.integration.daemon import Daemon, config_text, environment, without_bind_privilege
from tests.integration.systemd import NotifySocket, free_port, socket_activate

PASS_ENV = ("PYTHONPATH", "PYTHONUNBUFFERED", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


@pytest.fixture
def notify(tmp_path):
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


@pytest.fixture
def run(tmp_path, notify):
    """Start echod with a config and extra environment; optionally under systemd-socket-activate."""
    daemons: list[Daemon] = []

    def start(
        text: str, activate: list[str] | None = None, names=None, wait=True, unprivileged=False, **env: str
    ) -> Daemon:
        path = tmp_path / f"echod-{len(daemons)}.conf"
        path.write_text(text)
        command = [sys.executable, "-m", "echod", "run", "-c", str(path)]
        if activate is not None:
            command = socket_activate(activate, names, PASS_ENV + tuple(env)) + command
        if unprivileged:
            command = without_bind_privilege(command)
        daemon = Daemon(path, command, environment(NOTIFY_SOCKET=notify.path, **env))
        daemons.append(daemon)
        daemon.start()
        if activate is not None:
            # systemd-socket-activate starts the service on the first connection.
            daemon.wait_for(r"Listening on .* as 3\.")
            host, _, port = activate[0].rpartition(":")
            daemon.first_client = connect(int(port), host.strip("[]") or "127.0.0.1")
        if wait:
            daemon.wait_ready()
        return daemon

    yield start
    for daemon in daemons:
        if getattr(daemon, "first_client", None):
            daemon.first_client.close()
        daemon.kill()


def is_ready(fields):
    return fields.get("READY") == "1"


def test_ready_is_sent_once_every_listener_accepts(run, notify):
    daemon = run(config_text(echo={"protocol": "echo"}, bc={"protocol": "bytecount"}), wait=False)
    index, fields = notify.wait_for(is_ready)
    assert index == 0, notify.snapshot()
    # READY came after every "listening" line: both ports answer now.
    assert echo(daemon.port("echo"), b"ready?") == b"ready?"
    assert echo(daemon.port("bc"), b"3 yes") == b"yes"
    assert fields["STATUS"].startswith("echo 0 open, 0 served, 0 refused; bc 0 open, 0 served, 0 refused")


def test_status_is_refreshed_with_live_counters(run, notify):
    daemon = run(config_text(echo={"protocol": "echo"}, bc={"protocol": "bytecount"}))
    notify.wait_for(is_ready)
    assert echo(daemon.port("echo"), pattern(3000)) == pattern(3000)
    with connect(daemon.port("bc")) as sock:
        assert exchange([(sock, b"x 1")]) == [b""]
    _, fields = notify.wait_for(lambda f: "bc 0 open, 1 served" in f.get("STATUS", ""), timeout=15)
    assert fields["STATUS"] == (
        "echo 0 open, 1 served, 0 refused; bc 0 open, 1 served, 0 refused, 1 bad; 2.9 KiB echoed"
    )


def test_watchdog_is_fed_at_half_the_interval(run, notify):
    run(config_text(echo={"protocol": "echo"}), WATCHDOG_USEC="300000")
    notify.wait_for(lambda f: f.get("WATCHDOG") == "1")
    first = notify.wait_for(lambda f: f.get("WATCHDOG") == "1")[0]
    notify.wait_for(lambda f: f.get("WATCHDOG") == "1", after=first + 8)
    pings = notify.times(lambda f: f.get("WATCHDOG") == "1")
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert 0.1 <= statistics.median(gaps) <= 0.25, gaps


def test_watchdog_meant_for_another_process_is_not_fed(run, notify):
    daemon = run(config_text(echo={"protocol": "echo"}), WATCHDOG_USEC="300000", WATCHDOG_PID="1")
    notify.wait_for(is_ready)
    daemon.send_signal(signal.SIGHUP)
    index, _ = notify.wait_for(lambda f: f.get("RELOADING") == "1")
    notify.wait_for(is_ready, after=index)
    assert not notify.times(lambda f: "WATCHDOG" in f)


def test_stop_says_stopping(run, notify):
    daemon = run(config_text(echo={"protocol": "echo"}))
    notify.wait_for(is_ready)
    code = daemon.stop()
    assert code in (0, -signal.SIGTERM), daemon.output
    assert "Received SIGTERM" in daemon.output, daemon.output
    _, fields = notify.wait_for(lambda f: f.get("STOPPING") == "1", timeout=3)
    assert fields["STATUS"].startswith("stopping: 0 connection(s) still open")


class Traffic:
    """Clients echoing without pause in a thread: one persistent connection and a stream of new ones."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.rounds = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._persistent = connect(self.port)
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            payload = pattern(4096, seed=n)
            try:
                if exchange([(self._persistent, payload)], half_close=False) != [payload]:
                    self.errors.append(f"persistent round {n}: wrong bytes")
                if echo(self.port, payload) != payload:
                    self.errors.append(f"new connection {n}: wrong bytes")
            except OSError as e:
                self.errors.append(f"round {n}: {e!r}")
            self.rounds = n

    def wait_rounds(self, more: int) -> None:
        target = self.rounds + more
        while self.rounds < target and self._thread.is_alive() and not self.errors:
            self._stop.wait(0.01)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)
        self._persistent.close()


def reload(daemon: Daemon, notify: NotifySocket) -> dict[str, str]:
    """SIGHUP; return the READY message that ends the reload, after checking its RELOADING message."""
    start = len(notify.snapshot())
    daemon.send_signal(signal.SIGHUP)
    index, fields = notify.wait_for(lambda f: f.get("RELOADING") == "1", after=start)
    assert int(fields["MONOTONIC_USEC"]) > 0
    return notify.wait_for(is_ready, after=index)[1]


def test_reload_under_traffic_applies_changes_without_dropping_anything(run, notify):
    daemon = run(config_text(echo={"protocol": "echo", "max_connections": "50"}))
    path = daemon.config_path
    with Traffic(daemon.port("echo")) as traffic:
        traffic.wait_rounds(20)
        path.write_text(
            config_text(
                {"log_level": "debug"},
                echo={"protocol": "echo", "max_connections": "40", "port": str(daemon.port("echo"))},
                bc={"protocol": "bytecount"},
            )
        )
        status = reload(daemon, notify)["STATUS"]
        assert "bc 0 open" in status
        traffic.wait_rounds(20)
        daemon.wait_for(r"bc: bytecount/tcp listening on 127\.0\.0\.1:\d+")
        assert echo(daemon.port("bc"), b"2 hi") == b"hi"
        daemon.wait_for(r"debug +echo: connection from")  # the new log level applies
        path.write_text(config_text(echo={"protocol": "echo", "port": str(daemon.port("echo"))}))
        reload(daemon, notify)
        traffic.wait_rounds(20)
        daemon.wait_for(r"bc: stopped listening on tcp 127\.0\.0\.1:")
    assert traffic.errors == []
    assert traffic.rounds >= 60
    with pytest.raises(ConnectionRefusedError):
        connect(daemon.port("bc"))


def test_bad_config_on_reload_keeps_serving_and_says_so(run, notify):
    daemon = run(config_text(echo={"protocol": "echo"}))
    good = daemon.config_path.read_text()
    with Traffic(daemon.port("echo")) as traffic:
        daemon.config_path.write_text(good + "max_conections = 3\n")
        status = reload(daemon, notify)["STATUS"]
        assert status.startswith(
            "WARNING: reload failed, previous configuration kept: "
            f"{daemon.config_path}:9: [listener:echo] max_conections: unknown key 'max_conections'; "
            "did you mean 'max_connections'? | echo "
        )
        daemon.wait_for(r"error +reload: .*max_conections: unknown key 'max_conections'")
        daemon.wait_for(r"reload failed, still serving the previous configuration")
        traffic.wait_rounds(20)
        daemon.config_path.write_text(good)
        assert reload(daemon, notify)["STATUS"].startswith("echo ")
        traffic.wait_rounds(5)
    assert traffic.errors == []


def test_reload_moves_a_listener_and_its_open_connections_finish(run, notify):
    daemon = run(config_text(echo={"protocol": "echo"}))
    old_port, new_port = daemon.port("echo"), free_port()
    with connect(old_port) as open_before:
        assert exchange([(open_before, b"before")], half_close=False) == [b"before"]
        daemon.config_path.write_text(config_text(echo={"protocol": "echo", "port": str(new_port)}))
        reload(daemon, notify)
        assert echo(new_port, b"new port") == b"new port"
        with pytest.raises(ConnectionRefusedError):
            connect(old_port)
        assert exchange([(open_before, b"still here")]) == [b"still here"]


def test_reload_adds_and_removes_a_udp_listener(run, notify):
    daemon = run(config_text(echo={"protocol": "echo"}))
    udp = {"protocol": "echo", "transport": "udp", "address": "127.0.0.1", "port": str(free_port())}
    text = config_text(echo={"protocol": "echo", "port": str(daemon.port("echo"))})
    daemon.config_path.write_text(text + "[listener:u]\n" + "".join(f"{k} = {v}\n" for k, v in udp.items()))
    assert "u 0 echoed, 0 dropped" in reload(daemon, notify)["STATUS"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(b"datagram", ("127.0.0.1", int(udp["port"])))
        assert sock.recv(100) == b"datagram"
    daemon.config_path.write_text(text)
    assert "u " not in reload(daemon, notify)["STATUS"]
    daemon.wait_for(rf"u: stopped listening on udp 127\.0\.0\.1:{udp['port']}")


def test_reload_changes_protocol_on_the_same_socket(run, notify):
    daemon = run(config_text(svc={"protocol": "echo"}))
    port = daemon.port("svc")
    with connect(port) as echo_client:
        assert exchange([(echo_client, b"accepted")], half_close=False) == [b"accepted"]
        daemon.config_path.write_text(config_text(svc={"protocol": "bytecount", "port": str(port)}))
        reload(daemon, notify)
        assert echo(port, b"2 okEXTRA") == b"ok"
        assert exchange([(echo_client, b"3 still echo")]) == [b"3 still echo"]


def test_stop_counts_each_open_connection_once_after_a_protocol_swap(run, notify):
    daemon = run(config_text({"shutdown_grace": "30s"}, svc={"protocol": "echo"}))
    port = daemon.port("svc")
    with connect(port) as old_protocol:
        assert exchange([(old_protocol, b"echo")], half_close=False) == [b"echo"]
        daemon.config_path.write_text(
            config_text({"shutdown_grace": "30s"}, svc={"protocol": "bytecount", "port": str(port)})
        )
        reload(daemon, notify)
        daemon.send_signal(signal.SIGTERM)
        assert (
            notify.wait_for(lambda f: f.get("STOPPING") == "1")[1]["STATUS"]
            == "stopping: 1 connection(s) still open"
        )
        daemon.wait_for(r"waiting up to 30s for 1 open connection\(s\) to finish")
    assert daemon.process.wait(30) in (0, -signal.SIGTERM)


def test_reload_to_a_port_in_use_keeps_the_old_socket(run, notify):
    daemon = run(config_text(echo={"protocol": "echo"}))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        daemon.config_path.write_text(config_text(echo={"protocol": "echo", "port": str(taken)}))
        status = reload(daemon, notify)["STATUS"]
    assert status.startswith(f"WARNING: echo could not move to tcp 127.0.0.1:{taken}, see the log | echo ")
    daemon.wait_for(rf"reload: echo keeps its previous socket: cannot listen on tcp 127\.0\.0\.1:{taken}")
    assert echo(daemon.port("echo"), b"old") == b"old"


def test_renaming_a_listener_keeps_its_socket_and_its_connections(run, notify):
    daemon = run(config_text(echo={"protocol": "echo"}))
    port = daemon.port("echo")
    with Traffic(port) as traffic, connect(port) as open_before:
        assert exchange([(open_before, b"before")], half_close=False) == [b"before"]
        traffic.wait_rounds(10)
        daemon.config_path.write_text(config_text(echo2={"protocol": "echo", "port": str(port)}))
        status = reload(daemon, notify)["STATUS"]
        assert status.startswith("echo2 "), status
        daemon.wait_for(rf"echo2: renamed from echo, still listening on tcp 127\.0\.0\.1:{port}$")
        daemon.wait_for(r"reloaded: serving 1 listener\(s\)")
        traffic.wait_rounds(10)
        assert echo(port, b"after") == b"after"
        assert exchange([(open_before, b"still here")]) == [b"still here"]
    assert traffic.errors == []
    assert "stopped listening" not in daemon.output
    assert "keeps its previous socket" not in daemon.output


def test_renaming_a_udp_listener_keeps_its_socket(run, notify):
    daemon = run(config_text(echo={"protocol": "echo"}))
    udp = {"protocol": "echo", "transport": "udp", "address": "127.0.0.1", "port": str(free_port())}
    text = config_text(echo={"protocol": "echo", "port": str(daemon.port("echo"))})
    section = "".join(f"{k} = {v}\n" for k, v in udp.items())
    daemon.config_path.write_text(text + "[listener:u]\n" + section)
    reload(daemon, notify)
    daemon.config_path.write_text(text + "[listener:u2]\n" + section)
    assert "u2 0 echoed, 0 dropped" in reload(daemon, notify)["STATUS"]
    daemon.wait_for(rf"u2: renamed from u, still listening on udp 127\.0\.0\.1:{udp['port']}$")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(b"datagram", ("127.0.0.1", int(udp["port"])))
        assert sock.recv(100) == b"datagram"
    assert "u: stopped listening" not in daemon.output


def test_frequent_reloads_do_not_postpone_the_idle_timeout(run, notify):
    """A SIGHUP every 0.4 s, each changing nothing, with an idle_timeout of 2 s (a sweep every 0.5 s)."""
    daemon = run(config_text(echo={"protocol": "echo", "idle_timeout": "2s"}))
    with connect(daemon.port("echo")) as idle:
        assert exchange([(idle, b"then silence")], half_close=False) == [b"then silence"]
        started = time.monotonic()
        reloads = 0
        closed = False
        while not closed and time.monotonic() - started < 12:
            reload(daemon, notify)
            reloads += 1
            closed = bool(select.select([idle], [], [], 0.4)[0])
        waited = time.monotonic() - started
        assert closed, f"still open after {waited:.1f}s and {reloads} reloads"
        assert read_until_closed(idle) == b""
    assert 1.5 <= waited <= 4, (waited, reloads)
    assert reloads >= 3


def test_switching_protocol_keeps_counting_each_peers_connections(run, notify):
    keys = {"max_connections_per_peer": "4"}
    daemon = run(config_text(svc={"protocol": "echo", **keys}))
    port = daemon.port("svc")
    with held([connect(port) for _ in range(4)]) as cap:  # this host's cap
        assert exchange([(sock, b"e") for sock in cap], half_close=False) == [b"e"] * 4
        daemon.config_path.write_text(config_text(svc={"protocol": "bytecount", "port": str(port), **keys}))
        reload(daemon, notify)
        with connect(port) as fifth:  # a fifth from 127.0.0.1: refused, where it got in before
            assert read_until_closed(fifth) == b""
        daemon.wait_for(
            r"svc: max_connections_per_peer \(4\) reached, refusing new connections from 127\.0\.0\.1"
        )
        with connect(port, source="127.0.0.2") as other:  # another host is served the new protocol
            assert exchange([(other, b"2 okEXTRA")]) == [b"ok"]
        assert exchange([(cap[0], b"3 still echo")]) == [b"3 still echo"]


def test_reload_out_of_file_descriptors_still_ends_with_ready(run, notify):
    daemon = run(config_text(echo={"protocol": "echo"}))
    port, pid = daemon.port("echo"), daemon.process.pid
    daemon.config_path.write_text(
        config_text(echo={"protocol": "echo", "port": str(port)}, more={"protocol": "echo"})
    )
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    in_use = {int(fd) for fd in os.listdir(f"/proc/{pid}/fd")}
    free = [fd for fd in range(max(in_use) + 3) if fd not in in_use]
    # One descriptor to spare, for reading the configuration; none for the new listener.
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (free[0] + 1, limits[1]))
    try:
        status = reload(daemon, notify)["STATUS"]
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
    assert status.startswith("WARNING: more could not listen on tcp 127.0.0.1:0, see the log | echo "), status
    daemon.wait_for(r"reload: more not added: cannot listen on tcp 127\.0\.0\.1:0: Too many open files$")
    assert echo(port, b"still serving") == b"still serving"
    assert "more 0 open" in reload(daemon, notify)["STATUS"]  # with descriptors again, it is added
    daemon.wait_for(r"more: echo/tcp listening on ")
    assert echo(daemon.port("more"), b"added now") == b"added now"


def test_graceful_stop_finishes_the_connection_in_flight(run, notify):
    daemon = run(config_text({"shutdown_grace": "30s"}, echo={"protocol": "echo"}))
    with connect(daemon.port("echo")) as sock:
        assert exchange([(sock, b"a")], half_close=False) == [b"a"]
        daemon.send_signal(signal.SIGTERM)
        notify.wait_for(lambda f: f.get("STOPPING") == "1")
        big = pattern(8 << 20)
        assert exchange([(sock, big)]) == [big]
    assert daemon.process.wait(30) in (0, -signal.SIGTERM)


# -- socket activation --------------------------------------------------------


def test_activated_sockets_are_matched_by_address(run, notify):
    echo_port, bc_port, spare = free_port(), free_port(), free_port()
    text = config_text(
        echo={"protocol": "echo", "address": "::", "port": str(echo_port)},
        bc={"protocol": "bytecount", "port": str(bc_port)},
    )
    daemon = run(text, activate=[f"[::]:{echo_port}", f"127.0.0.1:{bc_port}", f"127.0.0.1:{spare}"])
    assert exchange([(daemon.first_client, b"first")]) == [b"first"]
    daemon.wait_for(rf"echo: echo/tcp listening on \[::\]:{echo_port} \(socket from systemd\)")
    daemon.wait_for(rf"bc: bytecount/tcp listening on 127\.0\.0\.1:{bc_port} \(socket from systemd\)")
    assert echo(echo_port, b"v6", host="::1") == b"v6"
    assert echo(echo_port, b"v4", host="127.0.0.1") == b"v4"
    assert echo(bc_port, b"2 ok") == b"ok"
    daemon.wait_for(
        rf"systemd passed socket tcp 127\.0\.0\.1:{spare} \(fd 5\), which no listener in .* uses; "
        r"its clients are reset; to make them agree run: "
        r"systemctl daemon-reload && systemctl restart echod\.socket"
    )
    assert notify.wait_for(is_ready)[1]["STATUS"].startswith(
        f"WARNING: systemd's sockets differ from {daemon.config_path}: "
        "run 'systemctl daemon-reload && systemctl restart echod.socket' | echo 0 open"
    )


def test_clients_of_a_socket_no_listener_wants_are_reset_at_once(run, notify):
    # The port was moved in the configuration and only the service restarted:
    # systemd still listens on the old one. Its clients must not hang.
    old, new = free_port(), free_port()
    daemon = run(config_text(echo={"protocol": "echo", "port": str(new)}), activate=[f"127.0.0.1:{old}"])
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        exchange([(daemon.first_client, b"hello")])
    for _ in range(3):
        # The reset may come before connect() returns, when the server is quick to accept.
        with pytest.raises((ConnectionResetError, BrokenPipeError)), connect(old, timeout=10) as sock:
            sock.sendall(b"x")
            sock.recv(1)  # a hang fails the test (timeout) instead of passing it
    daemon.wait_for(
        rf"reset a connection from 127\.0\.0\.1:\d+ to tcp 127\.0\.0\.1:{old} \(fd 3\), a socket systemd "
        r"passed that no listener uses; to make systemd's sockets follow the configuration run: "
        r"systemctl daemon-reload"
    )
    assert echo(new, b"served") == b"served"
    # The three after the first are summed up at the end of the minute, or when echod stops.
    daemon.stop()
    daemon.wait_for(
        rf"\.\.\. and 3 more connections reset on tcp 127\.0\.0\.1:{old} \(fd 3\) from 127\.0\.0\.1 in the "
        r"last [\d.]+s; to make systemd's sockets follow the configuration run: systemctl daemon-reload"
    )


def test_activated_sockets_are_matched_by_name(run, notify):
    a, b = free_port(), free_port()
    # The config's addresses differ from the sockets': only the names can match them.
    text = config_text(first={"protocol": "echo", "port": "0"}, second={"protocol": "bytecount", "port": "0"})
    daemon = run(text, activate=[f"127.0.0.1:{a}", f"127.0.0.1:{b}"], names=["second", "first"])
    daemon.wait_for(rf"second: bytecount/tcp listening on 127\.0\.0\.1:{a} \(socket from systemd\)")
    daemon.wait_for(rf"first: echo/tcp listening on 127\.0\.0\.1:{b} \(socket from systemd\)")
    assert exchange([(daemon.first_client, b"2 okEXTRA")]) == [b"ok"]
    assert echo(b, b"echo") == b"echo"


def test_listener_without_an_inherited_socket_binds_its_own(run, notify):
    activated = free_port()
    text = config_text(
        act={"protocol": "echo", "port": str(activated)}, own={"protocol": "bytecount", "port": "0"}
    )
    daemon = run(text, activate=[f"127.0.0.1:{activated}"])
    daemon.wait_for(rf"own: bytecount/tcp listening on 127\.0\.0\.1:{daemon.port('own')}$")
    assert echo(daemon.port("own"), b"1 x") == b"x"


def test_activated_listener_moved_in_the_config_says_what_to_run(run, notify):
    port = free_port()
    daemon = run(config_text(echo={"protocol": "echo", "port": str(port)}), activate=[f"127.0.0.1:{port}"])
    elsewhere = free_port()
    daemon.config_path.write_text(
        config_text(echo={"protocol": "echo", "port": str(elsewhere), "max_connections": "5"})
    )
    status = reload(daemon, notify)["STATUS"]
    assert status.startswith(
        f"WARNING: systemd's sockets differ from {daemon.config_path}: "
        "run 'systemctl daemon-reload && systemctl restart echod.socket' | echo "
    )
    daemon.wait_for(
        rf"echo: the configuration now says tcp 127\.0\.0\.1:{elsewhere}, but its socket comes from systemd "
        rf"and is tcp 127\.0\.0\.1:{port}; to move it run: "
        r"systemctl daemon-reload && systemctl restart echod\.socket"
    )
    assert echo(port, b"kept") == b"kept"


def test_listener_missing_from_systemds_sockets_says_what_to_run(run, notify):
    activated = free_port()
    text = config_text(
        act={"protocol": "echo", "port": str(activated)}, low={"protocol": "echo", "port": "7"}
    )
    daemon = run(text, activate=[f"127.0.0.1:{activated}"], wait=False, unprivileged=True)
    assert daemon.process.wait(60) == 77
    daemon.wait_for(
        r"port 7 is privileged .* \(systemd's sockets do not include it; to make them follow the "
        r"configuration: systemctl daemon-reload && systemctl restart echod\.socket\)"
    )


def udp_echo(port: int, payload: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(payload, ("127.0.0.1", port))
        return sock.recv(65535)


def test_a_listener_replaced_on_an_overlapping_address_is_served(run, notify):
    # a is removed and b added: b's bind must wait until a's socket is closed.
    port = free_port()
    daemon = run(config_text(a={"protocol": "echo", "address": "0.0.0.0", "port": str(port)}))
    daemon.config_path.write_text(config_text(b={"protocol": "echo", "port": str(port)}))
    status = reload(daemon, notify)["STATUS"]
    assert status.startswith("b 0 open"), status
    daemon.wait_for(rf"b: echo/tcp listening on 127\.0\.0\.1:{port}$")
    assert echo(port, b"b serves") == b"b serves"


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_a_listener_moved_to_an_overlapping_address_is_served_there(run, notify, transport):
    port = free_port()

    def config(address: str) -> str:
        if transport == "tcp":
            return config_text(echo={"protocol": "echo", "address": address, "port": str(port)})
        return f"[listener:echo]\nprotocol = echo\ntransport = udp\naddress = {address}\nport = {port}\n"

    daemon = run(config("0.0.0.0"))
    daemon.config_path.write_text(config("127.0.0.1"))
    status = reload(daemon, notify)["STATUS"]
    assert status.startswith("echo 0 "), status
    daemon.wait_for(
        rf"echo: tcp 127\.0\.0\.1:{port} overlaps its socket tcp 0\.0\.0\.0:{port}".replace("tcp", transport)
    )
    daemon.wait_for(rf"echo: echo/{transport} listening on 127\.0\.0\.1:{port}$")
    if transport == "tcp":
        assert echo(port, b"moved") == b"moved"
    else:
        assert udp_echo(port, b"moved") == b"moved"


def test_a_listener_whose_move_fails_after_its_socket_closed_is_shown_unserved(run, notify):
    port = free_port()
    daemon = run(
        config_text(echo={"protocol": "echo", "address": "0.0.0.0", "port": str(port), "reuse_port": "yes"})
    )
    with socket.socket() as squatter:
        # Beside the old socket by SO_REUSEPORT; the new one (no reuse_port) can bind beside neither.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        daemon.config_path.write_text(config_text(echo={"protocol": "echo", "port": str(port)}))
        status = reload(daemon, notify)["STATUS"]
    assert status == (
        f"WARNING: echo is not served: could not move to tcp 127.0.0.1:{port}, see the log | "
        "no listener; 0 B echoed"
    )
    daemon.wait_for(
        rf"reload: echo is not served: its socket tcp 0\.0\.0\.0:{port} was closed to make way for "
        rf"tcp 127\.0\.0\.1:{port}, which then failed too: cannot listen on tcp 127\.0\.0\.1:{port}: "
        r"the address is already in use"
    )


def test_a_host_at_its_per_peer_cap_stays_there_across_a_move(run, notify):
    keys = {"protocol": "echo", "max_connections_per_peer": "2"}
    daemon = run(config_text(echo=keys))
    with held([connect(daemon.port("echo")) for _ in range(2)]) as cap:  # this host's cap
        assert exchange([(sock, b"e") for sock in cap], half_close=False) == [b"e"] * 2
        new_port = free_port()
        daemon.config_path.write_text(config_text(echo={**keys, "port": str(new_port)}))
        reload(daemon, notify)
        with connect(new_port) as third:  # refused on the new port too: the two still count
            assert read_until_closed(third) == b""
        daemon.wait_for(
            r"echo: max_connections_per_peer \(2\) reached, refusing new connections from 127\.0\.0\.1"
        )
        with connect(new_port, source="127.0.0.2") as other:  # another host is served
            assert exchange([(other, b"other host")]) == [b"other host"]
        assert exchange([(cap[0], b"still")]) == [b"still"]


def test_a_udp_listener_moved_keeps_its_token_buckets(run, notify):
    old_port, new_port = free_port(), free_port()
    section = (
        "[listener:u]\nprotocol = echo\ntransport = udp\naddress = 127.0.0.1\ndatagram_rate_per_peer = 1\n"
    )
    daemon = run(config_text(echo={"protocol": "echo"}) + section + f"port = {old_port}\n")
    assert udp_echo(old_port, b"the one a second") == b"the one a second"
    echoed = time.monotonic()
    daemon.config_path.write_text(config_text(echo={"protocol": "echo"}) + section + f"port = {new_port}\n")
    reload(daemon, notify)
    daemon.wait_for(rf"u: echo/udp listening on 127\.0\.0\.1:{new_port}$")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        # Within the second the one token takes to come back: a fresh bucket would answer.
        sock.sendto(b"dropped", ("127.0.0.1", new_port))
        sent = time.monotonic()
    if sent - echoed >= 1:
        pytest.skip("too slow a machine: the token came back before the datagram was sent")
    notify.wait_for(lambda f: "u 1 echoed, 1 dropped" in f.get("STATUS", ""))


def test_a_reload_takes_the_socket_systemd_passed_that_no_listener_wanted(run, notify):
    # echod.conf moved the port and only the service restarted; then the admin reverts the port.
    old, new = free_port(), free_port()
    daemon = run(config_text(echo={"protocol": "echo", "port": str(new)}), activate=[f"127.0.0.1:{old}"])
    daemon.first_client.close()
    daemon.config_path.write_text(config_text(echo={"protocol": "echo", "port": str(old)}))
    status = reload(daemon, notify)["STATUS"]
    assert status.startswith("echo 0 open"), status  # no warning left: the sockets agree again
    daemon.wait_for(rf"echo: takes over tcp 127\.0\.0\.1:{old} \(fd 3\)")
    daemon.wait_for(rf"echo: echo/tcp listening on 127\.0\.0\.1:{old} \(socket from systemd\)$")
    assert echo(old, b"reverted") == b"reverted"
    with pytest.raises(ConnectionRefusedError):
        connect(new)
