"""
The kernel's facts of a datagram read from recvmsg's control messages, and
the message that answers from the address used (L{echod.ancillary}): pure,
so tested with messages built here byte by byte, each cut at every length.
"""

from __future__ import annotations

import socket
import struct

import pytest

from echod.ancillary import ANCILLARY_SPACE, Facts, answer_from, facts, kernel_drops
from echod.sockopts import (
    IP_PKTINFO,
    IP_TOS,
    IP_TTL,
    IPV6_HOPLIMIT,
    IPV6_PKTINFO,
    IPV6_TCLASS,
    SCM_TIMESTAMPNS,
    SO_RXQ_OVFL,
)

IP, IPV6, SOCKET = socket.IPPROTO_IP, socket.IPPROTO_IPV6, socket.SOL_SOCKET


def in_pktinfo(index: int, spec_dst: str, addr: str) -> bytes:
    return struct.pack("=i", index) + socket.inet_aton(spec_dst) + socket.inet_aton(addr)


def in6_pktinfo(addr: str, index: int) -> bytes:
    return socket.inet_pton(socket.AF_INET6, addr) + struct.pack("=I", index)


def native_int(value: int) -> bytes:
    return struct.pack("=i", value)


TIMESTAMP = struct.pack("@ll", 1_796_000_000, 123_456_789)

#: One message of each kind, the fact it gives, and what it says.
MESSAGES = [
    (
        (IP, IP_PKTINFO, in_pktinfo(2, "198.18.0.2", "198.18.0.202")),
        {"destination": "198.18.0.202", "interface": 2},
    ),
    ((IPV6, IPV6_PKTINFO, in6_pktinfo("2001:db8::2", 3)), {"destination": "2001:db8::2", "interface": 3}),
    (
        (IPV6, IPV6_PKTINFO, in6_pktinfo("::ffff:198.18.0.7", 4)),
        {"destination": "198.18.0.7", "interface": 4},
    ),
    ((IP, IP_TTL, native_int(7)), {"ttl": 7}),
    ((IPV6, IPV6_HOPLIMIT, native_int(255)), {"ttl": 255}),
    ((IP, IP_TOS, b"\xb8"), {"tos": 0xB8}),
    ((IPV6, IPV6_TCLASS, native_int(0x2E << 2 | 1)), {"tos": 0xB9}),
    ((SOCKET, SCM_TIMESTAMPNS, TIMESTAMP), {"received_ns": 1_796_000_000_123_456_789}),
    ((SOCKET, SO_RXQ_OVFL, struct.pack("=I", 946_557)), {"drops": 946_557}),
]


@pytest.mark.parametrize("message, expected", MESSAGES)
def test_each_message_gives_its_fact(message, expected):
    assert facts([message]) == Facts(**expected)


@pytest.mark.parametrize("message, expected", MESSAGES)
def test_a_message_cut_short_at_any_length_gives_no_fact_and_no_error(message, expected):
    level, kind, data = message
    for length in range(len(data)):
        if kind == IP_TOS and level == IP and length:
            continue  # one byte is all of it
        assert facts([(level, kind, data[:length])]) == Facts(), length


def test_all_the_messages_of_a_dual_stack_socket_together():
    messages = [
        (SOCKET, SCM_TIMESTAMPNS, TIMESTAMP),
        (IPV6, IPV6_PKTINFO, in6_pktinfo("::ffff:198.18.0.202", 2)),
        (IP, IP_TTL, native_int(7)),
        (IP, IP_TOS, b"\xb8"),
    ]
    seen = facts(messages)
    assert seen == Facts("198.18.0.202", 2, 7, 0xB8, 1_796_000_000_123_456_789)
    assert (seen.dscp, seen.ecn) == (46, 0)


def test_messages_of_other_kinds_are_passed_over():
    messages = [
        (IP, 99, b"\x01\x02\x03\x04"),
        (IPV6, 99, bytes(20)),
        (SOCKET, 99, bytes(16)),
        (200, IP_TTL, b"xxxx"),
    ]
    assert facts(messages) == Facts()


def test_a_datagram_without_messages_says_nothing():
    seen = facts([])
    assert seen == Facts() and seen.dscp is None and seen.ecn is None


def test_an_ipv4_answer_names_the_destination_as_source_and_leaves_the_interface_to_routing():
    ((level, kind, data),) = answer_from([(IP, IP_PKTINFO, in_pktinfo(2, "198.18.0.2", "198.18.0.202"))])
    assert (level, kind) == (IP, IP_PKTINFO)
    assert data == in_pktinfo(0, "198.18.0.202", "0.0.0.0")


@pytest.mark.parametrize("address", ["2001:db8::2", "fe80::1", "::ffff:198.18.0.202"])
def test_an_ipv6_answer_takes_the_received_pktinfo_as_it_is(address):
    received = in6_pktinfo(address, 5)
    assert answer_from([(SOCKET, SCM_TIMESTAMPNS, TIMESTAMP), (IPV6, IPV6_PKTINFO, received)]) == [
        (IPV6, IPV6_PKTINFO, received)
    ]


@pytest.mark.parametrize(
    "message",
    [
        (IP, IP_PKTINFO, in_pktinfo(2, "198.18.0.2", "198.18.0.202")),
        (IPV6, IPV6_PKTINFO, in6_pktinfo("::1", 1)),
    ],
)
def test_a_cut_pktinfo_gives_no_answer_source_rather_than_a_wrong_one(message):
    level, kind, data = message
    for length in range(len(data)):
        assert answer_from([(level, kind, data[:length])]) == [], length


def test_the_drop_counter_alone_is_found_among_other_messages():
    messages = [(IP, IP_TTL, native_int(7)), (SOCKET, SO_RXQ_OVFL, struct.pack("=I", 12))]
    assert kernel_drops(messages) == 12
    assert kernel_drops(messages[:1]) is None
    assert kernel_drops([(SOCKET, SO_RXQ_OVFL, b"\x01\x02")]) is None


def test_the_ancillary_buffer_holds_every_message_asked_for_at_once():
    every = [
        socket.CMSG_SPACE(len(in6_pktinfo("::1", 1))),
        socket.CMSG_SPACE(len(in_pktinfo(1, "0.0.0.0", "0.0.0.0"))),
        *(socket.CMSG_SPACE(4) for _ in range(4)),  # TTL, TOS, hop limit, traffic class
        socket.CMSG_SPACE(len(TIMESTAMP)),
        socket.CMSG_SPACE(4),  # the drop counter
    ]
    assert sum(every) <= ANCILLARY_SPACE
