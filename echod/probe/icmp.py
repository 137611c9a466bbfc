"""
What an ICMP or ICMPv6 error about a probe's datagram says, in the words
ping(8) reports them with: the error and who sent it, and for a datagram
too large for the path the MTU the router said it has.

Pure: the error comes read from the socket's error queue
(L{echod.ancillary.queued_error}).
"""

from __future__ import annotations

import os

from echod.ancillary import SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6, QueuedError

# ICMP (RFC 792, RFC 1812) and ICMPv6 (RFC 4443) types and codes the words below are for.
ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED, ICMP_PARAMETERPROB = 3, 11, 12
ICMP_FRAG_NEEDED = 4
ICMPV6_DEST_UNREACH, ICMPV6_PACKET_TOO_BIG, ICMPV6_TIME_EXCEED, ICMPV6_PARAMPROB = 1, 2, 3, 4

_UNREACHABLE = {
    0: "network unreachable",
    1: "host unreachable",
    2: "protocol unreachable",
    3: "port unreachable",
    5: "source route failed",
    6: "destination network unknown",
    7: "destination host unknown",
    8: "source host isolated",
    9: "network administratively prohibited",
    10: "host administratively prohibited",
    11: "network unreachable for type of service",
    12: "host unreachable for type of service",
    13: "communication administratively prohibited",
    14: "host precedence violation",
    15: "precedence cutoff in effect",
}
_UNREACHABLE_V6 = {
    0: "no route to destination",
    1: "communication administratively prohibited",
    2: "beyond scope of source address",
    3: "address unreachable",
    4: "port unreachable",
    5: "source address failed ingress/egress policy",
    6: "reject route to destination",
}
_TIME_EXCEEDED = {0: "time to live exceeded", 1: "fragment reassembly time exceeded"}


def icmp_words(error: QueuedError) -> str:
    """
    What C{error} is, without its sender: C{time to live exceeded},
    C{port unreachable}, C{fragmentation needed: path MTU 1280}; an error
    of no ICMP type known here by its type and code, and one not from ICMP
    by its errno.
    """
    kind, code = error.type, error.code
    if error.origin == SO_EE_ORIGIN_ICMP:
        if kind == ICMP_DEST_UNREACH and code == ICMP_FRAG_NEEDED:
            return f"fragmentation needed: path MTU {error.info}"
        if kind == ICMP_DEST_UNREACH and code in _UNREACHABLE:
            return _UNREACHABLE[code]
        if kind == ICMP_TIME_EXCEEDED and code in _TIME_EXCEEDED:
            return _TIME_EXCEEDED[code]
        if kind == ICMP_PARAMETERPROB:
            return "parameter problem"
        return f"ICMP type {kind} code {code}"
    if error.origin == SO_EE_ORIGIN_ICMP6:
        if kind == ICMPV6_PACKET_TOO_BIG:
            return f"packet too big: path MTU {error.info}"
        if kind == ICMPV6_DEST_UNREACH and code in _UNREACHABLE_V6:
            return _UNREACHABLE_V6[code]
        # ICMPv6's "hop limit exceeded in transit", in IPv4's words: -t sets the one and the other.
        if kind == ICMPV6_TIME_EXCEED and code in _TIME_EXCEEDED:
            return _TIME_EXCEEDED[code]
        if kind == ICMPV6_PARAMPROB:
            return "parameter problem"
        return f"ICMPv6 type {kind} code {code}"
    return os.strerror(error.errno).lower()


def describe(error: QueuedError) -> str:
    """
    C{error} as a probe's line tells it, with who sent it, as ping(8) does:
    C{time to live exceeded from 198.18.1.1}, C{fragmentation needed from
    198.18.1.1: path MTU 1280}.
    """
    words = icmp_words(error)
    if error.offender is None:
        return words
    what, colon, rest = words.partition(": ")
    return f"{what} from {error.offender}{colon}{rest}"
