"""
Listening sockets that echod binds itself.

echod creates its sockets rather than letting Twisted's C{listenTCP} do it,
so that it controls dual-stack binding, explains failures in terms an admin
can act on, and hands Twisted an already-bound socket exactly as it would
hand over one inherited from systemd.
"""

from __future__ import annotations

import errno
import resource
import socket

from echod.addresses import host_port
from echod.sockopts import SO_RCVBUFFORCE

#: The listen(2) backlog. The kernel caps it at net.core.somaxconn.
BACKLOG = 4096
#: The receive buffer asked for the UDP sockets echod binds, unless receive_buffer says otherwise.
DATAGRAM_BUFFER = 4 << 20


def raise_fd_limit() -> int:
    """
    Raise the soft limit on open files to the hard one, and return it.

    Every connection is a descriptor, and the soft limit is often 1024: too
    few for the default max_connections. The soft limit is low by default
    only for programs that use select(2); Twisted's epoll reactor does not.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class BindError(Exception):
    """A listening socket could not be created; the text says what to do."""

    @property
    def not_permitted(self) -> bool:
        """Whether the system refused permission (a privileged port), which no retry cures."""
        cause = self.__cause__
        return isinstance(cause, OSError) and cause.errno in (errno.EACCES, errno.EPERM)

    @property
    def address_in_use(self) -> bool:
        """Whether another socket holds the address (EADDRINUSE)."""
        cause = self.__cause__
        return isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024


def describe_bind_failure(error: OSError, address: str, port: int, kind: str = "tcp") -> str:
    """Turn a failed bind(2) into a sentence that says what to do about it."""
    where = f"{kind} {host_port(address, port)}"
    if error.errno in (errno.EACCES, errno.EPERM) and port < _unprivileged_port_start():
        return (
            f"cannot listen on {where}: port {port} is privileged (below "
            f"{_unprivileged_port_start()}). Use systemd socket activation (echod.socket), "
            "run with CAP_NET_BIND_SERVICE, or choose a port of 1024 or more in the configuration"
        )
    if error.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the address is already in use by another socket "
            f"(see: ss -lnp 'sport = :{port}'); stop that program or choose another port"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {address} is not an address of this host; check 'address'"
    return f"cannot listen on {where}: {error.strerror or error}"


def _bind(kind: int, address: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = None
    try:
        # Inside the try: socket() fails too, e.g. with EMFILE.
        sock = socket.socket(family, kind)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if address == "::" else 1)
        if kind == socket.SOCK_DGRAM:
            # Room to queue a burst instead of dropping honest datagrams behind
            # it; the kernel caps this at net.core.rmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, DATAGRAM_BUFFER)
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        if sock is not None:
            sock.close()
        name = "tcp" if kind == socket.SOCK_STREAM else "udp"
        raise BindError(describe_bind_failure(e, address, port, name)) from e
    return sock


def bind_stream(address: str, port: int, reuse_port: bool = False) -> socket.socket:
    """
    Create a non-blocking TCP socket listening on C{address}, C{port}.

    C{::} listens on every IPv4 and IPv6 address regardless of the host's
    net.ipv6.bindv6only default. With C{reuse_port} (SO_REUSEPORT), other
    processes may bind the same port and the kernel spreads connections
    over them all.

    @raise BindError: with an explanation, if it cannot.
    """
    return _bind(socket.SOCK_STREAM, address, port, reuse_port)


def bind_datagram(address: str, port: int, reuse_port: bool = False) -> socket.socket:
    """
    Create a non-blocking UDP socket bound to C{address}, C{port}; C{::} and
    C{reuse_port} as for L{bind_stream}.

    @raise BindError: with an explanation, if it cannot.
    """
    return _bind(socket.SOCK_DGRAM, address, port, reuse_port)


def rmem_max() -> int | None:
    """net.core.rmem_max: the largest receive buffer a process without CAP_NET_ADMIN may ask for."""
    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """
    Ask for a receive buffer of C{size} bytes on C{sock}, beyond
    net.core.rmem_max if the process may (CAP_NET_ADMIN: SO_RCVBUFFORCE, as
    systemd's ReceiveBuffer= does), and return what the kernel then reports
    (SO_RCVBUF): twice what it granted, the other half being its own
    bookkeeping (socket(7)). Less than C{2 * size} means it was capped.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return receive_buffer(sock)


def receive_buffer(sock: socket.socket) -> int:
    """C{sock}'s receive buffer as the kernel reports it (SO_RCVBUF)."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
