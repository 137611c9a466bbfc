"""
The kernel's facts of a datagram read from recvmsg's control messages, the
message that answers from the address used, and the errors of a socket's
error queue (L{echod.ancillary}): pure, so tested with messages built here
byte by byte, each cut at every length, and with messages the kernel gave.
"""

from __future__ import annotations

import dataclasses
import socket
import struct

import pytest

from echod.ancillary import (
    ANCILLARY_SPACE,
    ERROR_SPACE,
    SO_EE_ORIGIN_ICMP,
    SO_EE_ORIGIN_ICMP6,
    SO_EE_ORIGIN_LOCAL,
    Facts,
    QueuedError,
    answer_from,
    facts,
    kernel_drops,
    queued_error,
)
from echod.sockopts import (
    IP_PKTINFO,
    IP_RECVERR,
    IP_TOS,
    IP_TTL,
    IPV6_HOPLIMIT,
    IPV6_PKTINFO,
    IPV6_RECVERR,
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


# -- the error queue -------------------------------------------------------------------------------


def extended_err(code: int, origin: int, kind: int, icmp_code: int, info: int) -> bytes:
    """struct sock_extended_err (linux/errqueue.h), ee_pad and ee_data 0."""
    return struct.pack("=IBBBBII", code, origin, kind, icmp_code, 0, info, 0)


def sockaddr_in(address: str) -> bytes:
    return struct.pack("=H", socket.AF_INET) + bytes(2) + socket.inet_aton(address) + bytes(8)


def sockaddr_in6(address: str) -> bytes:
    return (
        struct.pack("=H", socket.AF_INET6) + bytes(6) + socket.inet_pton(socket.AF_INET6, address) + bytes(4)
    )


#: Errors as a read of the error queue brings them, and what they say.
ERRORS = [
    (
        (IP, IP_RECVERR, extended_err(113, SO_EE_ORIGIN_ICMP, 11, 0, 0) + sockaddr_in("198.18.0.254")),
        QueuedError(113, SO_EE_ORIGIN_ICMP, 11, 0, 0, "198.18.0.254"),
    ),
    (
        (IPV6, IPV6_RECVERR, extended_err(90, SO_EE_ORIGIN_ICMP6, 2, 0, 1280) + sockaddr_in6("2001:db8::fe")),
        QueuedError(90, SO_EE_ORIGIN_ICMP6, 2, 0, 1280, "2001:db8::fe"),
    ),
    (
        (
            IPV6,
            IPV6_RECVERR,
            extended_err(111, SO_EE_ORIGIN_ICMP, 3, 3, 0) + sockaddr_in6("::ffff:198.18.0.2"),
        ),
        QueuedError(111, SO_EE_ORIGIN_ICMP, 3, 3, 0, "198.18.0.2"),
    ),
    # A local error (EMSGSIZE above the path MTU with IP_PMTUDISC_DO): no one sent it.
    (
        (IP, IP_RECVERR, extended_err(90, SO_EE_ORIGIN_LOCAL, 0, 0, 1280) + bytes(16)),
        QueuedError(90, SO_EE_ORIGIN_LOCAL, 0, 0, 1280, None),
    ),
]

#: The same as Linux 6.18 gave them here (`echod probe --udp -t 1` and `-M do -s 1400` through a
#: router to a link of MTU 1280): a second reading of the layout, not written by this test.
FROM_THE_KERNEL = [
    (
        (IP, IP_RECVERR, "71000000020b0000000000000000000002000000c61200fe0000000000000000"),
        QueuedError(113, SO_EE_ORIGIN_ICMP, 11, 0, 0, "198.18.0.254"),
    ),
    (
        (IP, IP_RECVERR, "5a00000002030400000500000000000002000000c61200fe0000000000000000"),
        QueuedError(90, SO_EE_ORIGIN_ICMP, 3, 4, 1280, "198.18.0.254"),
    ),
    (
        (
            IPV6,
            IPV6_RECVERR,
            "5a0000000302000000050000000000000a0000000000000020010db80000000100000000000000fe00000000",
        ),
        QueuedError(90, SO_EE_ORIGIN_ICMP6, 2, 0, 1280, "2001:db8:0:1::fe"),
    ),
    (
        (
            IPV6,
            IPV6_RECVERR,
            "710000000303000000000000000000000a0000000000000020010db80000000100000000000000fe00000000",
        ),
        QueuedError(113, SO_EE_ORIGIN_ICMP6, 3, 0, 0, "2001:db8:0:1::fe"),
    ),
    (
        (IP, IP_RECVERR, "5a00000001000000000500000000000000000000000000000000000000000000"),
        QueuedError(90, SO_EE_ORIGIN_LOCAL, 0, 0, 1280, None),
    ),
]


@pytest.mark.parametrize("message, expected", ERRORS)
def test_each_queued_error_says_what_it_is_and_who_sent_it(message, expected):
    assert queued_error([message]) == expected


@pytest.mark.parametrize("message, expected", FROM_THE_KERNEL)
def test_queued_errors_as_the_kernel_gave_them_read_the_same(message, expected):
    level, kind, data = message
    assert queued_error([(level, kind, bytes.fromhex(data))]) == expected


@pytest.mark.parametrize("message, expected", ERRORS)
def test_a_queued_error_cut_short_gives_no_error_then_no_sender_rather_than_a_wrong_one(message, expected):
    level, kind, data = message
    # The struct is 16 bytes; the sender's address ends 8 bytes into a sockaddr_in, 24 into a sockaddr_in6.
    whole = 16 + (24 if data[16:18] == struct.pack("=H", socket.AF_INET6) else 8)
    for length in range(len(data)):
        found = queued_error([(level, kind, data[:length])])
        if length < 16:
            assert found is None, length
        elif length < whole:
            assert found == dataclasses.replace(expected, offender=None), length
        else:
            assert found == expected, length


def test_a_queued_error_is_found_among_other_messages_and_only_in_its_own_kinds():
    (message, expected) = ERRORS[0]
    assert queued_error([(IP, IP_TTL, native_int(7)), message]) == expected
    data = message[2]
    assert queued_error([(IP, IP_TTL, data), (SOCKET, IP_RECVERR, data), (IPV6, IP_RECVERR, data)]) is None
    assert queued_error([]) is None


def test_the_error_buffer_holds_an_error_with_an_ipv6_sender():
    assert socket.CMSG_SPACE(len(ERRORS[1][0][2])) <= ERROR_SPACE
