"""
Peer addresses as echod names and counts them.

These run for every connection, so they work on the address strings
Twisted already has instead of parsing them with C{ipaddress}.
"""

from twisted.internet.interfaces import IAddress

_MAPPED = "::ffff:"


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


def format_peer(address: IAddress) -> str:
    """C{host:port}, with IPv6 hosts in brackets, for log lines."""
    host = peer_host(address)
    port = getattr(address, "port", None)
    if port is None:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
