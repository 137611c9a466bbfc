"""
PROXY protocol headers as a balancer writes them (HAProxy's proxy-protocol.txt),
for the tests: v1 lines and v2 blocks, written from the specification and not
from echod's parser, so that the two are checked against each other.
"""

from __future__ import annotations

import ipaddress
import struct

#: The 12 bytes a v2 header begins with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"

#: The address a test's client connected to, through the proxy, by IP version.
DESTINATIONS = {4: ("198.18.0.1", 7), 6: ("2001:db8::1", 7)}


def v2_header(command: int, family_protocol: int, block: bytes, length: int | None = None) -> bytes:
    """
    A v2 header from its fields: the signature, version 2 with C{command}
    (0 LOCAL, 1 PROXY), C{family_protocol} (0x11 TCP over IPv4, 0x21 over
    IPv6), the length (C{block}'s own unless C{length} says otherwise) and
    C{block}: the addresses, then any TLVs.
    """
    length = len(block) if length is None else length
    return V2_SIGNATURE + bytes([0x20 | command, family_protocol]) + struct.pack("!H", length) + block


#: A v2 LOCAL header: a balancer's own connection (a health check), naming no client.
V2_LOCAL = v2_header(0, 0x00, b"")


def _ends(source: tuple[str, int], destination: tuple[str, int] | None):
    client = ipaddress.ip_address(source[0])
    return client, destination or DESTINATIONS[client.version]


def proxy_v1(source: tuple[str, int], destination: tuple[str, int] | None = None) -> bytes:
    """The v1 line of a TCP connection from C{source} (host, port) to C{destination} (L{DESTINATIONS})."""
    client, destination = _ends(source, destination)
    family = "TCP4" if client.version == 4 else "TCP6"
    return f"PROXY {family} {source[0]} {destination[0]} {source[1]} {destination[1]}\r\n".encode()


def proxy_v2(source: tuple[str, int], destination: tuple[str, int] | None = None, tlvs: bytes = b"") -> bytes:
    """The v2 PROXY header of a TCP connection from C{source} to C{destination}, then C{tlvs}."""
    client, destination = _ends(source, destination)
    block = client.packed + ipaddress.ip_address(destination[0]).packed
    block += struct.pack("!HH", source[1], destination[1]) + tlvs
    return v2_header(1, 0x11 if client.version == 4 else 0x21, block)
