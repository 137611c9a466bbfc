"""
The servers the benchmark compares, and how to start, watch and stop one.

Every Python server runs on the interpreter that runs the benchmark (the project's virtualenv), so
echod and its comparators use the same Python and the same Twisted. Memory figures come from
/proc/PID/status; the load generator reads the server's CPU time itself, over its measured window.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench"
#: uvloop is installed here by `make bench`, not into the virtualenv the tests use.
PYLIB = BUILD / "pylib"

_notify_sockets = itertools.count()
# "echo: echo/tcp listening on 127.0.0.1:PORT" from echod, "listening on 127.0.0.1:PORT" from the others.
LISTENING = re.compile(r"(?:(?P<name>\S+): \S+/(?:tcp|udp) )?listening on 127\.0\.0\.1:(?P<port>\d+)")
#: The UDP rates of the benchmark's echod: the highest the configuration takes (echod/config.py), far
#: above anything this machine echoes (a C recvfrom/sendto echo: about 0.5 M datagrams/s), so that
#: they never bind and the figures are echod's own.
UDP_RATES = {"datagram_rate_per_peer": "10000000", "datagram_rate": "10000000", "byte_rate": "1T"}
UDP_SECTION = "[listener:udp-echo]"
METRICS = re.compile(r"metrics: serving Prometheus metrics at (?P<url>http://\S+)")


@dataclass(frozen=True)
class Kind:
    """One server program: how to run it and which line says it is ready."""

    key: str
    label: str
    argv: tuple[str, ...]
    ready: str = "listening on"
    pythonpath: str | None = None
    #: How many sd_notify READY=1 messages say it is ready (one per echod process), if it sends them.
    notifies: int = 0
    #: Scrape the metrics it serves this often (seconds), as Prometheus would, for as long as it runs.
    scrape_every: float | None = None
    #: What the load generator needs besides: -x to begin each connection with a PROXY v2 header.
    loadgen_args: tuple[str, ...] = ()
    #: The announced port that serves UDP echo, for a UDP server: echod names it by its listener.
    udp_port: str = "echo"


def echod_config(
    root: Path = ROOT, name: str = "echod.conf", metrics: bool = False, proxy: bool = False, udp: bool = False
) -> Path:
    """
    The shipped etc/echod.conf (of the checkout at C{root}) with every port set to 0 (a free
    port), every address set to 127.0.0.1, so that the benchmark exposes nothing beyond this
    machine and all servers use IPv4 sockets, and the access log (on, as shipped) kept in
    build/bench. Everything else, the connection caps included, stays as shipped. With
    C{metrics}, the metrics are served on 127.0.0.1, a free port. With C{proxy}, every listener
    wants a PROXY header (proxy_protocol = yes; trusted_proxies as shipped, which trusts loopback).
    With C{udp}, the shipped file's commented-out UDP echo listener is served, its rates raised to
    L{UDP_RATES} and its other protections (blocked_source_ports, the checks of every source) as
    shipped.
    """
    text = (root / "etc" / "echod.conf").read_text()
    if udp:
        text = with_udp_listener(text)
    if metrics:
        text, found = re.subn(r"(?m)^#metrics = .+$", "metrics = 127.0.0.1:0", text)
        if found != 1:
            raise SystemExit("bench: etc/echod.conf no longer has one '#metrics =' line")
    text = re.sub(r"(?m)^access_log = .+$", f"access_log = {BUILD / 'access.log'}", text)
    text, ports = re.subn(r"(?m)^port = \d+$", "port = 0", text)
    text, addresses = re.subn(r"(?m)^address = \S+$", "address = 127.0.0.1", text)
    if not ports or ports != addresses:
        raise SystemExit("bench: etc/echod.conf no longer has one 'port =' and 'address =' per listener")
    if proxy:
        text = re.sub(r"(?m)^proxy_protocol = .*\n", "", text)
        text = re.sub(r"(?m)^port = 0$", "port = 0\nproxy_protocol = yes", text)
    path = BUILD / name
    path.write_text(text)
    return path


def udp_section(lines: list[str]) -> tuple[int, int] | None:
    """Where the UDP listener's section is among C{lines}: from its header to the next blank line."""
    for start, line in enumerate(lines):
        if line.rstrip("\n") in (UDP_SECTION, f"#{UDP_SECTION}"):
            end = start
            while end < len(lines) and lines[end].strip():
                end += 1
            return start, end
    return None


def has_udp_listener(root: Path) -> bool:
    """Whether the etc/echod.conf of the checkout at C{root} has the UDP echo listener, served or not."""
    return udp_section((root / "etc" / "echod.conf").read_text().splitlines(keepends=True)) is not None


def with_udp_listener(text: str) -> str:
    """
    C{text} with its UDP listener served (uncommented, as the shipped file has it commented out) and
    its rates set to L{UDP_RATES}.
    """
    lines = text.splitlines(keepends=True)
    where = udp_section(lines)
    if where is None:
        raise SystemExit(f"bench: etc/echod.conf no longer has a {UDP_SECTION} section")
    start, end = where
    section = "".join(lines[start:end])
    if section.startswith("#"):
        section = "".join(line.removeprefix("#") for line in lines[start:end])
    for key, value in UDP_RATES.items():
        section, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", section)
        if not found:
            section += f"{key} = {value}\n"
    return "".join(lines[:start]) + section + "".join(lines[end:])


def echod_kind(key: str, label: str, config: Path, pythonpath: str | None = None, **more) -> Kind:
    """echod itself (`echod run`) on C{config}, ready at its sd_notify READY=1."""
    # -P: without it, `python -m` puts the working directory (the checkout) ahead of PYTHONPATH on
    # sys.path, and "echod at REF" ran the checkout's echod, not REF's: every baseline was an A/A pair.
    argv = (sys.executable, "-P", "-m", "echod", "run", "-c", str(config))
    return Kind(key, label, argv, "echod serving", pythonpath=pythonpath, notifies=1, **more)


#: The A/A pair: a second echod, the very same code and configuration as "echod", started afresh and
#: rotated like every other server. "echod / echod (again)" is this machine's noise.
AGAIN = "echod-again"


def kinds(baseline: tuple[str, Path] | None = None, again: bool = False) -> list[Kind]:
    """
    The comparators, echod first; uvloop only if `make bench` could install it; with C{baseline}
    (a commit and a checkout of it), echod as it was at that commit, on the same interpreter and
    Twisted, so that what a change costs is a ratio measured in one run.
    """
    py = sys.executable
    config = echod_config()
    found = [echod_kind("echod", "echod", config)]
    if again:
        found.append(echod_kind(AGAIN, "echod (again)", config))
    if baseline is not None:
        ref, checkout = baseline
        base = echod_config(checkout, "echod-base.conf")
        found.append(echod_kind("echod-base", f"echod at {ref}", base, str(checkout)))
    found += [
        echod_kind(
            "echod-metrics",
            "echod, metrics scraped every 1 s",
            echod_config(name="echod-metrics.conf", metrics=True),
            scrape_every=1.0,
        ),
        echod_kind(
            "echod-proxy",
            "echod, PROXY v2",
            echod_config(name="echod-proxy.conf", proxy=True),
            loadgen_args=("-x",),
        ),
        Kind(
            "echod-2",
            "echod, 2 workers (reuse_port)",
            (py, str(ROOT / "bench" / "echod_workers.py"), "2", str(echod_config())),
            "echod serving",
            notifies=2,
        ),
        Kind("twisted", "plain Twisted", (py, str(ROOT / "bench" / "twisted_echo.py"))),
        Kind(
            "twisted-hc", "half-close Twisted", (py, str(ROOT / "bench" / "twisted_echo.py"), "--half-close")
        ),
        Kind("asyncio", "asyncio", (py, str(ROOT / "bench" / "asyncio_echo.py"))),
    ]
    if (PYLIB / "uvloop").is_dir():
        found.append(
            Kind(
                "uvloop",
                "uvloop",
                (py, str(ROOT / "bench" / "asyncio_echo.py"), "--uvloop"),
                pythonpath=str(PYLIB),
            )
        )
    found.append(Kind("cecho", "C epoll", (str(BUILD / "cecho"),)))
    if shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin"):
        found.append(
            Kind(
                "haproxy",
                "haproxy, 2 echod",
                (py, str(ROOT / "bench" / "haproxy_echod.py"), str(echod_config())),
                "haproxy ready",
            )
        )
    return found


def udp_kinds(baseline: tuple[str, Path] | None = None, again: bool = False) -> list[Kind]:
    """
    The UDP echo servers, echod first: echod's UDP listener (L{echod_config} with C{udp}), and the A/A
    pair and echod at C{baseline} as for TCP (the baseline only if its configuration has that listener);
    the tutorial's Twisted C{DatagramProtocol}; a C recvfrom/sendto loop, the ceiling.
    """
    config = echod_config(name="echod-udp.conf", udp=True)
    found = [echod_kind("echod", "echod", config, udp_port="udp-echo")]
    if again:
        found.append(echod_kind(AGAIN, "echod (again)", config, udp_port="udp-echo"))
    if baseline is not None and has_udp_listener(baseline[1]):
        ref, checkout = baseline
        base = echod_config(checkout, "echod-base-udp.conf", udp=True)
        found.append(echod_kind("echod-base", f"echod at {ref}", base, str(checkout), udp_port="udp-echo"))
    found += [
        Kind("twisted", "plain Twisted", (sys.executable, str(ROOT / "bench" / "twisted_echo.py"), "--udp")),
        Kind("udpecho", "C recvfrom/sendto", (str(BUILD / "udpecho"),)),
    ]
    return found


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    """C{argv} run on core C{cpu} only, if one is given."""
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


@dataclass
class Server:
    """A running server process, its output, and the ports it announced."""

    kind: Kind
    cpu: int | None = None
    ports: dict[str, int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    ready_s: float = 0.0
    process: subprocess.Popen | None = None
    #: The processes that serve, when they are not the one started (bench/echod_workers.py).
    workers: tuple[int, ...] = ()
    #: Where it serves its metrics, if it does, and how many scrapes of them succeeded.
    metrics_url: str | None = None
    scrapes: int = 0
    _notify: socket.socket | None = None
    _stop_scraping: threading.Event = field(default_factory=threading.Event)

    def start(self, timeout: float = 30) -> Server:
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID")}
        env["PYTHONPATH"] = self.kind.pythonpath or str(ROOT)
        argv = pinned(list(self.kind.argv), self.cpu)
        ready = threading.Event()
        notified = self._listen_for_ready(env)
        started = time.monotonic()
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self._read, args=(ready, started), daemon=True).start()
        if not ready.wait(timeout) or not self.ready_s:
            self.stop()
            raise RuntimeError(f"{self.kind.label} did not get ready:\n" + "\n".join(self.lines))
        if notified is not None:
            try:
                self.ready_s = notified.result(timeout) - started
            except (TimeoutError, OSError) as e:
                self.stop()
                raise RuntimeError(f"{self.kind.label} sent no READY=1: {e}") from e
        if self.kind.scrape_every:
            if self.metrics_url is None:
                self.stop()
                raise RuntimeError(f"{self.kind.label} did not say where its metrics are")
            threading.Thread(target=self._scrape, daemon=True).start()
        return self

    def _scrape(self) -> None:
        """GET the metrics every C{scrape_every} seconds, as Prometheus does, until stopped."""
        while not self._stop_scraping.wait(self.kind.scrape_every):
            try:
                with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
                    response.read()
                self.scrapes += 1
            except OSError as e:
                if not self._stop_scraping.is_set():  # not the server stopping under a scrape
                    self.lines.append(f"bench: warn scrape failed: {e}")

    def _listen_for_ready(self, env: dict[str, str]) -> Future | None:
        """
        For a server that sends sd_notify messages: a socket in C{env}'s NOTIFY_SOCKET, and a future
        for when the last of its C{notifies} READY=1 came, as time.monotonic(). The socket is in the
        abstract namespace ("@" for sd_notify), so nothing is left behind in the file system.
        """
        if not self.kind.notifies:
            return None
        name = f"echod-bench-{os.getpid()}-{next(_notify_sockets)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind("\0" + name)
        except OSError:
            sock.close()
            raise
        env["NOTIFY_SOCKET"] = "@" + name
        self._notify = sock
        when: Future = Future()

        def receive() -> None:
            with sock:
                try:
                    readies = 0
                    while readies < self.kind.notifies:
                        message = sock.recv(4096)
                        if not message:  # shut down by stop()
                            raise OSError("stopped before it was ready")
                        readies += b"READY=1" in message.split(b"\n")
                    when.set_result(time.monotonic())
                except OSError as e:
                    when.set_exception(e)

        threading.Thread(target=receive, daemon=True).start()
        return when

    def _read(self, ready: threading.Event, started: float) -> None:
        for raw in self.process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if line.startswith("pids: "):
                self.workers = tuple(int(pid) for pid in line[6:].split(","))
            match = LISTENING.search(line)
            if match:
                self.ports[match["name"] or "echo"] = int(match["port"])
            match = METRICS.search(line)
            if match:
                self.metrics_url = match["url"]
            if self.kind.ready in line and not ready.is_set():
                self.ready_s = time.monotonic() - started
                ready.set()
        ready.set()  # the server exited: no need to wait any longer

    def stop(self) -> None:
        """Stop the server and whatever it started (its own process group), by force after 10 s."""
        self._stop_scraping.set()
        if self._notify is not None:
            with contextlib.suppress(OSError):  # wakes the thread waiting on it, if it still waits
                self._notify.shutdown(socket.SHUT_RDWR)
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        # Workers (bench/echod_workers.py) would outlive a wrapper that did not stop them in time.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    @property
    def pid(self) -> str:
        """The serving process, or the comma-separated list of them, as the load generator takes it."""
        return ",".join(map(str, self.workers or (self.process.pid,)))

    def memory_kib(self, key: str) -> int:
        """A line of /proc/PID/status in KiB, summed over the serving processes: VmRSS now, or VmHWM."""
        total = 0
        for pid in self.pid.split(","):
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
        return total

    def reset_peak(self) -> None:
        """Restart VmHWM from the current RSS (proc(5), clear_refs value 5)."""
        for pid in self.pid.split(","):
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")

    def complaints(self) -> list[str]:
        """Lines logged at warning level or above (echod's log format)."""
        return [line for line in self.lines if re.search(r"\s(warn|error|critical)\s", line)]
