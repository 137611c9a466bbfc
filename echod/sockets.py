"""
Listening sockets that echod binds itself.

echod creates its sockets rather than letting Twisted's C{listenTCP} do it,
so that it controls dual-stack binding, explains failures in terms an admin
can act on, and hands Twisted an already-bound socket exactly as it would
hand over one inherited from systemd.
"""

from __future__ import annotations

import errno
import socket

#: The listen(2) backlog. The kernel caps it at net.core.somaxconn.
BACKLOG = 4096


class BindError(Exception):
    """A listening socket could not be created; the text says what to do."""


def _unprivileged_port_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024


def describe_bind_failure(error: OSError, address: str, port: int, kind: str = "tcp") -> str:
    """Turn a failed bind(2) into a sentence that says what to do about it."""
    where = f"{kind} [{address}]:{port}" if ":" in address else f"{kind} {address}:{port}"
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


def bind_stream(address: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """
    Create a non-blocking TCP socket listening on C{address}, C{port}.

    C{::} listens on every IPv4 and IPv6 address regardless of the host's
    net.ipv6.bindv6only default.

    @raise BindError: with an explanation, if it cannot.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if address == "::" else 1)
        sock.bind((address, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise BindError(describe_bind_failure(e, address, port)) from e
    return sock
