"""
echod's datagram port (L{echod.protocols.datagram}) on a real reactor and
real sockets: what the kernel says of each datagram reaches the handler,
answers leave from the address used, the kernel's drops are counted.
"""

from __future__ import annotations

import os
import socket
import sys
import time

import pytest

from echod.ancillary import facts
from echod.protocols.datagram import MAX_DATAGRAMS_PER_READ, DatagramPort, ask_for
from echod.sockopts import IPV6_TCLASS, SO_RXQ_OVFL
from tests.reactors import turn_until

EF = 0xB8  # DSCP 46 (Expedited Forwarding), ECN 0


class Kept:
    """A handler that keeps what it is given, and echoes when asked to."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.port: DatagramPort | None = None
        self.got: list[tuple[bytes, tuple, list]] = []
        self.dropped = 0
        self.stops = 0

    def started(self, port: DatagramPort) -> None:
        self.port = port

    def datagram_received(self, data: bytes, peer: tuple, messages: list) -> None:
        self.got.append((data, peer, messages))
        if self.echo:
            self.port.answer(data, peer, messages)

    def kernel_dropped(self, count: int) -> None:
        self.dropped += count

    def stopped(self) -> None:
        self.stops += 1


def bound(host: str, family: int = socket.AF_INET, **options: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
    for name, value in options.items():
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, name), value)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


def listening(reactor, sock: socket.socket, handler: Kept, **kwargs) -> DatagramPort:
    port = DatagramPort(reactor, sock, handler, **kwargs)
    port.startListening()
    return port


def test_a_largest_datagram_is_received_whole(reactor):
    # 65527 bytes: the largest UDP payload (over IPv6, whose header does not count in it).
    handler = Kept()
    with bound("::1", socket.AF_INET6) as sock:
        port = listening(reactor, sock, handler)
        payload = bytes(range(256)) * 255 + bytes(247)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sender:
            sender.sendto(payload, sock.getsockname()[:2])
        turn_until(reactor, lambda: bool(handler.got))
        port.stopListening()
    assert [data for data, _, _ in handler.got] == [payload]


@pytest.mark.parametrize("size", [0, 1, 100])
def test_a_read_turn_hands_over_at_most_its_bound_of_datagrams(reactor, size):
    handler = Kept()
    with bound("127.0.0.1", SO_RCVBUF=4 << 20) as sock:
        port = DatagramPort(reactor, sock, handler)  # not started: the test turns the reads itself
        handler.started(port)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for _ in range(300):
                sender.sendto(b"x" * size, sock.getsockname())
        turns = []
        while sum(turns) < 300:
            before = len(handler.got)
            port.doRead()
            turns.append(len(handler.got) - before)
            assert turns[-1], "a read turn found nothing"
        port.connectionLost(None)
    assert turns == [MAX_DATAGRAMS_PER_READ, 300 - MAX_DATAGRAMS_PER_READ]


def test_the_callers_socket_stays_open_when_the_port_stops(reactor):
    handler = Kept()
    with bound("127.0.0.1") as sock:
        port = listening(reactor, sock, handler)
        stopped = port.stopListening()
        done: list[None] = []
        stopped.addCallback(done.append)
        turn_until(reactor, lambda: bool(done))
        assert handler.stops == 1
        assert sock.fileno() != -1 and sock.getsockname()[1]  # still bound, still the caller's
        with pytest.raises(OSError):
            os.fstat(port.socket.fileno())


def test_a_failing_handler_loses_one_datagram_and_the_port_goes_on(reactor):
    class Fails(Kept):
        def datagram_received(self, data, peer, messages):
            if data == b"bad":
                raise ValueError("a handler's bug")
            super().datagram_received(data, peer, messages)

    handler = Fails()
    with bound("127.0.0.1") as sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        port = listening(reactor, sock, handler)
        for data in (b"bad", b"good"):
            sender.sendto(data, sock.getsockname())
        turn_until(reactor, lambda: bool(handler.got))
        port.stopListening()
    assert [data for data, _, _ in handler.got] == [b"good"]


@pytest.mark.parametrize(
    "family, server, client_host",
    [
        (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
        (socket.AF_INET6, "::1", "::1"),
        # An IPv4 client of a dual-stack socket: IPv4's TTL and TOS, IPv6's PKTINFO.
        (socket.AF_INET6, "::", "127.0.0.1"),
    ],
)
def test_the_kernel_says_ttl_dscp_destination_and_when(reactor, family, server, client_host):
    handler = Kept()
    client_family = socket.AF_INET6 if ":" in client_host else socket.AF_INET
    with bound(server, family) as sock, socket.socket(client_family, socket.SOCK_DGRAM) as client:
        port = listening(reactor, sock, handler, facts=frozenset({"ttl", "tos", "timestamp"}))
        if client_family == socket.AF_INET:
            client.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 7)
            client.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, EF)
        else:
            client.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 7)
            client.setsockopt(socket.IPPROTO_IPV6, IPV6_TCLASS, EF)
        sent_ns = time.time_ns()
        client.sendto(b"marked", (client_host, sock.getsockname()[1]))
        turn_until(reactor, lambda: bool(handler.got))
        port.stopListening()
    ((_, _, messages),) = handler.got
    seen = facts(messages)
    assert (seen.ttl, seen.tos, seen.dscp, seen.ecn) == (7, EF, 46, 0)
    assert abs(seen.received_ns - sent_ns) < 1_000_000, seen.received_ns - sent_ns
    if server == "::":
        assert seen.destination == client_host and seen.interface == socket.if_nametoindex("lo")
    else:
        assert seen.destination is None  # not asked for: a socket bound to one address knows it


def test_unknown_facts_are_refused():
    with bound("127.0.0.1") as sock, pytest.raises(ValueError, match="unknown datagram facts: hops"):
        ask_for(sock, frozenset({"hops"}))


def udp_drops(sock: socket.socket) -> int:
    """The kernel's drop count for C{sock}, from /proc/net/udp or udp6: the last column of its line."""
    inode = os.fstat(sock.fileno()).st_ino
    name = "udp6" if sock.family == socket.AF_INET6 else "udp"
    with open(f"/proc/net/{name}") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if int(fields[9]) == inode:
                return int(fields[-1])
    raise AssertionError(f"socket inode {inode} not in /proc/net/{name}")


@pytest.mark.parametrize("host, family", [("127.0.0.1", socket.AF_INET), ("::", socket.AF_INET6)])
def test_the_kernels_drops_are_counted_as_proc_net_udp_counts_them(reactor, host, family):
    handler = Kept()
    # The smallest receive buffer the kernel allows: a few datagrams fill it.
    with bound(host, family, SO_RCVBUF=1) as sock, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        port = listening(reactor, sock, handler)
        target = ("127.0.0.1", sock.getsockname()[1])
        for _ in range(200):  # the port is not read meanwhile: the reactor does not turn
            sender.sendto(b"x" * 200, target)
        dropped = udp_drops(sock)
        assert dropped > 0
        turn_until(reactor, lambda: not _readable(sock))
        # The count comes with the first datagram queued after the drops.
        sender.sendto(b"after", target)
        turn_until(reactor, lambda: handler.got and handler.got[-1][0] == b"after")
        assert handler.dropped == port.kernel_drops == udp_drops(sock) == dropped
        port.stopListening()


def _readable(sock: socket.socket) -> bool:
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    return True


def test_a_wrapped_drop_counter_still_counts_the_difference(reactor):
    handler = Kept()
    with bound("127.0.0.1") as sock:
        port = DatagramPort(reactor, sock, handler)
        handler.started(port)
        port.kernel_drops = (1 << 32) - 2
        port._count_drops([(socket.SOL_SOCKET, SO_RXQ_OVFL, (3).to_bytes(4, sys.byteorder))])
        port.connectionLost(None)
    assert handler.dropped == 5 and port.kernel_drops == 3
