"""
Hosts for tests, each a network namespace of its own, on one switch.

    with Network() as net:
        balancer = net.host("balancer", 1)       # 198.18.0.1, 2001:db8:0:1::1
        backend = net.host("backend", 11)
        backend.popen(["python3", "-m", "echod", ...])   # runs inside it
        sock = balancer.connect(backend.ipv4, 7)          # a socket of the balancer

The switch is a bridge in a namespace of its own, and each host is joined to
it by a veth pair, so nothing of the test network touches the machine's own
interfaces. Addresses come from the benchmarking ranges: 198.18.0.0/24
(RFC 2544's 198.18.0.0/15) and 2001:db8::/48 (RFC 3849's 2001:db8::/32), host
N having 198.18.0.N and 2001:db8:0:N::1. All of the /48 is on the link, so
that hosts talk directly over IPv6 too, yet each host is alone in its /64,
which is what a per-peer cap counts as one IPv6 host by default.

Namespaces are named C{echod-PID-N-ROLE}, unique on the machine; closing the
network kills the processes started in it and deletes every namespace, the
veth pairs and the bridge with them, whatever happened. Namespaces left by a
test run that was killed outright (its PID no longer running) are deleted
when the next network is made.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

NETNS_DIR = Path("/run/netns")
PREFIX = "echod"
IPV4_NETWORK = "198.18.0"
IPV6_NETWORK = "2001:db8:0"

_networks = itertools.count()
_STALE = re.compile(rf"^{PREFIX}-(\d+)-")


def unavailable() -> str | None:
    """Why hosts in network namespaces cannot be made here, or C{None} if they can."""
    if os.geteuid() != 0:
        return "needs root: makes network namespaces and veth pairs (ip netns)"
    if shutil.which("ip") is None:
        return "needs ip (iproute2) for network namespaces"
    probe = f"{PREFIX}-{os.getpid()}-probe"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"ip netns does not work here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True)
    return None


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def _alive(pid: int) -> bool:
    """Whether process C{pid} runs (a zombie, killed but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def remove_stale() -> None:
    """Delete the namespaces of test runs that are no longer running."""
    if not NETNS_DIR.is_dir():
        return
    for entry in NETNS_DIR.iterdir():
        match = _STALE.match(entry.name)
        if match and not _alive(int(match[1])):
            subprocess.run(["ip", "netns", "delete", entry.name], capture_output=True)


_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    # os.setns exists from Python 3.12 only; Debian 12 has 3.11, hence libc's.
    if hasattr(os, "setns"):
        os.setns(fd, _CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


class Host:
    """
    One host: a network namespace with C{lo} and C{eth0} up and one IPv4 and
    one IPv6 address on C{eth0}.

    Sockets it makes (L{socket}, L{connect}) belong to its namespace and can
    then be used from any thread: a socket stays in the namespace it was
    made in. They are made by a thread that lives in the namespace
    (C{setns} moves only the calling thread), so the test process itself
    never leaves its own.
    """

    def __init__(self, network: Network, role: str, number: int) -> None:
        self.network = network
        self.role = role
        self.netns = f"{network.name}-{role}"
        self.ipv4 = f"{IPV4_NETWORK}.{number}"
        self.ipv6 = f"{IPV6_NETWORK}:{number:x}::1"
        self._inside: ThreadPoolExecutor | None = None

    def command(self, argv: Sequence[str]) -> list[str]:
        """C{argv} as run inside this host (C{ip netns exec} execs it: the PID is the command's)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(self, argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
        """Run C{argv} inside this host to its end (subprocess.run's keywords)."""
        return subprocess.run(self.command(argv), **kwargs)

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start C{argv} inside this host; the network kills it, if still running, when it closes."""
        process = subprocess.Popen(self.command(argv), **kwargs)
        self.network.processes.append(process)
        return process

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A new socket in this host's namespace."""
        if self._inside is None:
            fd = os.open(NETNS_DIR / self.netns, os.O_RDONLY | os.O_CLOEXEC)
            self._inside = ThreadPoolExecutor(1, f"netns-{self.role}", _enter, (fd,))
        return self._inside.submit(socket.socket, family, kind).result()

    def connect(self, host: str, port: int, timeout: float = 10, source_port: int = 0) -> socket.socket:
        """
        A TCP connection from this host to C{host}:C{port}, with TCP_NODELAY,
        from C{source_port} if given (else one the kernel picks).
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = self.socket(family)
        try:
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if source_port:
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", source_port))
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        if self._inside is not None:
            self._inside.shutdown()
            self._inside = None


def _enter(fd: int) -> None:
    try:
        _setns(fd)
    finally:
        os.close(fd)


class Network:
    """
    A switch and the hosts on it; a context manager that removes all of it,
    and stops what runs in it, on exit.
    """

    def __init__(self) -> None:
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        remove_stale()
        self.name = f"{PREFIX}-{os.getpid()}-{next(_networks)}"
        self.hosts: list[Host] = []
        self.processes: list[subprocess.Popen] = []
        self._namespaces: list[str] = []
        self._switch = f"{self.name}-switch"
        try:
            self._add_namespace(self._switch)
            _ip("link", "add", "br0", "type", "bridge", netns=self._switch)
            _ip("link", "set", "br0", "up", netns=self._switch)
        except BaseException:
            self.close()
            raise

    def _add_namespace(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("link", "set", "lo", "up", netns=name)

    def host(self, role: str, number: int) -> Host:
        """A new host, number C{number} (1 to 254) of the network, named C{role} in its namespace's name."""
        if not 1 <= number <= 254 or any(number == int(h.ipv4.rsplit(".", 1)[1]) for h in self.hosts):
            raise ValueError(f"host number {number}: 1 to 254, once each")
        host = Host(self, role, number)
        port = f"p{number}"
        self._add_namespace(host.netns)
        self.hosts.append(host)
        # Made with each end in its namespace: no name is ever taken on the machine itself.
        peer = ("peer", "name", port, "netns", self._switch)
        _ip("link", "add", "eth0", "netns", host.netns, "type", "veth", *peer)
        _ip("link", "set", port, "master", "br0", "up", netns=self._switch)
        # nodad: the address is usable at once, instead of after duplicate address
        # detection's second or so; nothing else on this link can have it.
        _ip("address", "add", f"{host.ipv4}/24", "dev", "eth0", netns=host.netns)
        _ip("address", "add", f"{host.ipv6}/48", "dev", "eth0", "nodad", netns=host.netns)
        _ip("link", "set", "eth0", "up", netns=host.netns)
        return host

    def close(self) -> None:
        """Kill every process in the hosts, and delete every namespace (with its links)."""
        for name in self._namespaces:
            # Whatever runs there, started through popen or not: a namespace with a
            # process in it would outlive its deletion.
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
            for pid in map(int, pids.split()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for process in self.processes:
            process.wait()
        for host in self.hosts:
            host.close()
        errors = []
        for name in reversed(self._namespaces):
            done = subprocess.run(["ip", "netns", "delete", name], capture_output=True, text=True)
            if done.returncode != 0:
                errors.append(f"{name}: {done.stderr.strip()}")
        self._namespaces = []
        if errors:
            raise RuntimeError("could not delete namespaces: " + "; ".join(errors))

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
