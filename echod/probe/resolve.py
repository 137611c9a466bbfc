"""
Where `echod probe` sends: the target's name resolved to the address to
probe, without holding up the reactor (the deadline and the signals must
keep working while a resolver takes its time).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading

from twisted.internet import defer, threads
from twisted.python.threadpool import ThreadPool

from echod.addresses import host_port
from echod.probe.options import ProbeOptions


class ResolveError(Exception):
    """The target's name has no address (of the family asked for)."""


def resolve(options: ProbeOptions) -> tuple[int, str]:
    """
    The family and the address to probe: the first that getaddrinfo() gives
    for the host (an address is its own), in the order the system prefers
    (gai.conf). An IPv6 address keeps its scope (C{fe80::1%eth0}): a
    link-local address means nothing without its interface.

    This blocks for as long as the system's resolver takes (10 s and more
    for a DNS server that never answers): see L{resolve_in_thread}.

    @raise ResolveError: if the name does not resolve, or not to the family asked for.
    """
    kind = socket.SOCK_DGRAM if options.mode == "udp" else socket.SOCK_STREAM
    host = options.host
    try:
        found = socket.getaddrinfo(host, options.port, options.family or socket.AF_UNSPEC, kind)
    except (socket.gaierror, UnicodeError) as e:
        reason = e.strerror if isinstance(e, socket.gaierror) else str(e)
        raise ResolveError(f"cannot resolve {host}: {_scope_problem(host) or reason}") from None
    for family, _, _, _, sockaddr in found:
        if family == socket.AF_INET:
            return family, sockaddr[0]
        if family == socket.AF_INET6:
            address, scope = sockaddr[0].split("%")[0], sockaddr[3]
            if not scope:
                if ipaddress.IPv6Address(address).is_link_local:
                    example = host_port(address + "%eth0", options.port)
                    raise ResolveError(f"{host} is link-local: name its interface, e.g. {example}")
                return family, address
            try:
                return family, f"{address}%{socket.if_indextoname(scope)}"
            except OSError:
                return family, f"{address}%{scope}"
    raise ResolveError(f"cannot resolve {host}: no IPv4 or IPv6 address")


def _scope_problem(host: str) -> str | None:
    """What is wrong with the scope of C{host} (C{fe80::1%eth9}), if that is why it does not resolve."""
    scope = host.partition("%")[2]
    if not scope or scope.isdigit():
        return None
    try:
        socket.if_nametoindex(scope)
    except OSError:
        return f"no network interface {scope!r} here (`ip link` lists them)"
    return None


def resolve_in_thread(reactor, options: ProbeOptions) -> defer.Deferred:
    """
    L{resolve} in a thread of its own: fires with its result in the reactor.

    getaddrinfo() cannot be interrupted, so the run must not wait for it:
    the reactor keeps serving the deadline and the signals meanwhile, and
    the run may end (and the process exit) while the thread still waits for
    an answer. Twisted's own resolvers cannot serve: reactor.resolve() gives
    IPv4 only, and the reactor's thread pool, like any Twisted ThreadPool
    stopped at shutdown, joins its threads, which would hold the exit until
    the resolver gives up. Hence a pool of one daemon thread that is never
    stopped: the interpreter does not wait for daemon threads at exit.
    """
    pool = ThreadPool(0, 1, "echod-probe-resolver")
    pool.threadFactory = functools.partial(threading.Thread, daemon=True)
    pool.start()
    return threads.deferToThreadPool(reactor, pool, resolve, options)
