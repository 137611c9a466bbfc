"""
Sockets inherited from systemd (sd_listen_fds(3)), and which listener each
one belongs to.

The environment is parsed here, once, rather than by Twisted: Twisted's
systemd endpoint parser reads and deletes C{LISTEN_PID}/C{LISTEN_FDS} when
C{twisted.internet.endpoints} is first imported (twistd's own plugins import
it before any application file runs), and before 22.10 it knows nothing of
C{LISTEN_FDNAMES}. So C{echod run} calls L{capture} before it starts twistd,
and L{inherited_sockets} falls back to what Twisted kept when the
application file was started by plain twistd.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass

from echod._twisted import twisteds_systemd_descriptors
from echod.addresses import host_port
from echod.config import ListenerSettings

#: The first inherited descriptor, SD_LISTEN_FDS_START.
LISTEN_FDS_START = 3

#: What an admin runs so that systemd's sockets follow /etc/echod.conf again.
APPLY_SOCKETS = "systemctl daemon-reload && systemctl restart echod.socket"

_KINDS = {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp"}


@dataclass(frozen=True)
class InheritedSocket:
    """One listening socket passed by systemd, as the kernel describes it."""

    sock: socket.socket
    name: str | None
    transport: str | None
    address: str | None
    port: int | None

    def describe(self) -> str:
        """E.g. C{tcp [::]:7 (fd 3, named echod.socket)}."""
        where = (
            f"{self.transport or 'unknown'} {host_port(self.address, self.port)}"
            if self.address
            else "non-IP socket"
        )
        named = f", named {self.name}" if self.name else ""
        return f"{where} (fd {self.sock.fileno()}{named})"


def _describe_fd(fd: int, name: str | None) -> InheritedSocket:
    flags = fcntl.fcntl(fd, fcntl.F_GETFD)
    fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
    sock = socket.socket(fileno=fd)
    address = port = None
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host, port = sock.getsockname()[:2]
        address = ipaddress.ip_address(host).compressed
    return InheritedSocket(sock, name, _KINDS.get(sock.type), address, port)


def listen_fds(environ: MutableMapping[str, str], pid: int | None = None) -> list[InheritedSocket]:
    """
    The sockets systemd passed to this process, per sd_listen_fds(3): only if
    C{LISTEN_PID} is this process; names from C{LISTEN_FDNAMES} when it has
    one per descriptor. The variables are removed from C{environ}, so that
    nothing else adopts the same descriptors.
    """
    pid = os.getpid() if pid is None else pid
    try:
        mine = int(environ.get("LISTEN_PID", "")) == pid
        count = int(environ.get("LISTEN_FDS", "")) if mine else 0
    except ValueError:
        mine, count = False, 0
    names: Sequence[str | None] = environ.get("LISTEN_FDNAMES", "").split(":")
    if mine:
        for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            environ.pop(variable, None)
    if len(names) != count:
        names = [None] * count
    return [_describe_fd(LISTEN_FDS_START + i, names[i]) for i in range(count)]


_captured: list[InheritedSocket] | None = None


def capture(environ: MutableMapping[str, str] | None = None) -> list[InheritedSocket]:
    """Take the inherited sockets from the environment, once per process."""
    global _captured
    if _captured is None:
        _captured = listen_fds(os.environ if environ is None else environ)
    return _captured


def inherited_sockets() -> list[InheritedSocket]:
    """The inherited sockets, whoever took them from the environment first."""
    found = capture()
    if found:
        return found
    return [_describe_fd(fd, name) for fd, name in twisteds_systemd_descriptors().items()]


def match(
    listeners: Sequence[ListenerSettings], sockets: Sequence[InheritedSocket]
) -> tuple[dict[str, InheritedSocket], list[InheritedSocket]]:
    """
    Pair listeners with inherited sockets: by name (C{FileDescriptorName=}
    equal to the listener's name) first, then by transport and bound
    address. Return the pairs by listener name, and the sockets left over.
    """
    left = list(sockets)
    pairs: dict[str, InheritedSocket] = {}
    for same in (_same_name, _same_address):
        for listener in listeners:
            if listener.name in pairs:
                continue
            for candidate in left:
                if same(listener, candidate):
                    pairs[listener.name] = candidate
                    left.remove(candidate)
                    break
    return pairs, left


def _same_name(listener: ListenerSettings, sock: InheritedSocket) -> bool:
    return sock.name == listener.name and sock.transport == listener.transport


def _same_address(listener: ListenerSettings, sock: InheritedSocket) -> bool:
    return (sock.transport, sock.address, sock.port) == (listener.transport, listener.address, listener.port)
