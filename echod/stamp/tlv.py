"""
The TLVs of RFC 8972 §4 that follow a STAMP packet's 44 octets: Flags (8
bits: U, M, I and five reserved), Type (8), Length (16, of the Value alone),
Value. A list of them is read to its end or to its first break, and every
fault is said (which TLV, where, why) instead of raised: a reflector returns
what it could not read with the M flag set, a sender shows it.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass

#: Octets of a TLV's Flags, Type and Length.
HEADER = 4
_HEADER = struct.Struct("!BBH")


class Flag(enum.IntFlag):
    """
    The TLV flags (RFC 8972 §4). A sender sets U on every TLV it sends and M
    and I clear; a reflector clears U on those it understood and leaves it on
    the others, sets M on a malformed one, and I on those that failed HMAC
    verification. The other five bits are reserved: zero when sent, ignored
    when read.
    """

    U = 0x80  #: Unrecognized
    M = 0x40  #: Malformed
    I = 0x20  #: Integrity failed  # noqa: E741 (the RFC's name)


class TlvType(enum.IntEnum):
    """The TLV types RFC 8972 §4 defines (IANA's STAMP TLV Types registry)."""

    EXTRA_PADDING = 1  #: §4.1
    LOCATION = 2  #: §4.2
    TIMESTAMP_INFORMATION = 3  #: §4.3
    CLASS_OF_SERVICE = 4  #: §4.4
    DIRECT_MEASUREMENT = 5  #: §4.5
    ACCESS_REPORT = 6  #: §4.6
    FOLLOW_UP_TELEMETRY = 7  #: §4.7
    HMAC = 8  #: §4.8


#: The one Length each fixed-size type has.
FIXED_LENGTH: dict[int, int] = {
    TlvType.CLASS_OF_SERVICE: 4,
    TlvType.DIRECT_MEASUREMENT: 12,
    TlvType.ACCESS_REPORT: 4,
    TlvType.FOLLOW_UP_TELEMETRY: 16,
    TlvType.HMAC: 16,
}
#: The types whose Value is 4 octets of their own and then sub-TLVs, in the TLV format (with types of
#: their own, from IANA's STAMP Sub-TLV Types registry).
WITH_SUB_TLVS: frozenset[int] = frozenset({TlvType.LOCATION, TlvType.TIMESTAMP_INFORMATION})
#: Where the sub-TLVs begin in such a Value.
SUB_TLVS_AT = 4


@dataclass(frozen=True, slots=True)
class Tlv:
    """One TLV as on the wire: its Length is that of C{value}; C{flags} as received, reserved bits too."""

    type: int
    value: bytes = b""
    flags: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.type < 256 or not 0 <= self.flags < 256:
            raise ValueError(f"a TLV's Type and Flags are octets: type {self.type}, flags {self.flags}")
        if len(self.value) > 0xFFFF:
            raise ValueError(f"a TLV's Length is 16 bits: its value cannot be {len(self.value)} octets")

    @property
    def size(self) -> int:
        """Octets on the wire, header included."""
        return HEADER + len(self.value)

    @property
    def unrecognized(self) -> bool:
        return bool(self.flags & Flag.U)

    @property
    def malformed(self) -> bool:
        return bool(self.flags & Flag.M)

    @property
    def integrity_failed(self) -> bool:
        return bool(self.flags & Flag.I)

    def with_flags(self, flags: int) -> Tlv:
        """The same Type and Value under C{flags}."""
        return Tlv(self.type, self.value, int(flags))

    def encode(self) -> bytes:
        return _HEADER.pack(self.flags, self.type, len(self.value)) + self.value


class Problem(enum.Enum):
    """What is wrong with a TLV; C{marks}: whether RFC 8972 §4 calls it malformed (a reflector's M)."""

    #: Fewer than 4 octets are left where a TLV begins: no header.
    SHORT_HEADER = ("no whole TLV header", True)
    #: The Length runs past the end of the packet.
    BEYOND_END = ("its Length runs past the end", True)
    #: The Length is not the one the type has.
    WRONG_LENGTH = ("its Length is not its type's", True)
    #: The type carries sub-TLVs, and those are malformed.
    BAD_SUB_TLVS = ("its sub-TLVs are malformed", True)
    #: An HMAC TLV that is not the last TLV (RFC 8972 §4.8: it MUST be).
    HMAC_NOT_LAST = ("an HMAC TLV not last", False)

    def __init__(self, text: str, marks: bool) -> None:
        self.text = text
        self.marks = marks


@dataclass(frozen=True, slots=True)
class Malformed:
    """
    One fault in a TLV list: the TLV's place in the list (C{index}, from 0;
    L{Extensions.tlvs} has it unless the fault is where the list breaks off),
    its first octet's C{offset} in the packet, its Type if that octet was
    there, what is wrong and the figures of it.
    """

    index: int
    offset: int
    type: int | None
    problem: Problem
    detail: str

    def __str__(self) -> str:
        kind = "" if self.type is None else f" (type {self.type})"
        return f"TLV {self.index}{kind} at octet {self.offset}: {self.problem.text}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Extensions:
    """
    The TLVs of a packet, in order, and what could not be read as TLVs.
    C{tlvs} are those with a whole header and value (a wrong Length for
    their type does not move the next one's start); C{trailing} is what is
    left from where the list broke off: a cut header, or a TLV whose Length
    runs past the end (random padding reads as such). C{malformed} names
    every fault, in order. Encoded, it is the octets it was read from.
    """

    tlvs: tuple[Tlv, ...] = ()
    malformed: tuple[Malformed, ...] = ()
    trailing: bytes = b""

    @property
    def size(self) -> int:
        """Octets on the wire."""
        return sum(tlv.size for tlv in self.tlvs) + len(self.trailing)

    @property
    def well_formed(self) -> bool:
        return not self.malformed

    def faulty(self) -> frozenset[int]:
        """The indexes, in L{tlvs}, of the TLVs a reflector marks malformed."""
        return frozenset(m.index for m in self.malformed if m.problem.marks and m.index < len(self.tlvs))

    def __iter__(self) -> Iterator[Tlv]:
        return iter(self.tlvs)

    def encode(self) -> bytes:
        return b"".join(tlv.encode() for tlv in self.tlvs) + self.trailing


#: No TLVs at all.
NONE = Extensions()


def parse_tlvs(data: bytes, start: int = 0) -> Extensions:
    """
    The TLVs in C{data} from octet C{start} to its end, each checked against
    its type's rules; offsets in the faults count from the start of C{data}.
    Never raises.
    """
    tlvs, faults, end = _split(data, start)
    for index, tlv in enumerate(tlvs):
        if fault := _type_fault(tlv):
            faults.append(Malformed(index, _offset(tlvs, index, start), tlv.type, *fault))
        if tlv.type == TlvType.HMAC and (index < len(tlvs) - 1 or end < len(data)):
            where = _offset(tlvs, index, start)
            faults.append(Malformed(index, where, tlv.type, Problem.HMAC_NOT_LAST, "more follows it"))
    faults.sort(key=lambda fault: fault.index)
    return Extensions(tuple(tlvs), tuple(faults), bytes(data[end:]))


def parse_sub_tlvs(data: bytes, start: int = 0) -> Extensions:
    """Sub-TLVs (RFC 8972 §4.2, §4.3): the TLV format, with types of their own that nothing checks here."""
    tlvs, faults, end = _split(data, start)
    return Extensions(tuple(tlvs), tuple(faults), bytes(data[end:]))


def _split(data: bytes, start: int) -> tuple[list[Tlv], list[Malformed], int]:
    """The whole TLVs from C{start}, the fault where they break off, and the offset they end at."""
    tlvs: list[Tlv] = []
    faults: list[Malformed] = []
    offset, end = start, len(data)
    while offset < end:
        left = end - offset
        if left < HEADER:
            kind = data[offset + 1] if left > 1 else None
            detail = f"{left} octet{'s' if left > 1 else ''} left, a header has {HEADER}"
            faults.append(Malformed(len(tlvs), offset, kind, Problem.SHORT_HEADER, detail))
            break
        flags, kind, length = _HEADER.unpack_from(data, offset)
        if length > left - HEADER:
            detail = f"Length {length}, {left - HEADER} octets left"
            faults.append(Malformed(len(tlvs), offset, kind, Problem.BEYOND_END, detail))
            break
        tlvs.append(Tlv(kind, bytes(data[offset + HEADER : offset + HEADER + length]), flags))
        offset += HEADER + length
    return tlvs, faults, offset


def _offset(tlvs: list[Tlv], index: int, start: int) -> int:
    return start + sum(tlv.size for tlv in tlvs[:index])


def _type_fault(tlv: Tlv) -> tuple[Problem, str] | None:
    """What is wrong with C{tlv} for its type, if its type is one of RFC 8972's."""
    length = len(tlv.value)
    if (wanted := FIXED_LENGTH.get(tlv.type)) is not None and length != wanted:
        return Problem.WRONG_LENGTH, f"Length {length}, type {tlv.type} has {wanted}"
    if tlv.type in WITH_SUB_TLVS:
        if length < SUB_TLVS_AT:
            return Problem.WRONG_LENGTH, f"Length {length}, type {tlv.type} has at least {SUB_TLVS_AT}"
        inner = parse_sub_tlvs(tlv.value, SUB_TLVS_AT)
        if inner.malformed:
            return Problem.BAD_SUB_TLVS, f"sub-{inner.malformed[0]} of its value"
    return None
