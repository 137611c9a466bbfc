"""
Peer addresses as echod names and counts them.

These run for every connection and every datagram, so they work on the
address strings Twisted already has, with integer masks, instead of parsing
them with C{ipaddress}.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # Only a type here: the configuration parser imports this module, and the
    # generator and `echod check-config` (on the boot path, as the sockets'
    # ExecStartPre) must not pay for importing Twisted.
    from twisted.internet.interfaces import IAddress

_MAPPED = "::ffff:"

#: Defaults of C{peer_prefix_ipv4} and C{peer_prefix_ipv6}: an IPv4 host is
#: one address, an IPv6 host a /64 (RFC 4291 gives every link a /64, and SLAAC
#: and privacy addresses let one machine use as many addresses of it as it likes).
DEFAULT_PREFIX_IPV4 = 32
DEFAULT_PREFIX_IPV6 = 64


def peer_host(address: IAddress) -> str:
    """
    The host part of C{address}, with IPv4-mapped IPv6 addresses turned back
    into IPv4, so that one client counts as one peer whichever way it reached
    a dual-stack socket.
    """
    host = getattr(address, "host", None)
    if host is None:
        return str(address)
    if host.startswith(_MAPPED) and "." in host:
        return host[len(_MAPPED) :]
    return host


def peer_key(
    host: str, prefix_ipv4: int = DEFAULT_PREFIX_IPV4, prefix_ipv6: int = DEFAULT_PREFIX_IPV6
) -> str:
    """
    The peer C{host} counts as for per-peer limits: the address itself at a
    full-length prefix, else its network, e.g. C{192.0.2.0/24} or
    C{2001:db8:1:2::/64}.

    IPv4-mapped IPv6 addresses count as their IPv4 address. IPv6 link-local
    addresses (fe80::/10) always count whole: there a /64 is every neighbour
    on the link, not one host. Anything that is not an IP address is its own
    peer.
    """
    if host.startswith(_MAPPED) and "." in host:
        host = host[len(_MAPPED) :]
    if ":" not in host:
        return host if prefix_ipv4 >= 32 else _network(host, prefix_ipv4)
    return host if prefix_ipv6 >= 128 else _network(host, prefix_ipv6)


@lru_cache(maxsize=4096)
def _network(host: str, prefix: int) -> str:
    # Cached: parsing and formatting cost 3 µs here, a cache hit 0.3 µs
    # (measured), and clients come back; a flood of new addresses only
    # evicts, each miss costing what it would without the cache.
    family, bits = (socket.AF_INET6, 128) if ":" in host else (socket.AF_INET, 32)
    try:
        value = int.from_bytes(socket.inet_pton(family, host), "big")
    except OSError:
        return host  # with a scope (fe80::1%eth0), or not an address
    if bits == 128 and value >> 118 == 0x3FA:  # fe80::/10
        return host
    shift = bits - prefix
    network = (value >> shift << shift).to_bytes(bits // 8, "big")
    return f"{socket.inet_ntop(family, network)}/{prefix}"


def network_matcher(
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...],
) -> Callable[[str], bool]:
    """
    A function telling whether a host (an address as L{peer_host} gives it)
    lies in one of C{networks}. Its answers are cached per host, for the
    reason L{_network}'s are: a balancer connects from the same few
    addresses all day; and the cache is its own, so that a lookup hashes
    the host only, not the networks.
    """

    @lru_cache(maxsize=4096)
    def contains(host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False  # not an address: never in a network
        return any(address in network for network in networks)

    return contains


def host_port(host: str, port: int) -> str:
    """C{host:port}, with an IPv6 host in brackets (C{[::1]:7}), as logs and systemd units write it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def literal_family(host: str) -> int | None:
    """AF_INET or AF_INET6 if C{host} is an address of that family (C{fe80::1%eth0} too), else None."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host.partition("%")[0])
        except (OSError, ValueError):  # ValueError: a NUL in it
            continue
        return family
    return None


def split_host_port(text: str, default_port: int) -> tuple[str, int]:
    """
    The host and port of C{HOST}, C{HOST:PORT}, C{[IPV6]} or C{[IPV6]:PORT}
    (the inverse of L{host_port}); an IPv6 address without brackets is all
    host. The host may be a name: it is not resolved here.

    @raise ValueError: if there is no host, or the port is not 1 to 65535.
    """
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: no ']' after the IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: only ':PORT' may follow ']'")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    if not host:
        raise ValueError(f"{text!r}: no host")
    if port_text is None:
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def format_peer(address: IAddress) -> str:
    """C{host:port} of a peer, for log lines."""
    host = peer_host(address)
    port = getattr(address, "port", None)
    if port is None:
        return host
    return host_port(host, port)
