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

A host may have more links to the switch (L{Network.link}), and a host of the
switch may be a router to hosts on links of their own behind it
(L{Network.behind}: link K is 198.18.K.0/24 and 2001:db8:K::/64):

    router = net.host("router", 254)
    server = net.behind(router, "server", mtu=1280)   # 198.18.1.2, 2001:db8:1::2

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

    def __init__(
        self, network: Network, role: str, number: int, ipv4: str | None = None, ipv6: str | None = None
    ) -> None:
        self.network = network
        self.role = role
        self.netns = f"{network.name}-{role}"
        self.ipv4 = ipv4 or f"{IPV4_NETWORK}.{number}"
        self.ipv6 = ipv6 or f"{IPV6_NETWORK}:{number:x}::1"
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


def link_address(link: int, number: int) -> tuple[str, str]:
    """Host C{number}'s IPv4 and IPv6 addresses on routed link C{link} (see L{Network.behind})."""
    return f"198.18.{link}.{number}", f"2001:db8:{link:x}::{number:x}"


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
        self._numbers: set[int] = set()
        self._links = itertools.count(1)
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

    def _number(self, number: int) -> None:
        """Take host number C{number} of the switch's addresses, or refuse one out of range or taken."""
        if not 1 <= number <= 254 or number in self._numbers:
            raise ValueError(f"host number {number}: 1 to 254, once each")
        self._numbers.add(number)

    def host(self, role: str, number: int) -> Host:
        """A new host, number C{number} (1 to 254) of the network, named C{role} in its namespace's name."""
        self._number(number)
        host = Host(self, role, number)
        self._add_namespace(host.netns)
        self.hosts.append(host)
        self._plug(host, "eth0", number)
        return host

    def _plug(self, host: Host, interface: str, number: int) -> None:
        """Join C{host} to the switch by a new C{interface}, with the addresses of number C{number}."""
        port = f"p{number}"
        # Made with each end in its namespace: no name is ever taken on the machine itself.
        peer = ("peer", "name", port, "netns", self._switch)
        _ip("link", "add", interface, "netns", host.netns, "type", "veth", *peer)
        _ip("link", "set", port, "master", "br0", "up", netns=self._switch)
        # nodad: the address is usable at once, instead of after duplicate address
        # detection's second or so; nothing else on this link can have it.
        _ip("address", "add", f"{IPV4_NETWORK}.{number}/24", "dev", interface, netns=host.netns)
        _ip("address", "add", f"{IPV6_NETWORK}:{number:x}::1/48", "dev", interface, "nodad", netns=host.netns)
        _ip("link", "set", interface, "up", netns=host.netns)

    def link(self, host: Host, interface: str, number: int) -> tuple[str, str]:
        """
        Another link from C{host} to the switch, C{interface}, with the
        addresses of host number C{number} (198.18.0.N, 2001:db8:0:N::1):
        its IPv4 and IPv6 addresses. Routes to the switch's network then go
        through either interface (the first made is the one the kernel
        picks), and each interface answers ARP only for its own address
        (arp_ignore=1, arp_announce=2), as a host on two links of one
        network must if a socket bound to one of them (SO_BINDTODEVICE) is
        to get its answers on it.
        """
        self._number(number)
        host.run(
            ["sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"],
            check=True,
        )
        self._plug(host, interface, number)
        return f"{IPV4_NETWORK}.{number}", f"{IPV6_NETWORK}:{number:x}::1"

    def behind(self, router: Host, role: str, mtu: int | None = None) -> Host:
        """
        A new host on a link of its own behind C{router}, a host of the
        switch that this makes a router (forwarding on): link K (the K-th
        made) is 198.18.K.0/24 and 2001:db8:K::/64, the router 198.18.K.1
        and 2001:db8:K::1 on it, the new host 198.18.K.2 and 2001:db8:K::2,
        its default route through the router, and the link's MTU C{mtu} if
        given (both ends). Every other host made so far routes the link's
        networks through the router.
        """
        link = next(self._links)
        host = Host(self, role, 0, f"198.18.{link}.2", f"2001:db8:{link:x}::2")
        self._add_namespace(host.netns)
        self.hosts.append(host)
        inside, outside = f"eth{link}", "eth0"
        _ip(
            "link",
            "add",
            inside,
            "netns",
            router.netns,
            "type",
            "veth",
            "peer",
            "name",
            outside,
            "netns",
            host.netns,
        )
        for where, interface, address in (
            (router, inside, link_address(link, 1)),
            (host, outside, link_address(link, 2)),
        ):
            # No duplicate address detection for the link-local address either: a router whose
            # link-local address is still tentative delays what it forwards and sends by a second or so.
            where.run(["sysctl", "-qw", f"net.ipv6.conf.{interface}.accept_dad=0"], check=True)
            if mtu is not None:
                _ip("link", "set", interface, "mtu", str(mtu), netns=where.netns)
            _ip("address", "add", f"{address[0]}/24", "dev", interface, netns=where.netns)
            _ip("address", "add", f"{address[1]}/64", "dev", interface, "nodad", netns=where.netns)
            _ip("link", "set", interface, "up", netns=where.netns)
        router.run(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"], check=True)
        gateway = link_address(link, 1)
        _ip("route", "add", "default", "via", gateway[0], netns=host.netns)
        _ip("-6", "route", "add", "default", "via", gateway[1], netns=host.netns)
        for other in self.hosts:
            if other not in (router, host) and other.ipv4.startswith(f"{IPV4_NETWORK}."):
                _ip("route", "add", f"198.18.{link}.0/24", "via", router.ipv4, netns=other.netns)
                _ip("-6", "route", "add", f"2001:db8:{link:x}::/64", "via", router.ipv6, netns=other.netns)
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
