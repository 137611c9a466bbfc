"""
An ICMP or ICMPv6 error about a probe's datagram in ping's words, with who
sent it (L{echod.probe.icmp}): every type and code the probe names.
"""

from __future__ import annotations

import errno

import pytest

from echod.ancillary import SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6, SO_EE_ORIGIN_LOCAL, QueuedError
from echod.probe.icmp import describe, icmp_words


def icmp(kind: int, code: int, info: int = 0, sender: str | None = "198.18.1.1") -> QueuedError:
    return QueuedError(errno.EHOSTUNREACH, SO_EE_ORIGIN_ICMP, kind, code, info, sender)


def icmp6(kind: int, code: int, info: int = 0, sender: str | None = "2001:db8:1::1") -> QueuedError:
    return QueuedError(errno.EHOSTUNREACH, SO_EE_ORIGIN_ICMP6, kind, code, info, sender)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        # ICMP (RFC 792, RFC 1122, RFC 1812): type 3, destination unreachable, by code.
        (icmp(3, 0), "network unreachable"),
        (icmp(3, 1), "host unreachable"),
        (icmp(3, 2), "protocol unreachable"),
        (icmp(3, 3), "port unreachable"),
        (icmp(3, 4, 1280), "fragmentation needed: path MTU 1280"),
        (icmp(3, 5), "source route failed"),
        (icmp(3, 6), "destination network unknown"),
        (icmp(3, 7), "destination host unknown"),
        (icmp(3, 8), "source host isolated"),
        (icmp(3, 9), "network administratively prohibited"),
        (icmp(3, 10), "host administratively prohibited"),
        (icmp(3, 11), "network unreachable for type of service"),
        (icmp(3, 12), "host unreachable for type of service"),
        (icmp(3, 13), "communication administratively prohibited"),
        (icmp(3, 14), "host precedence violation"),
        (icmp(3, 15), "precedence cutoff in effect"),
        (icmp(3, 16), "ICMP type 3 code 16"),
        (icmp(11, 0), "time to live exceeded"),
        (icmp(11, 1), "fragment reassembly time exceeded"),
        (icmp(11, 2), "ICMP type 11 code 2"),
        (icmp(12, 0), "parameter problem"),
        (icmp(5, 1), "ICMP type 5 code 1"),
        # ICMPv6 (RFC 4443).
        (icmp6(1, 0), "no route to destination"),
        (icmp6(1, 1), "communication administratively prohibited"),
        (icmp6(1, 2), "beyond scope of source address"),
        (icmp6(1, 3), "address unreachable"),
        (icmp6(1, 4), "port unreachable"),
        (icmp6(1, 5), "source address failed ingress/egress policy"),
        (icmp6(1, 6), "reject route to destination"),
        (icmp6(1, 7), "ICMPv6 type 1 code 7"),
        (icmp6(2, 0, 1280), "packet too big: path MTU 1280"),
        (icmp6(3, 0), "time to live exceeded"),  # hop limit exceeded: -t sets it as it sets a TTL
        (icmp6(3, 1), "fragment reassembly time exceeded"),
        (icmp6(4, 1), "parameter problem"),
        (icmp6(137, 0), "ICMPv6 type 137 code 0"),
    ],
)
def test_each_icmp_error_is_told_in_pings_words(error, words):
    assert icmp_words(error) == words


def test_an_error_from_elsewhere_is_told_by_its_errno():
    local = QueuedError(errno.EMSGSIZE, SO_EE_ORIGIN_LOCAL, 0, 0, 1280, None)
    assert icmp_words(local) == "message too long"
    assert describe(local) == "message too long"


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (icmp(11, 0), "time to live exceeded from 198.18.1.1"),
        (icmp(3, 3, sender="198.18.1.2"), "port unreachable from 198.18.1.2"),
        (icmp(3, 4, 1280), "fragmentation needed from 198.18.1.1: path MTU 1280"),
        (icmp6(2, 0, 1280), "packet too big from 2001:db8:1::1: path MTU 1280"),
        (icmp6(3, 0), "time to live exceeded from 2001:db8:1::1"),
        (icmp(3, 1, sender=None), "host unreachable"),
    ],
)
def test_an_error_is_told_with_who_sent_it_before_any_figure(error, line):
    assert describe(error) == line
