"""
The probe's sockets set as its options ask (L{echod.probe.sockets}), on real
sockets of the machine's loopback: each option read back from the kernel,
and each refusal naming the option refused.
"""

from __future__ import annotations

import errno
import socket

import pytest

from echod.probe.packets import PacketOptions
from echod.probe.sockets import bind, datagram_socket, path_mtu, prepare, problem
from echod.sockopts import (
    IP_MTU_DISCOVER,
    IP_PMTUDISC_DO,
    IP_PMTUDISC_DONT,
    IP_PMTUDISC_WANT,
    IP_RECVERR,
    IP_TOS,
    IP_TTL,
    IPV6_MTU_DISCOVER,
    IPV6_RECVERR,
    IPV6_TCLASS,
    IPV6_UNICAST_HOPS,
)

KINDS = [socket.SOCK_STREAM, socket.SOCK_DGRAM]
IP, IPV6 = socket.IPPROTO_IP, socket.IPPROTO_IPV6


def held_port(family: int, kind: int) -> tuple[socket.socket, int]:
    """A socket bound to a free loopback port of C{kind}, and that port."""
    sock = socket.socket(family, kind)
    sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    return sock, sock.getsockname()[1]


@pytest.mark.parametrize("kind", KINDS)
def test_tos_ttl_and_path_mtu_discovery_are_set_on_an_ipv4_socket(kind):
    with socket.socket(socket.AF_INET, kind) as sock:
        prepare(sock, PacketOptions(tos=0xB8, ttl=3, pmtu_discovery="do"))
        assert sock.getsockopt(IP, IP_TOS) == 0xB8
        assert sock.getsockopt(IP, IP_TTL) == 3
        assert sock.getsockopt(IP, IP_MTU_DISCOVER) == IP_PMTUDISC_DO
        assert sock.getsockname()[1] == 0  # nothing asked a bind


@pytest.mark.parametrize("kind", KINDS)
def test_traffic_class_hop_limit_and_path_mtu_discovery_are_set_on_an_ipv6_socket(kind):
    with socket.socket(socket.AF_INET6, kind) as sock:
        prepare(sock, PacketOptions(tos=0x28, ttl=255, pmtu_discovery="dont"))
        assert sock.getsockopt(IPV6, IPV6_TCLASS) == 0x28
        assert sock.getsockopt(IPV6, IPV6_UNICAST_HOPS) == 255
        assert sock.getsockopt(IPV6, IPV6_MTU_DISCOVER) == IP_PMTUDISC_DONT


def test_each_path_mtu_discovery_word_is_its_value():
    for word, value in (("do", IP_PMTUDISC_DO), ("want", IP_PMTUDISC_WANT), ("dont", IP_PMTUDISC_DONT)):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            prepare(sock, PacketOptions(pmtu_discovery=word))
            assert sock.getsockopt(IP, IP_MTU_DISCOVER) == value


@pytest.mark.parametrize("kind", KINDS)
def test_an_interface_binds_the_socket_to_it(kind):
    with socket.socket(socket.AF_INET, kind) as sock:
        prepare(sock, PacketOptions(interface="lo"))
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0") == b"lo"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("family", "address"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_a_source_address_and_port_are_bound_before_anything_connects(family, address, kind):
    holder, port = held_port(family, kind)
    holder.close()  # a port free a moment ago
    with socket.socket(family, kind) as sock:
        prepare(sock, PacketOptions(source=address, source_port=port))
        assert sock.getsockname()[:2] == (address, port)
    with socket.socket(family, kind) as sock:
        prepare(sock, PacketOptions(source_port=port))
        assert sock.getsockname()[:2] == ("::" if family == socket.AF_INET6 else "0.0.0.0", port)


@pytest.mark.parametrize(
    ("packets", "text"),
    [
        (
            PacketOptions(interface="nosuch0"),
            "-I nosuch0: no network interface 'nosuch0' here (`ip link` lists them)",
        ),
        (
            PacketOptions(source="192.0.2.1"),
            "-I 192.0.2.1: 192.0.2.1 is not an address of this host (`ip address` lists them)",
        ),
    ],
)
def test_a_refusal_names_the_option_and_what_to_look_at(packets, text):
    with socket.socket() as sock, pytest.raises(OSError) as refused:
        prepare(sock, packets)
    assert refused.value.strerror == text
    assert problem(socket.AF_INET, socket.SOCK_STREAM, packets) == text


@pytest.mark.parametrize("kind", KINDS)
def test_a_source_port_in_use_is_refused_saying_so(kind):
    holder, port = held_port(socket.AF_INET, kind)
    with holder, socket.socket(socket.AF_INET, kind) as sock, pytest.raises(OSError) as refused:
        bind(sock, PacketOptions(source="127.0.0.1", source_port=port))
    assert refused.value.errno == errno.EADDRINUSE
    assert refused.value.strerror == (
        f"-I 127.0.0.1 --source-port {port}: 127.0.0.1:{port} is in use "
        "(a socket of its own, or one in TIME_WAIT)"
    )


def test_trying_the_options_leaves_the_source_port_free_for_the_probe():
    holder, port = held_port(socket.AF_INET, socket.SOCK_STREAM)
    holder.close()
    packets = PacketOptions(source="127.0.0.1", source_port=port, ttl=9)
    assert problem(socket.AF_INET, socket.SOCK_STREAM, packets) is None
    with socket.socket() as sock:
        prepare(sock, packets)  # not in use, not in TIME_WAIT: the trial never connected
        assert sock.getsockname() == ("127.0.0.1", port)


def test_no_options_need_no_trial():
    assert problem(socket.AF_INET6, socket.SOCK_DGRAM, PacketOptions()) is None


@pytest.mark.parametrize(
    ("family", "level", "option"), [(socket.AF_INET, IP, IP_RECVERR), (socket.AF_INET6, IPV6, IPV6_RECVERR)]
)
def test_a_datagram_socket_queues_its_icmp_errors_and_does_not_block(family, level, option):
    with datagram_socket(family, PacketOptions(ttl=7)) as sock:
        assert sock.getsockopt(level, option) == 1
        assert sock.getblocking() is False
        assert (
            sock.getsockopt(
                IPV6 if family == socket.AF_INET6 else IP,
                IPV6_UNICAST_HOPS if family == socket.AF_INET6 else IP_TTL,
            )
            == 7
        )


def test_a_datagram_socket_the_kernel_refuses_is_closed_and_the_refusal_raised():
    with pytest.raises(OSError, match="nosuch0"):
        datagram_socket(socket.AF_INET, PacketOptions(interface="nosuch0"))


def test_the_path_mtu_of_a_connected_socket_is_its_routes():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert path_mtu(sock) is None  # not connected: no path
        sock.connect(("127.0.0.1", 9))
        with open("/sys/class/net/lo/mtu") as mtu:
            # Loopback's 65536, as IPv4 can have it: a packet's length is 16 bits (IP_MAX_MTU).
            assert path_mtu(sock) == min(int(mtu.read()), 65535)
