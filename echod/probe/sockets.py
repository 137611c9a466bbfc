"""
The probe's sockets, set as its options ask (L{echod.probe.packets}): each
value with the socket option Linux has for it, before the socket is bound
and connects, so that the first packet (a TCP SYN, the first datagram)
carries it as every other does.

Every refusal of the kernel is an C{OSError} whose text names the option it
refused (C{-I eth9: no network interface 'eth9' here}), so that the probe
can say which of its options cannot be had here.
"""

from __future__ import annotations

import errno
import socket

from echod.addresses import host_port
from echod.probe.packets import PacketOptions
from echod.sockopts import (
    IP_MTU,
    IP_MTU_DISCOVER,
    IP_PMTUDISC_DO,
    IP_PMTUDISC_DONT,
    IP_PMTUDISC_WANT,
    IP_RECVERR,
    IP_TOS,
    IP_TTL,
    IPV6_MTU,
    IPV6_MTU_DISCOVER,
    IPV6_RECVERR,
    IPV6_TCLASS,
    IPV6_UNICAST_HOPS,
)

#: -M's words, as IP_MTU_DISCOVER and IPV6_MTU_DISCOVER take them (the same values for both).
PMTU_VALUES = {"dont": IP_PMTUDISC_DONT, "want": IP_PMTUDISC_WANT, "do": IP_PMTUDISC_DO}


def _refusal(error: OSError, option: str, packets: PacketOptions) -> OSError:
    """C{error}, its text naming C{option} and, for the errors that have one, what to do."""
    reason = error.strerror or str(error)
    if error.errno == errno.ENODEV and packets.interface is not None:
        reason = f"no network interface {packets.interface!r} here (`ip link` lists them)"
    elif error.errno == errno.EADDRNOTAVAIL and packets.source is not None:
        reason = f"{packets.source} is not an address of this host (`ip address` lists them)"
    return OSError(error.errno, f"{option}: {reason}")


def prepare(sock: socket.socket, packets: PacketOptions) -> None:
    """
    Set what C{packets} asks on C{sock}, a new IPv4 or IPv6 socket not yet
    bound, then bind it if they ask for a source address or port.

    @raise OSError: the first refusal of the kernel, its text naming the option.
    """
    ipv6 = sock.family == socket.AF_INET6
    ip = socket.IPPROTO_IPV6 if ipv6 else socket.IPPROTO_IP
    steps: list[tuple[str, int, int, int | bytes]] = []
    if packets.interface is not None:
        steps.append(
            (f"-I {packets.interface}", socket.SOL_SOCKET, socket.SO_BINDTODEVICE, packets.interface.encode())
        )
    if packets.tos is not None:
        steps.append((f"-Q 0x{packets.tos:02x}", ip, IPV6_TCLASS if ipv6 else IP_TOS, packets.tos))
    if packets.ttl is not None:
        steps.append((f"-t {packets.ttl}", ip, IPV6_UNICAST_HOPS if ipv6 else IP_TTL, packets.ttl))
    if packets.pmtu_discovery is not None:
        value = PMTU_VALUES[packets.pmtu_discovery]
        steps.append(
            (f"-M {packets.pmtu_discovery}", ip, IPV6_MTU_DISCOVER if ipv6 else IP_MTU_DISCOVER, value)
        )
    for option, level, name, value in steps:
        try:
            sock.setsockopt(level, name, value)
        except OSError as e:
            raise _refusal(e, option, packets) from None
    if packets.binds:
        bind(sock, packets)


def bind(sock: socket.socket, packets: PacketOptions) -> None:
    """
    Bind C{sock} to the source address and port of C{packets} (the family's
    wildcard address for none, a port the kernel picks for none); an IPv6
    link-local address with its interface (C{fe80::1%eth0}).

    @raise OSError: naming -I and --source-port as given.
    """
    wildcard = "::" if sock.family == socket.AF_INET6 else "0.0.0.0"
    address, port = packets.source or wildcard, packets.source_port or 0
    option = " ".join(
        part
        for part in (
            f"-I {packets.source}" if packets.source else "",
            f"--source-port {port}" if packets.source_port else "",
        )
        if part
    )
    try:
        found = socket.getaddrinfo(
            address, port, sock.family, sock.type, 0, socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        )
        sock.bind(found[0][4])
    except socket.gaierror as e:
        raise OSError(errno.EINVAL, f"{option}: {e.strerror}") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            where = host_port(address, port)
            raise OSError(
                e.errno, f"{option}: {where} is in use (a socket of its own, or one in TIME_WAIT)"
            ) from None
        raise _refusal(e, option, packets) from None


def datagram_socket(family: int, packets: PacketOptions) -> socket.socket:
    """
    A non-blocking UDP socket of C{family}, set as C{packets} asks, with the
    ICMP errors about its datagrams queued on its error queue (IP_RECVERR,
    IPV6_RECVERR), where the probe reads who sent them and about which
    datagram.

    @raise OSError: as L{prepare}.
    """
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        prepare(sock, packets)
    except BaseException:
        sock.close()
        raise
    return sock


def problem(family: int, kind: int, packets: PacketOptions) -> str | None:
    """
    What is wrong with C{packets} on this host for a socket of C{family}
    and C{kind} (SOCK_STREAM, SOCK_DGRAM), found by setting them on one
    (bound, never connected, then closed), or None if the kernel took all.
    """
    if packets == PacketOptions():
        return None
    try:
        with socket.socket(family, kind) as sock:
            prepare(sock, packets)
    except OSError as e:
        return e.strerror or str(e)
    return None


def path_mtu(sock: socket.socket) -> int | None:
    """The path MTU the kernel knows for the destination of C{sock}, a connected socket (IP_MTU, IPV6_MTU)."""
    try:
        if sock.family == socket.AF_INET6:
            return sock.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU)
        return sock.getsockopt(socket.IPPROTO_IP, IP_MTU)
    except OSError:
        return None
