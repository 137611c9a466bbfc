"""A client's connection to a factory over a string transport: the unit tests' way in, no socket."""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.testing import StringTransport


def tcp_address(host: str, port: int) -> IPv4Address | IPv6Address:
    """Twisted's address of C{host} (either family) and C{port} over TCP."""
    return IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)


def connect(
    factory: IProtocolFactory,
    host: str = "10.0.0.1",
    port: int = 1000,
    transport: type[StringTransport] = StringTransport,
) -> tuple[IProtocol, StringTransport] | tuple[None, None]:
    """
    A client at C{host}:C{port} connects to C{factory}, on a C{transport}
    (a L{StringTransport} or a class derived from it): the protocol the
    factory built and its transport, or C{(None, None)} if it refused.
    """
    address = tcp_address(host, port)
    protocol = factory.buildProtocol(address)
    if protocol is None:
        return None, None
    made = transport(peerAddress=address)
    protocol.makeConnection(made)
    return protocol, made
