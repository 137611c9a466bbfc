"""
What `echod probe`'s packets carry besides their payload, set as ping(8)'s
options set it: where they leave from (-I, --source-port), their DSCP or TOS
byte (-Q), their TTL (-t) and whether they may be fragmented (-M).

Pure: the grammar of each value and the settings they make, tested on their
own; L{echod.probe.sockets} applies them to a socket.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from echod.addresses import literal_family
from echod.units import one_of, whole_number

#: The Differentiated Services code points by name: the class selectors (RFC 2474), assured
#: forwarding (RFC 2597), expedited forwarding (RFC 3246), voice admit (RFC 5865) and lower effort
#: (RFC 8622), as Linux's tc and nftables name them.
DSCP_NAMES: dict[str, int] = {
    **{f"cs{n}": n << 3 for n in range(8)},
    **{f"af{c}{p}": (c << 3) | (p << 1) for c in range(1, 5) for p in range(1, 4)},
    "ef": 46,
    "va": 44,
    "le": 1,
}
_DSCP_BY_VALUE = {value: name for name, value in DSCP_NAMES.items()}
_DSCP_NUMBER = re.compile(r"dscp:([0-9]+)")
_TOS_DECIMAL = re.compile(r"[0-9]+")
_TOS_HEX = re.compile(r"0x([0-9a-f]{1,2})")

#: -M: path-MTU discovery, as ping's -M names it (IP_PMTUDISC_DO, _WANT, _DONT).
PMTU_DISCOVERY = ("do", "want", "dont")
#: -t: the TTL (IPv4) or hop limit (IPv6) a packet may be given.
MIN_TTL, MAX_TTL = 1, 255
#: Linux's IFNAMSIZ less its terminating NUL: the longest interface name.
MAX_INTERFACE_NAME = 15

parse_ttl = whole_number(MIN_TTL, MAX_TTL)
parse_source_port = whole_number(1, 65535)
parse_pmtu_discovery = one_of(*PMTU_DISCOVERY)


@dataclass(frozen=True)
class Source:
    """-I: an address to send from, or an interface to send through (one of the two)."""

    address: str | None = None
    interface: str | None = None


def parse_source(text: str) -> Source:
    """
    -I as ping takes it: an IPv4 or IPv6 address (C{fe80::1%eth0} with its
    interface) to send from, else the name of an interface to send through.

    @raise ValueError: if C{text} is neither, as Linux names interfaces
        (1 to 15 characters, none of them C{/}, C{:} or a space; not C{.}
        nor C{..}).
    """
    if literal_family(text) is not None:
        return Source(address=text)
    if (
        not 1 <= len(text) <= MAX_INTERFACE_NAME
        or text in (".", "..")
        or any(char in "/:" or char.isspace() for char in text)
        or not text.isprintable()
    ):
        raise ValueError(
            f"{text!r} is neither an IPv4 or IPv6 address nor an interface name "
            f"(1 to {MAX_INTERFACE_NAME} characters, without '/', ':' or spaces)"
        )
    return Source(interface=text)


def parse_qos(text: str) -> int:
    """
    -Q: the TOS byte (IPv4) or traffic class (IPv6) to send with, from
    C{text}, which is one of

      - a DSCP name (L{DSCP_NAMES}: C{ef}, C{af11} to C{af43}, C{cs0} to
        C{cs7}, C{va}, C{le}), in any case;
      - C{dscp:N}, a DSCP number from 0 to 63;
      - a number alone, the whole byte as ping's -Q takes it: decimal from
        0 to 255, or hexadecimal after C{0x} (C{0xb8}). A DSCP is the upper
        six bits of it: EF, 46, is 184 or C{0xb8}.

    The DSCP forms leave the two ECN bits 0.

    @raise ValueError: for anything else, or a number out of its range.
    """
    word = text.strip().lower()
    if word in DSCP_NAMES:
        return DSCP_NAMES[word] << 2
    match = _DSCP_NUMBER.fullmatch(word)
    if match is not None:
        dscp = int(match.group(1))
        if dscp > 63:
            raise ValueError(f"{text!r}: a DSCP is 0 to 63")
        return dscp << 2
    match = _TOS_HEX.fullmatch(word)
    if match is not None:
        return int(match.group(1), 16)
    if _TOS_DECIMAL.fullmatch(word):
        tos = int(word)
        if tos > 255:
            raise ValueError(f"{text!r}: a TOS byte is 0 to 255 (0x00 to 0xff); a DSCP is written dscp:N")
        return tos
    raise ValueError(
        f"{text!r} is not a DSCP name (ef, af11 to af43, cs0 to cs7, va, le), "
        "dscp:0 to dscp:63, nor a TOS byte (0 to 255, or 0x00 to 0xff)"
    )


def describe_tos(tos: int) -> str:
    """A TOS byte as a network engineer reads it: C{0xb8 (dscp 46, ef)}, with any ECN bits."""
    dscp, ecn = tos >> 2, tos & 3
    name = _DSCP_BY_VALUE.get(dscp)
    parts = [f"dscp {dscp}" + (f", {name}" if name else "")]
    if ecn:
        parts.append(f"ecn {ecn}")
    return f"0x{tos:02x} ({', '.join(parts)})"


@dataclass(frozen=True)
class PacketOptions:
    """
    What the probe's sockets are set to; None everywhere is the kernel's
    own choice (the route's source and interface, a port it picks, TOS 0,
    the system's TTL, path-MTU discovery as the system does it).
    """

    #: -I ADDRESS: the address to bind to, and send from.
    source: str | None = None
    #: -I INTERFACE: the interface to send through (SO_BINDTODEVICE), and receive on.
    interface: str | None = None
    #: --source-port.
    source_port: int | None = None
    #: -Q: the TOS byte (IP_TOS) or traffic class (IPV6_TCLASS).
    tos: int | None = None
    #: -t: the TTL (IP_TTL) or hop limit (IPV6_UNICAST_HOPS).
    ttl: int | None = None
    #: -M: one of L{PMTU_DISCOVERY} (IP_MTU_DISCOVER, IPV6_MTU_DISCOVER).
    pmtu_discovery: str | None = None

    def __post_init__(self) -> None:
        # The parsers above give only values within these; settings made otherwise are held to them too.
        if self.source is not None and self.interface is not None:
            raise ValueError("-I is an address or an interface, not both")
        if self.source is not None and literal_family(self.source) is None:
            raise ValueError(f"-I {self.source!r}: not an IPv4 or IPv6 address")
        for name, value, low, high in (
            ("--source-port", self.source_port, 1, 65535),
            ("-Q", self.tos, 0, 255),
            ("-t", self.ttl, MIN_TTL, MAX_TTL),
        ):
            if value is not None and not low <= value <= high:
                raise ValueError(f"{name} {value}: {low} to {high}")
        if self.pmtu_discovery is not None and self.pmtu_discovery not in PMTU_DISCOVERY:
            raise ValueError(f"-M {self.pmtu_discovery!r}: one of {', '.join(PMTU_DISCOVERY)}")

    @property
    def family(self) -> int | None:
        """The family the source address is of (the probe's must be the same), if one was given."""
        return literal_family(self.source) if self.source else None

    @property
    def binds(self) -> bool:
        """Whether the probe's sockets are bound before they connect (a source address or port)."""
        return self.source is not None or self.source_port is not None

    def describe(self) -> str:
        """The settings asked for, as the first line of the run says them (empty for none)."""
        parts = []
        if self.source is not None or self.source_port is not None:
            where = self.source or "any address"
            parts.append(f"from {where}" + (f" port {self.source_port}" if self.source_port else ""))
        if self.interface is not None:
            parts.append(f"through {self.interface}")
        if self.tos is not None:
            parts.append(f"tos {describe_tos(self.tos)}")
        if self.ttl is not None:
            parts.append(f"ttl {self.ttl}")
        if self.pmtu_discovery is not None:
            parts.append(f"path MTU discovery {self.pmtu_discovery}")
        return ", ".join(parts)

    def report(self) -> dict[str, int | str | None]:
        """The settings as --json names them: each key always there, null where the kernel chose."""
        return {
            "source": self.source,
            "interface": self.interface,
            "source_port": self.source_port,
            "tos": self.tos,
            "dscp": None if self.tos is None else self.tos >> 2,
            "ttl": self.ttl,
            "pmtu_discovery": self.pmtu_discovery,
        }


def check_source_family(packets: PacketOptions, family: int | None) -> None:
    """
    Refuse a source address of the other family than the probe's (C{-4},
    C{-6}, or the target's own address).

    @raise ValueError: naming both.
    """
    theirs = packets.family
    if theirs is not None and family is not None and theirs != family:
        names = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}
        raise ValueError(
            f"-I {packets.source} is an {names[theirs]} address, and the probe goes over {names[family]}"
        )
