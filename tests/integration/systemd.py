"""
Stand-ins for what systemd gives a service, built from the real pieces: a
notification socket that records what the daemon says, and
systemd-socket-activate to pass it listening sockets.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """
    A TCP port that nothing uses right now, on every address (IPv4 and IPv6).

    Chosen below the ephemeral range, which the kernel hands to outgoing
    connections: a port from there (what binding port 0 returns) may become
    the local port of some client's connection before the test binds it, and
    a wildcard bind then fails with "address already in use". C{host} is
    accepted for the callers' sake; the port is free on all addresses.
    """
    high = _ephemeral_start()
    for _ in range(200):
        port = random.randrange(10000, high)
        with socket.socket(socket.AF_INET6) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            try:
                sock.bind(("::", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port found between 10000 and {high}")


@contextlib.contextmanager
def taken_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A TCP port on C{host} that another socket listens on, for as long as the block lasts."""
    with socket.socket() as squatter:
        squatter.bind((host, 0))
        squatter.listen()
        yield squatter.getsockname()[1]


def socket_activate(
    listen: list[str], names: list[str] | None = None, env: tuple[str, ...] = ()
) -> list[str]:
    """The systemd-socket-activate command prefix that listens on C{listen}."""
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        raise RuntimeError("systemd-socket-activate is missing: apt install systemd")
    command = [tool] + [f"--listen={address}" for address in listen]
    if names:
        command.append("--fdname=" + ":".join(names))
    for variable in env:
        command += ["-E", variable]
    return command


class NotifySocket:
    """
    An AF_UNIX datagram socket playing systemd's NOTIFY_SOCKET: every
    message the daemon sends is kept, with when it arrived.
    """

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode("latin-1").splitlines() if "=" in line)
            with self._changed:
                self.messages.append((time.monotonic(), fields))
                self._changed.notify_all()

    def wait_for(
        self, predicate: Callable[[dict[str, str]], bool], after: int = 0, timeout: float = 30
    ) -> tuple[int, dict[str, str]]:
        """The index and fields of the first message from index C{after} on that satisfies C{predicate}."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for index in range(after, len(self.messages)):
                    if predicate(self.messages[index][1]):
                        return index, self.messages[index][1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such notification in {timeout}s; got {self.snapshot()}")
                self._changed.wait(left)

    def snapshot(self) -> list[dict[str, str]]:
        with self._changed:
            return [fields for _, fields in self.messages]

    def times(self, predicate: Callable[[dict[str, str]], bool]) -> list[float]:
        with self._changed:
            return [when for when, fields in self.messages if predicate(fields)]

    def close(self) -> None:
        self._sock.close()
