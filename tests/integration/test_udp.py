"""
UDP echo over real sockets: whole datagrams back to their source, and the
anti-reflection defences holding while honest clients keep being served.
"""

import itertools
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

from tests.integration.clients import connect
from tests.integration.daemon import Daemon, environment
from tests.integration.systemd import NotifySocket, free_port, socket_activate

UDP = {"protocol": "echo", "transport": "udp"}


def udp_listener(**keys: str) -> dict[str, str]:
    base = {"address": "127.0.0.1", "port": "0", **UDP}
    return {**base, **keys}


def write_config(path, **keys: str) -> None:
    lines = ["[listener:udp]"] + [f"{k} = {v}" for k, v in udp_listener(**keys).items()]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def udp_daemon(tmp_path):
    started: list[Daemon] = []

    def start(**keys: str) -> Daemon:
        path = tmp_path / f"echod-{len(started)}.conf"
        write_config(path, **keys)
        daemon = Daemon(path).start().wait_ready()
        started.append(daemon)
        daemon.udp_port = int(daemon.wait_for(r"udp: echo/udp listening on \S+:(\d+)").group(1))
        return daemon

    yield start
    for daemon in started:
        daemon.kill()


def client(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    sock.settimeout(10)
    return sock


def drain(sock: socket.socket) -> list[bytes]:
    """Everything already waiting on C{sock}, without waiting for more."""
    sock.setblocking(False)
    got = []
    try:
        while True:
            got.append(sock.recv(70000))
    except BlockingIOError:
        pass
    sock.settimeout(10)
    return got


def test_datagrams_come_back_whole_up_to_the_largest(udp_daemon):
    daemon = udp_daemon()
    with client() as sock:
        for size in (0, 1, 1472, 8193, 65507):  # 65507: the largest UDP payload over IPv4
            payload = os.urandom(size)
            sock.sendto(payload, ("127.0.0.1", daemon.udp_port))
            assert sock.recv(70000) == payload, size


def test_largest_ipv6_datagram(udp_daemon):
    daemon = udp_daemon(address="::1")
    with client("::1") as sock:
        payload = os.urandom(65527)  # 65535 less the UDP header
        sock.sendto(payload, ("::1", daemon.udp_port))
        assert sock.recv(70000) == payload


@pytest.mark.skipif(os.geteuid() != 0, reason="binding a source port below 1024 needs root")
def test_privileged_source_ports_are_not_answered(udp_daemon):
    daemon = udp_daemon()
    with client(port=1000) as forged, client() as honest:
        forged.sendto(b"loop?", ("127.0.0.1", daemon.udp_port))
        honest.sendto(b"hello", ("127.0.0.1", daemon.udp_port))
        assert honest.recv(100) == b"hello"  # answered after the forged one was handled
        assert drain(forged) == []
    daemon.wait_for(
        r"udp: dropped a datagram from 127\.0\.0\.1:1000: its source port 1000 is in blocked_source_ports "
        r"\(0-1023\); to answer that port, take it out of blocked_source_ports in \[listener:udp\] "
        r"\(dropped so far: 1 from blocked_source_ports\)"
    )


def test_listed_source_ports_are_not_answered(udp_daemon):
    blocked = free_port()
    daemon = udp_daemon(blocked_source_ports=f"0-1023, {blocked}")
    with client(port=blocked) as listed, client() as honest:
        listed.sendto(b"x", ("127.0.0.1", daemon.udp_port))
        honest.sendto(b"y", ("127.0.0.1", daemon.udp_port))
        assert honest.recv(100) == b"y"
        assert drain(listed) == []


def ask(sock: socket.socket, port: int, payload: bytes, tries: int = 5) -> bool:
    """What an honest UDP client does: send, wait a little for the answer, send again."""
    sock.settimeout(0.5)
    for _ in range(tries):
        sock.sendto(payload, ("127.0.0.1", port))
        try:
            while sock.recv(70000) != payload:
                pass  # a late answer to an earlier try
            return True
        except TimeoutError:
            continue
    return False


def test_flood_from_one_source_is_limited_and_honest_clients_are_all_served(udp_daemon):
    daemon = udp_daemon(datagram_rate_per_peer="20", datagram_rate="100000")
    rss_before = daemon.rss_kib()
    with client("127.0.0.2") as attacker, client("127.0.0.1") as honest:
        for i in range(2000):
            attacker.sendto(b"flood %d" % i, ("127.0.0.1", daemon.udp_port))
        answered_honestly = sum(ask(honest, daemon.udp_port, b"honest %d" % i) for i in range(15))
        echoed = drain(attacker)
    assert answered_honestly == 15
    assert 20 <= len(echoed) <= 40, len(echoed)  # the burst, and what refilled meanwhile
    assert daemon.rss_kib() - rss_before < 16 * 1024
    daemon.wait_for(
        r"udp: dropped a datagram from 127\.0\.0\.2:\d+: over datagram_rate_per_peer = 20 a second from "
        r"127\.0\.0\.2; if that source is wanted, raise datagram_rate_per_peer in \[listener:udp\]"
    )
    # The rest are summed up within 10s, or when echod stops if that is sooner:
    # before, the drops after the one line said were never logged.
    daemon.stop()  # as a SIGTERM ends it: how it exits is test_daemon's
    daemon.wait_for(
        r"udp: \.\.\. and ([\d,]+) more datagrams dropped from 127\.0\.0\.2 in the last [\d.]+s: "
        r"\1 over datagram_rate_per_peer \(dropped so far: [\d,]+ over datagram_rate_per_peer\)"
    )


def flood_and_count(daemon: Daemon, attacker: socket.socket, count: int) -> int:
    """Send C{count} datagrams from C{attacker}; how many came back once echod had handled them all."""
    for i in range(count):
        attacker.sendto(b"flood %d" % i, ("127.0.0.1", daemon.udp_port))
    with client("127.0.0.3") as marker:
        # Answered only after every datagram queued before it was handled.
        assert ask(marker, daemon.udp_port, b"marker")
    return len(drain(attacker))


def test_reload_does_not_refill_the_rate_limits(udp_daemon):
    daemon = udp_daemon(datagram_rate_per_peer="20", datagram_rate="100000")
    with client("127.0.0.2") as attacker:
        start = time.monotonic()
        assert 20 <= flood_and_count(daemon, attacker, 200) <= 40
        daemon.send_signal(signal.SIGHUP)  # the same configuration
        daemon.wait_for(r"reloaded: serving 1 listener")
        echoed = flood_and_count(daemon, attacker, 200)
        elapsed = time.monotonic() - start
    # What refilled at 20 a second since the first flood began, and no fresh burst of 20.
    assert echoed <= 20 * elapsed + 1, (echoed, elapsed)


def test_global_rate_bounds_a_flood_from_many_sources(udp_daemon):
    daemon = udp_daemon(datagram_rate_per_peer="1000", datagram_rate="30")
    sources = [client(f"127.0.0.{i}") for i in range(10, 20)]
    try:
        for i in range(50):
            for sock in sources:
                sock.sendto(b"%d" % i, ("127.0.0.1", daemon.udp_port))
        # A last datagram whose answer marks that the server has handled all of the above.
        with client("127.0.0.3") as marker:
            marker.sendto(b"done?", ("127.0.0.1", daemon.udp_port))
            marker.settimeout(0.5)
            try:
                marker.recv(100)
            except TimeoutError:
                pass  # the global budget may be spent: that is the point
        total = sum(len(drain(sock)) for sock in sources)
    finally:
        for sock in sources:
            sock.close()
    assert 30 <= total <= 45, total


def forge(source: tuple[str, int], destination: tuple[str, int], payload: bytes) -> None:
    """Send one IPv4 UDP datagram whose source is C{source}, whatever socket owns it (root only)."""
    udp = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0) + payload  # no checksum
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,  # IPv4, 20-byte header
        0,
        20 + len(udp),
        0,
        0,
        64,
        socket.IPPROTO_UDP,
        0,  # the kernel fills in the checksum
        socket.inet_aton(source[0]),
        socket.inet_aton(destination[0]),
    )
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
        raw.sendto(header + udp, (destination[0], 0))


def udp_counters(daemon: Daemon, notify: NotifySocket) -> str:
    """The status line's counters, fresh: a reload sends them with READY=1."""
    start = len(notify.snapshot())
    daemon.send_signal(signal.SIGHUP)
    return notify.wait_for(lambda f: f.get("READY") == "1", after=start)[1]["STATUS"]


@pytest.fixture
def notified_daemon(tmp_path):
    """Start echod from configuration text with a NOTIFY_SOCKET; the daemon and its socket."""
    notify = NotifySocket(tmp_path / "notify")
    started: list[Daemon] = []

    def start(text: str) -> tuple[Daemon, NotifySocket]:
        path = tmp_path / "echod.conf"
        path.write_text(text)
        daemon = Daemon(path, env=environment(NOTIFY_SOCKET=notify.path))
        started.append(daemon)
        daemon.start().wait_ready()
        # The start's READY=1 must be in before udp_counters counts messages, or it passes for the reload's.
        notify.wait_for(lambda f: f.get("READY") == "1")
        return daemon, notify

    yield start
    for daemon in started:
        daemon.kill()
    notify.close()


def udp_section(name: str, address: str = "127.0.0.1") -> str:
    return f"[listener:{name}]\nprotocol = echo\ntransport = udp\naddress = {address}\nport = 0\n"


def udp_port_of(daemon: Daemon, name: str) -> int:
    return int(daemon.wait_for(rf"{name}: echo/udp listening on \S+:(\d+)").group(1))


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="forging a source address needs a raw socket")


@needs_root
def test_a_datagram_forged_from_the_listeners_own_address_is_not_echoed(notified_daemon):
    daemon, notify = notified_daemon(udp_section("udp"))
    port = udp_port_of(daemon, "udp")
    forge(("127.0.0.1", port), ("127.0.0.1", port), b"echo yourself")
    daemon.wait_for(r"udp: dropped a datagram", timeout=10)  # the loop's end, if there is one
    assert "udp 0 echoed, 1 dropped" in udp_counters(daemon, notify)
    daemon.wait_for(
        rf"from 127\.0\.0\.1:{port}: it comes from one of echod's own listeners, and answering would loop "
        r"\(dropped so far: 1 from echod's own listeners\)"
    )


@needs_root
def test_two_listeners_never_echo_to_each_other(notified_daemon):
    daemon, notify = notified_daemon(udp_section("a") + udp_section("b"))
    a, b = udp_port_of(daemon, "a"), udp_port_of(daemon, "b")
    forge(("127.0.0.1", a), ("127.0.0.1", b), b"ping-pong")
    daemon.wait_for(r"b: dropped a datagram", timeout=10)
    counters = udp_counters(daemon, notify)
    assert re.search(
        r"a 0 echoed, 0 dropped, receive buffer \w+; b 0 echoed, 1 dropped, receive buffer", counters
    ), counters


@needs_root
def test_a_wildcard_listener_does_not_answer_any_local_address_from_its_port(notified_daemon):
    # Bound to ::, the listener is every local address at its port: 127.0.0.5 too.
    daemon, notify = notified_daemon(udp_section("udp", "::"))
    port = udp_port_of(daemon, "udp")
    forge(("127.0.0.5", port), ("127.0.0.1", port), b"echo yourself")
    daemon.wait_for(r"udp: dropped a datagram", timeout=10)
    assert "udp 0 echoed, 1 dropped" in udp_counters(daemon, notify)
    with client() as honest:  # while a local client on a port of its own is answered
        assert ask(honest, port, b"hello")


def test_udp_listener_under_socket_activation(tmp_path):
    port = free_port()
    path = tmp_path / "echod.conf"
    write_config(path, port=str(port))
    command = socket_activate([f"127.0.0.1:{port}"], env=("PYTHONPATH", "PYTHONUNBUFFERED"))
    command.insert(1, "--datagram")
    daemon = Daemon(path, [*command, sys.executable, "-m", "echod", "run", "-c", str(path)], environment())
    try:
        daemon.start()
        daemon.wait_for(r"Listening on 127\.0\.0\.1:\d+ as 3\.")
        with client() as sock:
            sock.sendto(b"wake up", ("127.0.0.1", port))  # starts echod, then is answered by it
            assert sock.recv(100) == b"wake up"
        daemon.wait_for(rf"udp: echo/udp listening on 127\.0\.0\.1:{port} \(socket from systemd\)")
    finally:
        daemon.kill()


#: A flooder of empty datagrams, bounded in count and in time: argv is the
#: source address, the destination port, the most datagrams, the most seconds.
#: It prints how many it sent.
EMPTY_FLOOD = """
import socket, sys, time
source, port, most, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((source, 0))
sock.setblocking(False)
target, sent, deadline = ("127.0.0.1", port), 0, time.monotonic() + seconds
while sent < most and time.monotonic() < deadline:
    for _ in range(1000):
        try:
            sock.sendto(b"", target)
            sent += 1
        except BlockingIOError:
            pass
print(sent, flush=True)
"""


def round_trips(sock: socket.socket, until) -> list[float]:
    """One-byte TCP echoes on C{sock}, one after another, until C{until()}; each one's round trip."""
    times = []
    while not until():
        start = time.monotonic()
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
        times.append(time.monotonic() - start)
    return times


def test_empty_datagram_flood_does_not_freeze_the_reactor(tmp_path):
    # Empty datagrams add nothing to the bytes Twisted's own read loop counts,
    # so a steady stream of them used to keep echod reading that one socket:
    # a TCP echo waited seconds, and the watchdog went unfed.
    path = tmp_path / "echod.conf"
    path.write_text(
        "[listener:tcp]\nprotocol = echo\naddress = 127.0.0.1\nport = 0\n"
        "[listener:udp]\nprotocol = echo\ntransport = udp\naddress = 127.0.0.1\nport = 0\n"
    )
    notify = NotifySocket(tmp_path / "notify")
    daemon = Daemon(path, env=environment(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="200000"))
    try:
        daemon.start().wait_ready()
        udp_port = int(daemon.wait_for(r"udp: echo/udp listening on \S+:(\d+)").group(1))
        with connect(daemon.port("tcp"), timeout=60) as tcp:
            baseline_end = time.monotonic() + 0.5
            baseline = round_trips(tcp, lambda: time.monotonic() > baseline_end)
            flooder = subprocess.Popen(
                [sys.executable, "-c", EMPTY_FLOOD, "127.0.0.2", str(udp_port), "2000000", "3"],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                flood_start = time.monotonic()
                during = round_trips(tcp, lambda: flooder.poll() is not None)
                flood_end = time.monotonic()
                sent = int(flooder.communicate(timeout=30)[0])
            finally:
                flooder.kill()
                flooder.wait()
        pings = [t for t in notify.times(lambda f: f.get("WATCHDOG") == "1") if flood_start <= t <= flood_end]
        daemon.wait_for(r"udp: dropped a datagram")  # the flood did reach echod
    finally:
        daemon.kill()
        notify.close()
    slowest = max(during)
    gaps = [b - a for a, b in itertools.pairwise([flood_start, *pings, flood_end])]
    print(
        f"{sent} empty datagrams in {flood_end - flood_start:.1f}s; TCP echo slowest {max(baseline):.4f}s "
        f"before, {slowest:.4f}s during; longest watchdog gap {max(gaps):.3f}s"
    )
    assert sent > 50_000, sent  # enough of a flood to have frozen echod before
    assert slowest <= max(0.5, 50 * max(baseline)), (slowest, max(baseline))
    assert max(gaps) < 1.0, gaps  # the watchdog (every 0.1s) kept being fed


def test_per_source_rate_is_shared_by_a_prefix(udp_daemon):
    """peer_prefix_ipv4 = 24: 127.0.0.2 and 127.0.0.3 draw on one bucket; 127.0.1.1 has its own."""
    daemon = udp_daemon(datagram_rate_per_peer="1", peer_prefix_ipv4="24")
    with client("127.0.0.2") as first, client("127.0.0.3") as neighbour, client("127.0.1.1") as other:
        first.sendto(b"first", ("127.0.0.1", daemon.udp_port))
        assert first.recv(100) == b"first"  # the prefix's one token a second, spent
        neighbour.sendto(b"same prefix", ("127.0.0.1", daemon.udp_port))
        # Handled in order: once this is answered, the neighbour's datagram has been dealt with.
        other.sendto(b"marker", ("127.0.0.1", daemon.udp_port))
        assert other.recv(100) == b"marker"
        assert drain(neighbour) == []
