"""
One haproxy in front of two echod processes, all on this machine, for the balancer figure of the
benchmark: the shipped examples/haproxy.cfg (mode tcp, leastconn, send-proxy-v2, health checks), its
servers pointed at two echod with proxy_protocol = yes.

    python bench/haproxy_echod.py CONFIG

Each echod runs a copy of CONFIG (its ports 0: free ones) with proxy_protocol = yes on its TCP
listeners; trusted_proxies keeps its default, loopback. haproxy runs the example with its frontends on
free loopback ports and its stats socket in build/bench; the example's chroot, user, group and daemon
lines are left out, so that it runs in the foreground as whoever runs the benchmark, and so are its
syslog targets: a line per connection would be measured without the syslog daemon that takes it.
Prints "pids: H,A,B" (haproxy and the two echod: the load generator sums their CPU time), a "listening
on" line per frontend, then "haproxy ready" once haproxy's checks have both servers up; SIGTERM stops
them all.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "bench"
EXAMPLE = ROOT / "examples" / "haproxy.cfg"
#: The example's servers, by address: which echod each stands for.
EXAMPLE_SERVERS = ("192.0.2.11", "192.0.2.12")
#: The example's frontends' ports, by the echod listener behind them.
FRONTENDS = {7: "echo", 50007: "bytecount"}
LISTENING = re.compile(r"(?P<name>\S+): \S+/tcp listening on 127\.0\.0\.1:(?P<port>\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proxied(config: Path, name: str) -> Path:
    """A copy of C{config} with proxy_protocol = yes on every listener."""
    text = re.sub(r"(?m)^proxy_protocol = .*\n", "", config.read_text())
    text = re.sub(r"(?m)^port = 0$", "port = 0\nproxy_protocol = yes", text)
    path = BUILD / name
    path.write_text(text)
    return path


def start_echod(config: Path) -> tuple[subprocess.Popen, dict[str, int]]:
    """An echod on C{config}; its listeners' ports, once it serves."""
    echod = subprocess.Popen(
        [sys.executable, "-m", "echod", "run", "-c", str(config)], stdout=subprocess.PIPE, text=True
    )
    ports = {}
    for line in echod.stdout:
        match = LISTENING.search(line)
        if match:
            ports[match["name"]] = int(match["port"])
        if "echod serving" in line:
            return echod, ports
    raise SystemExit(f"echod on {config} exited before serving")


def haproxy_config(servers: list[dict[str, int]], frontends: dict[int, int], stats: Path) -> Path:
    text = EXAMPLE.read_text()
    text = re.sub(r"(?m)^\s*(chroot|user|group|daemon|log /dev/log)\b.*\n", "", text)
    text = text.replace("/run/haproxy/admin.sock", str(stats))
    for example, ports in zip(EXAMPLE_SERVERS, servers, strict=True):
        for port, listener in FRONTENDS.items():
            text = text.replace(f" {example}:{port}\n", f" 127.0.0.1:{ports[listener]}\n")
    for port, free in frontends.items():
        text, count = re.subn(rf"(?m)^(\s*bind )\S*:{port}\b.*$", rf"\g<1>127.0.0.1:{free}", text)
        if count != 1:
            raise SystemExit(f"{EXAMPLE}: no single 'bind' line for port {port}")
    path = BUILD / "haproxy.cfg"
    path.write_text(text)
    return path


def all_up(stats: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(stats))
            sock.sendall(b"show stat\n")
            text = b"".join(iter(lambda: sock.recv(65536), b"")).decode()
    except OSError:
        return False
    rows = csv.DictReader(text.removeprefix("# ").splitlines())
    rows = [r for r in rows if r["svname"].startswith("echod")]
    return len(rows) == 2 * len(FRONTENDS) and all(r["status"] == "UP" for r in rows)


def main() -> None:
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if haproxy is None:
        raise SystemExit("haproxy is not installed")
    config = Path(sys.argv[1])
    echods = [start_echod(proxied(config, f"echod-proxied-{i}.conf")) for i in (1, 2)]
    frontends = {port: free_port() for port in FRONTENDS}
    stats = BUILD / "haproxy.sock"
    stats.unlink(missing_ok=True)
    balanced = haproxy_config([ports for _, ports in echods], frontends, stats)
    balancer = subprocess.Popen([haproxy, "-db", "-f", str(balanced)])
    children = [balancer] + [e for e, _ in echods]
    signal.signal(signal.SIGTERM, lambda *_: [c.terminate() for c in children])
    print("pids: " + ",".join(str(c.pid) for c in children), flush=True)
    for port, free in frontends.items():
        print(f"{FRONTENDS[port]}: {FRONTENDS[port]}/tcp listening on 127.0.0.1:{free}", flush=True)
    deadline = time.monotonic() + 20
    while not all_up(stats):
        if time.monotonic() > deadline or balancer.poll() is not None:
            raise SystemExit("haproxy did not get both servers up within 20 s")
        time.sleep(0.05)  # polling haproxy's own account of its checks
    print("haproxy ready", flush=True)
    for echod, _ in echods:
        echod.stdout.close()  # their later lines are not needed; nothing blocks on a closed pipe
    for child in children:
        child.wait()
    os._exit(0)


if __name__ == "__main__":
    main()
