"""
echod behind Debian's own haproxy, on hosts of their own: network namespaces
made by the test (tests/integration/netns.py) for one balancer running
haproxy with the shipped examples/haproxy.cfg, two backends each running its
own echod with proxy_protocol = yes, and two clients, one of them speaking
IPv6 to the balancer.

The example is used as it is shipped; only its example servers' addresses
and its stats socket's path are replaced with the test's.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration import netns
from tests.integration.clients import exchange, held, read_until_closed
from tests.integration.daemon import ROOT, Daemon, config_text
from tests.proxyheaders import proxy_v1, proxy_v2

EXAMPLE = ROOT / "examples" / "haproxy.cfg"
#: What the test replaces in the example: its servers, and its stats socket.
EXAMPLE_SERVERS = ("192.0.2.11", "192.0.2.12")
EXAMPLE_STATS_SOCKET = "/run/haproxy/admin.sock"
#: The example's frontends, backends and ports.
LISTENERS = {"echo": ("echod-echo", 7), "bytecount": ("echod-bytecount", 50007)}
#: max_connections_per_peer of each backend's echod.
CAP = 8

HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
NO_HAPROXY = "needs haproxy (`make test` installs Debian's as root)"

#: Source ports for the connections a test looks up in the access logs by the client's end, each
#: used once: below the kernel's ephemeral range (32768 up), so that no other connection of the
#: run, such as the thousands of the failover loop, can have had the same end before.
_source_ports = itertools.count(10000)


def connect(client: netns.Host, host: str, port: int) -> socket.socket:
    """A connection from C{client} whose end (address and port) no other connection of the run had."""
    return client.connect(host, port, source_port=next(_source_ports))


def duration(text: str) -> float:
    """An haproxy time (C{500ms}, C{2s}, C{1m}; bare numbers are ms) in seconds."""
    number, unit = re.fullmatch(r"(\d+)(us|ms|s|m|h|d)?", text).groups()
    return int(number) * {"us": 1e-6, "ms": 1e-3, None: 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


@dataclass(frozen=True)
class Checks:
    """The example's health check settings, which decide how soon a dead server is out."""

    inter: float
    fastinter: float
    downinter: float
    fall: int
    rise: int
    timeout: float

    @classmethod
    def of_example(cls) -> Checks:
        text = EXAMPLE.read_text()
        line = re.search(r"(?m)^\s*default-server (.*)$", text)[1]
        server = dict(re.findall(r"\b(inter|fastinter|downinter|fall|rise) (\S+)", line))
        return cls(
            inter=duration(server["inter"]),
            fastinter=duration(server["fastinter"]),
            downinter=duration(server["downinter"]),
            fall=int(server["fall"]),
            rise=int(server["rise"]),
            timeout=duration(re.search(r"(?m)^\s*timeout check (\S+)", text)[1]),
        )

    def out_within(self) -> float:
        """
        The longest a dead server can stay in: the next check comes within
        C{inter}, then one every C{fastinter} until C{fall} have failed, each
        taking at most C{timeout} (a host that no longer answers at all).
        """
        return self.inter + (self.fall - 1) * self.fastinter + self.fall * self.timeout


@dataclass(frozen=True)
class Entry:
    """One access log line."""

    listener: str
    peer: tuple[str, int]
    received: int
    sent: int
    cause: str
    via: tuple[str, int] | None


ENTRY = re.compile(
    r"^\S+ (?P<listener>\S+) (?P<peer>\S+) in=(?P<received>\d+) out=(?P<sent>\d+) duration=\S+s"
    r" closed=(?P<closed>\S+)(?: via=(?P<via>\S+))?$"
)


def split_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def parse_entry(line: str) -> Entry:
    match = ENTRY.match(line)
    assert match, f"not an access log line: {line!r}"
    return Entry(
        match["listener"],
        split_host_port(match["peer"]),
        int(match["received"]),
        int(match["sent"]),
        match["closed"],
        split_host_port(match["via"]) if match["via"] else None,
    )


def wait_until(what: str, check: Callable[[], object], timeout: float = 10, every: float = 0.05) -> object:
    """Poll C{check} until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(every)  # polling a condition, with a deadline


def local_address(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return host, port


class Backend:
    """One backend host and the echod it runs, with its access log."""

    def __init__(self, host: netns.Host, directory: Path, trusted: str) -> None:
        self.host = host
        self.access_log = directory / f"access-{host.role}.log"
        listener = {
            "address": "::",
            "max_connections_per_peer": str(CAP),
            "proxy_protocol": "yes",
            "trusted_proxies": trusted,
        }
        text = config_text(
            {"access_log": str(self.access_log)},
            echo={**listener, "protocol": "echo", "port": str(LISTENERS["echo"][1])},
            bytecount={**listener, "protocol": "bytecount", "port": str(LISTENERS["bytecount"][1])},
        )
        self.config = directory / f"{host.role}.conf"
        self.config.write_text(text)
        self.daemon: Daemon | None = None

    def start(self) -> Backend:
        command = self.host.command([sys.executable, "-m", "echod", "run", "-c", str(self.config)])
        self.daemon = Daemon(self.config, command).start()
        self.daemon.wait_ready()
        return self

    def kill(self) -> None:
        self.daemon.kill()

    def entries(self) -> list[Entry]:
        if not self.access_log.exists():
            return []
        return [parse_entry(line) for line in self.access_log.read_text().splitlines()]


class Balancer:
    """haproxy on the balancer host, run in the foreground on the example's configuration."""

    def __init__(self, host: netns.Host, directory: Path, servers: list[netns.Host]) -> None:
        self.host = host
        self.stats_socket = directory / "admin.sock"
        text = EXAMPLE.read_text()
        for example, server in zip(EXAMPLE_SERVERS, servers, strict=True):
            line = rf"(?m)^(\s*server \S+ ){re.escape(example)}:"
            text, count = re.subn(line, rf"\g<1>{server.ipv4}:", text)
            assert count == len(LISTENERS), f"{example} not once per backend in {EXAMPLE}"
        assert EXAMPLE_STATS_SOCKET in text
        self.config = directory / "haproxy.cfg"
        self.config.write_text(text.replace(EXAMPLE_STATS_SOCKET, str(self.stats_socket)))
        self.output = directory / "haproxy.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> Balancer:
        with open(self.output, "wb") as out:
            self.process = self.host.popen(
                [HAPROXY, "-db", "-f", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        wait_until(
            "haproxy's stats socket", lambda: self.stats_socket.exists() or self.process.poll() is not None
        )
        assert self.process.poll() is None, f"haproxy exited:\n{self.output.read_text()}"
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def command(self, line: str) -> str:
        """One command on haproxy's stats socket; its answer."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            return read_until_closed(sock, timeout=5).decode()

    def stats(self) -> dict[tuple[str, str], dict[str, str]]:
        """`show stat`: a row per (proxy, server), with columns by name (status, scur, stot, ...)."""
        text = self.command("show stat").removeprefix("# ")
        return {(row["pxname"], row["svname"]): row for row in csv.DictReader(text.splitlines()) if row}

    def status(self, server: str) -> set[str]:
        """The status of C{server} in every backend (UP, DOWN, "UP 1/2" going down ...)."""
        return {self.stats()[backend, server]["status"] for backend, _ in LISTENERS.values()}

    def wait_status(self, server: str, wanted: str, timeout: float) -> float:
        """Wait until C{server} has status C{wanted} in every backend; return when it was seen so."""
        try:
            wait_until(f"{server} {wanted}", lambda: self.status(server) == {wanted}, timeout, 0.02)
        except AssertionError as e:
            stats = self.stats()
            checks = {backend: stats[backend, server]["check_desc"] for backend, _ in LISTENERS.values()}
            said = self.output.read_text()
            status = self.status(server)
            raise AssertionError(f"{e}: {status}, checks {checks}; haproxy said:\n{said}") from None
        return time.monotonic()

    def settle(self) -> None:
        """Wait until no client connection is open through haproxy."""
        wait_until(
            "every connection through haproxy closed",
            lambda: all(
                row["scur"] == "0" for (_, sv), row in self.stats().items() if sv.startswith("echod")
            ),
        )


@dataclass
class Site:
    net: netns.Network
    balancer: Balancer
    backends: list[Backend]
    clients: list[netns.Host]

    def entries(self) -> dict[str, list[Entry]]:
        return {backend.host.role: backend.entries() for backend in self.backends}

    def find(self, peers: list[tuple[str, int]], timeout: float = 10) -> dict[tuple[str, int], list]:
        """
        The access log entries of the connections from C{peers} (client host
        and port, as the client saw its own end), as (backend, entry) pairs
        each, once every one of them has been logged (the log is written at
        least every second).
        """
        wanted = set(peers)

        def found() -> dict | None:
            seen: dict[tuple[str, int], list] = {peer: [] for peer in wanted}
            for name, entries in self.entries().items():
                for entry in entries:
                    if entry.peer in seen:
                        seen[entry.peer].append((name, entry))
            return seen if all(seen.values()) else None

        try:
            return wait_until(f"access log lines for {len(wanted)} connections", found, timeout)
        except AssertionError as e:
            seen = {entry.peer for entries in self.entries().values() for entry in entries}
            missing = sorted(wanted - seen)
            # What was logged instead: the lines of connections that came through the balancer.
            lines = [
                f"{name}: {entry}"
                for name, entries in self.entries().items()
                for entry in entries[-200:]
                if entry.via is not None
            ]
            logged = "\n".join(lines[-6:])
            message = f"{e}; missing {len(missing)}, e.g. {missing[:3]}; logged:\n{logged}"
            raise AssertionError(message) from None


def _skip_reason() -> str | None:
    if HAPROXY is None:
        return NO_HAPROXY
    return netns.unavailable()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("haproxy")
    with netns.Network() as net:
        balancer_host = net.host("balancer", 1)
        backend_hosts = [net.host("echod1", 11), net.host("echod2", 12)]
        clients = [net.host("client1", 21), net.host("client2", 22)]
        trusted = f"{balancer_host.ipv4}/32, {balancer_host.ipv6}/128"
        backends = [Backend(host, directory, trusted) for host in backend_hosts]
        for backend in backends:
            backend.start()
        balancer = Balancer(balancer_host, directory, backend_hosts).start()
        try:
            for server in ("echod1", "echod2"):
                balancer.wait_status(server, "UP", timeout=15)
            yield Site(net, balancer, backends, clients)
        finally:
            balancer.stop()
            for backend in backends:
                backend.kill()


@pytest.fixture
def quiet(site: Site) -> Iterator[Site]:
    """The site with both servers up, and no connection left open by the test when it ends."""
    for server in ("echod1", "echod2"):
        site.balancer.wait_status(server, "UP", timeout=15)
    yield site
    site.balancer.settle()


def test_example_is_a_valid_haproxy_configuration_without_warnings():
    if HAPROXY is None:
        pytest.skip(NO_HAPROXY)
    done = subprocess.run([HAPROXY, "-c", "-V", "-f", str(EXAMPLE)], capture_output=True, text=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # A keyword a later haproxy removes is deprecated with a warning first.
    assert "[WARNING]" not in output and "[ALERT]" not in output, output


def request(listener: str, payload: bytes) -> bytes:
    return payload if listener == "echo" else b"%d %s" % (len(payload), payload)


def test_load_through_haproxy_lands_on_both_backends_every_byte_verified(quiet: Site):
    site = quiet
    balancer = site.balancer.host
    sizes = (1, 1000, 65536, 1 << 20)
    made: dict[tuple[str, int], tuple[str, int]] = {}  # client end -> (listener, size)
    for listener, (_, port) in LISTENERS.items():
        for round_ in range(3):
            pairs, payloads = [], []
            # client1 over IPv4, client2 over IPv6, four connections each at once.
            for client, target in ((site.clients[0], balancer.ipv4), (site.clients[1], balancer.ipv6)):
                for i in range(4):
                    payload = os.urandom(sizes[(i + round_) % len(sizes)])
                    sock = connect(client, target, port)
                    made[local_address(sock)] = (listener, len(payload))
                    pairs.append((sock, request(listener, payload)))
                    payloads.append(payload)
            try:
                echoed = exchange(pairs, half_close=True, timeout=30)
            finally:
                for sock, _ in pairs:
                    sock.close()
            for got, payload in zip(echoed, payloads, strict=True):
                assert len(got) == len(payload) and got == payload, f"{listener}: wrong echo"
    logged = site.find(list(made))
    served_by: dict[str, set[str]] = {listener: set() for listener in LISTENERS}
    for peer, found in logged.items():
        listener, size = made[peer]
        assert len(found) == 1, f"{peer} logged {len(found)} times: {found}"
        name, entry = found[0]
        assert (entry.listener, entry.sent) == (listener, size), entry
        served_by[listener].add(name)
    assert served_by == {listener: {"echod1", "echod2"} for listener in LISTENERS}


def test_each_backend_access_log_names_the_client_via_the_balancer(quiet: Site):
    site = quiet
    balancer = site.balancer.host
    ends: dict[tuple[str, int], netns.Host] = {}
    # Held open together, so that least-connections spreads them over both backends.
    with held([]) as socks:
        for client, target in ((site.clients[0], balancer.ipv4), (site.clients[1], balancer.ipv6)) * 3:
            sock = connect(client, target, LISTENERS["echo"][1])
            ends[local_address(sock)] = client
            socks.append(sock)
        echoed = exchange([(sock, b"who am I?") for sock in socks], half_close=True)
    assert echoed == [b"who am I?"] * len(socks)
    names = set()
    for (host, port), found in site.find(list(ends)).items():
        (name, entry), *others = found
        assert not others, found
        client = ends[host, port]
        assert host in (client.ipv4, client.ipv6)
        assert entry.peer == (host, port) and entry.cause == "client", entry
        # The balancer's own end of its connection to the backend: its IPv4
        # address, as the example reaches the backends over IPv4.
        assert entry.via is not None and entry.via[0] == balancer.ipv4, entry
        names.add(name)
    assert names == {"echod1", "echod2"}
    # And IPv6 clients appear as themselves, in brackets.
    text = "".join(backend.access_log.read_text() for backend in site.backends)
    assert f" [{site.clients[1].ipv6}]:" in text


def converse_once(sock: socket.socket, data: bytes) -> bytes:
    """Send C{data} and read until as many bytes came back, or the connection ended."""
    sock.settimeout(10)
    sock.sendall(data)
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while len(got) < len(data) and (chunk := sock.recv(65536)):
            got += chunk
    return got


def test_per_peer_cap_holds_per_client_behind_the_balancer(quiet: Site):
    site = quiet
    target = site.balancer.host.ipv4
    port = LISTENERS["echo"][1]
    first, second = site.clients
    with held([]) as opened:
        # Each backend takes CAP connections from the first client: 2 * CAP in all,
        # each carrying an echo, so each is open at its backend before the next.
        for i in range(2 * CAP):
            sock = connect(first, target, port)
            opened.append(sock)
            assert converse_once(sock, b"held %d" % i) == b"held %d" % i, f"connection {i} not served"
        over = connect(first, target, port)
        opened.append(over)
        refused_end = local_address(over)
        assert converse_once(over, b"one more") == b"", "a connection over the cap was served"
        # The other client is a peer of its own: served, while the first stays at its cap.
        with connect(second, target, port) as other:
            assert converse_once(other, b"another client") == b"another client"
    (_, entry), *others = site.find([refused_end])[refused_end]
    assert not others
    assert entry.cause == "refused-max_connections_per_peer", entry
    assert entry.peer == refused_end and entry.via[0] == site.balancer.host.ipv4, entry


@dataclass
class Attempt:
    started: float
    ended: float
    ok: bool
    error: str = ""


class ConnectionLoop:
    """
    Threads that open connection after connection through the balancer,
    each a 1 KiB echo checked byte for byte, and record how each went.
    """

    def __init__(self, clients: list[tuple[netns.Host, str]], port: int) -> None:
        self.attempts: list[Attempt] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(*pair, port)) for pair in clients]

    def __enter__(self) -> ConnectionLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, client: netns.Host, target: str, port: int) -> None:
        while not self._stop.is_set():
            payload = os.urandom(1024)
            started = time.monotonic()
            try:
                with client.connect(target, port, timeout=5) as sock:
                    sock.sendall(payload)
                    sock.shutdown(socket.SHUT_WR)
                    echoed = read_until_closed(sock, timeout=5)
                ok, error = echoed == payload, f"{len(echoed)} of 1024 bytes echoed"
            except OSError as e:
                ok, error = False, repr(e)
            self.attempts.append(Attempt(started, time.monotonic(), ok, "" if ok else error))

    def since(self, when: float) -> list[Attempt]:
        return [a for a in list(self.attempts) if a.started >= when]

    def wait_for(self, count: int, since: float, timeout: float = 10) -> None:
        wait_until(f"{count} connections through the loop", lambda: len(self.since(since)) >= count, timeout)


def test_killed_backend_is_taken_out_by_health_checks_and_comes_back(quiet: Site, capsys):
    site = quiet
    checks = Checks.of_example()
    balancer, killed = site.balancer, site.backends[0]
    ends = [(site.clients[0], balancer.host.ipv4), (site.clients[1], balancer.host.ipv6)] * 2
    echo_backend = LISTENERS["echo"][0]

    def redispatched() -> int:
        """Connections haproxy took away from echod1 to the other server after a failed connect."""
        return int(balancer.stats()[echo_backend, "echod1"]["wredis"] or 0)

    with ConnectionLoop(ends, LISTENERS["echo"][1]) as loop:
        loop.wait_for(100, since=0)
        before = redispatched()
        killed.kill()  # SIGKILL
        down_from = time.monotonic()
        down_at = balancer.wait_status("echod1", "DOWN", timeout=checks.out_within() + 5)
        moved = redispatched() - before
        loop.wait_for(200, since=down_at)
        killed.start()
        up_from = time.monotonic()
        up_at = balancer.wait_status("echod1", "UP", timeout=30)
        served_before = sum(1 for e in killed.entries() if e.peer[0] != balancer.host.ipv4)
        # Restarted, it takes traffic again.
        wait_until(
            "client connections on the restarted backend",
            lambda: sum(1 for e in killed.entries() if e.peer[0] != balancer.host.ipv4) >= served_before + 20,
        )
    failed = [a for a in loop.attempts if not a.ok]
    window = [a for a in loop.attempts if a.ended >= down_from and a.started < down_at]
    after = loop.since(down_at)
    with capsys.disabled():
        print(
            f"\nfailover: echod1 SIGKILLed under a loop of 4 connections at a time; haproxy had it DOWN"
            f" after {down_at - down_from:.2f}s (inter {checks.inter:g}s, fastinter {checks.fastinter:g}s,"
            f" fall {checks.fall}: at most {checks.inter + (checks.fall - 1) * checks.fastinter:g}s for a"
            f" refused connection); {len(failed)} of {len(window)} connections in that window failed"
            f" ({', '.join(sorted({a.error for a in failed})) or 'none'}), {moved} were refused by the"
            f" dead host and redispatched; {sum(not a.ok for a in after)} of {len(after)} failed after;"
            f" restarted, UP again after {up_at - up_from:.2f}s (rise {checks.rise}, downinter"
            f" {checks.downinter:g}s)"
        )
    assert down_at - down_from <= checks.out_within(), "haproxy took longer than its checks allow"
    assert all(a.started < down_at for a in failed), [a for a in failed if a.started >= down_at]
    assert len(after) >= 200
    assert all(a.ok for a in after)


_made_up_ports = itertools.count(40000)


def forged(site: Site, sender: netns.Host, header: Callable, family: str, payload: bytes) -> tuple:
    """
    Send a PROXY header naming a made-up client (a new port each time), then
    C{payload}, straight to echod1's echo port; return the sender's end, the
    made-up client and what came back.
    """
    backend = site.backends[0].host
    address = backend.ipv4 if family == "ipv4" else backend.ipv6
    made_up = ("198.18.0.99" if family == "ipv4" else "2001:db8:0:63::1", next(_made_up_ports))
    port = LISTENERS["echo"][1]
    with connect(sender, address, port) as sock:
        end = local_address(sock)
        # Refused, the connection may be reset under the sender's feet.
        with contextlib.suppress(OSError):
            sock.sendall(header(made_up, (address, port)) + payload)
            sock.shutdown(socket.SHUT_WR)
        echoed = read_until_closed(sock, timeout=10)
    return end, made_up, echoed


@pytest.mark.parametrize("header", [proxy_v1, proxy_v2], ids=["v1", "v2"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_forged_header_from_outside_trusted_proxies_is_refused(quiet: Site, header, family):
    site = quiet
    end, made_up, echoed = forged(site, site.clients[0], header, family, b"believe me")
    assert echoed == b""
    (_, entry), *others = site.find([end])[end]
    assert not others
    assert entry.cause == "untrusted-proxy" and entry.via is None, entry
    assert not [e for e in site.backends[0].entries() if e.peer == made_up]


@pytest.mark.parametrize("header", [proxy_v1, proxy_v2], ids=["v1", "v2"])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_forged_header_from_a_trusted_proxy_is_believed(quiet: Site, header, family):
    # The balancer's host is trusted: whatever runs there can name any client.
    # trusted_proxies is the admin's statement of whom to believe.
    site = quiet
    end, made_up, echoed = forged(site, site.balancer.host, header, family, b"believe me")
    assert echoed == b"believe me"
    found = site.find([made_up])[made_up]
    assert [(name, entry.via) for name, entry in found] == [("echod1", end)], found
    assert found[0][1].cause == "client"
