"""
The Values of the eight TLV types RFC 8972 §4 defines, as typed values:
each reads a Value (L{decode}, after L{echod.stamp.tlv.parse_tlvs} has found
its Length right) and writes one (C{value()}, or C{tlv(flags)} for the whole
TLV). Reserved fields are kept as received, so that a Value comes back as it
went. The sub-TLVs of Location and Timestamp Information stay in the TLV
format: their types are the reflector's to fill in.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from echod.stamp.tlv import (
    FIXED_LENGTH,
    SUB_TLVS_AT,
    WITH_SUB_TLVS,
    Extensions,
    Flag,
    Tlv,
    TlvType,
    parse_sub_tlvs,
)


class SyncSource(IntEnum):
    """The clock sources of Timestamp Information (RFC 8972 §4.3; IANA's registry has more)."""

    NTP = 1
    PTP = 2


class TimestampMethod(IntEnum):
    """How a timestamp was taken (RFC 8972 §4.3, §4.7; IANA's STAMP Timestamping Methods)."""

    HW_ASSIST = 1
    SW_LOCAL = 2
    CONTROL_PLANE = 3


class AccessId(IntEnum):
    """The networks of an Access Report (RFC 8972 §4.6)."""

    THREE_GPP = 1
    NON_THREE_GPP = 2


def _fits(name: str, value: int, bits: int) -> None:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{name} is {bits} bits: 0 to {(1 << bits) - 1}, not {value}")


def _sub_tlvs(value: bytes) -> tuple[Tlv, ...]:
    parsed = parse_sub_tlvs(value, SUB_TLVS_AT)
    if parsed.malformed:
        raise ValueError(f"malformed sub-TLVs: {parsed.malformed[0]}")
    return parsed.tlvs


class _Value:
    """What the eight have in common: a type, and the whole TLV from the Value."""

    TYPE: ClassVar[TlvType]
    __slots__ = ()

    def value(self) -> bytes:
        raise NotImplementedError

    def tlv(self, flags: int = Flag.U) -> Tlv:
        """The TLV; by default under the flags a sender sends (U set)."""
        return Tlv(int(self.TYPE), self.value(), int(flags))


@dataclass(frozen=True, slots=True)
class ExtraPadding(_Value):
    """Extra Padding (RFC 8972 §4.1): octets that make the packet longer, any number of them."""

    TYPE: ClassVar[TlvType] = TlvType.EXTRA_PADDING
    padding: bytes = b""

    @classmethod
    def decode(cls, value: bytes) -> ExtraPadding:
        return cls(bytes(value))

    @classmethod
    def zeros(cls, octets: int) -> ExtraPadding:
        return cls(bytes(octets))

    def value(self) -> bytes:
        return self.padding


@dataclass(frozen=True, slots=True)
class Location(_Value):
    """Location (RFC 8972 §4.2): the ports the packet was sent to and from, then sub-TLVs (addresses)."""

    TYPE: ClassVar[TlvType] = TlvType.LOCATION
    destination_port: int = 0
    source_port: int = 0
    sub_tlvs: tuple[Tlv, ...] = ()

    def __post_init__(self) -> None:
        _fits("a port", self.destination_port, 16)
        _fits("a port", self.source_port, 16)

    @classmethod
    def decode(cls, value: bytes) -> Location:
        destination, source = struct.unpack_from("!HH", value)
        return cls(destination, source, _sub_tlvs(value))

    def value(self) -> bytes:
        return struct.pack("!HH", self.destination_port, self.source_port) + _join(self.sub_tlvs)


@dataclass(frozen=True, slots=True)
class TimestampInformation(_Value):
    """
    Timestamp Information (RFC 8972 §4.3): the reflector's clock source and
    timestamping method for the receive (In) and transmit (Out) timestamps
    (L{SyncSource}, L{TimestampMethod}), then sub-TLVs.
    """

    TYPE: ClassVar[TlvType] = TlvType.TIMESTAMP_INFORMATION
    sync_in: int = 0
    method_in: int = 0
    sync_out: int = 0
    method_out: int = 0
    sub_tlvs: tuple[Tlv, ...] = ()

    def __post_init__(self) -> None:
        for name in ("sync_in", "method_in", "sync_out", "method_out"):
            _fits(name, getattr(self, name), 8)

    @classmethod
    def decode(cls, value: bytes) -> TimestampInformation:
        return cls(*value[:SUB_TLVS_AT], sub_tlvs=_sub_tlvs(value))

    def value(self) -> bytes:
        head = bytes((self.sync_in, self.method_in, self.sync_out, self.method_out))
        return head + _join(self.sub_tlvs)


@dataclass(frozen=True, slots=True)
class ClassOfService(_Value):
    """
    Class of Service (RFC 8972 §4.4): DSCP1 (6 bits), the code point the
    sender asks the reflected packet to carry; DSCP2 (6) and ECN (2), those
    the reflector received the test packet with; RP (2), Reverse Path; 16
    reserved bits.
    """

    TYPE: ClassVar[TlvType] = TlvType.CLASS_OF_SERVICE
    dscp1: int = 0
    dscp2: int = 0
    ecn: int = 0
    rp: int = 0
    reserved: int = 0

    def __post_init__(self) -> None:
        _fits("DSCP1", self.dscp1, 6)
        _fits("DSCP2", self.dscp2, 6)
        _fits("ECN", self.ecn, 2)
        _fits("RP", self.rp, 2)
        _fits("the reserved field", self.reserved, 16)

    @classmethod
    def decode(cls, value: bytes) -> ClassOfService:
        head, reserved = struct.unpack("!HH", value)
        return cls(head >> 10, (head >> 4) & 0x3F, (head >> 2) & 3, head & 3, reserved)

    def value(self) -> bytes:
        head = self.dscp1 << 10 | self.dscp2 << 4 | self.ecn << 2 | self.rp
        return struct.pack("!HH", head, self.reserved)


@dataclass(frozen=True, slots=True)
class DirectMeasurement(_Value):
    """
    Direct Measurement (RFC 8972 §4.5): packet counters, each 32 bits: the
    sender's transmitted (S_TxC), the reflector's received (R_RxC) and
    transmitted (R_TxC).
    """

    TYPE: ClassVar[TlvType] = TlvType.DIRECT_MEASUREMENT
    sender_tx: int = 0
    reflector_rx: int = 0
    reflector_tx: int = 0

    def __post_init__(self) -> None:
        for name in ("sender_tx", "reflector_rx", "reflector_tx"):
            _fits(name, getattr(self, name), 32)

    @classmethod
    def decode(cls, value: bytes) -> DirectMeasurement:
        return cls(*struct.unpack("!III", value))

    def value(self) -> bytes:
        return struct.pack("!III", self.sender_tx, self.reflector_rx, self.reflector_tx)


@dataclass(frozen=True, slots=True)
class AccessReport(_Value):
    """
    Access Report (RFC 8972 §4.6): ID (4 bits, L{AccessId}), 4 reserved bits,
    Return Code (8), 16 reserved bits.
    """

    TYPE: ClassVar[TlvType] = TlvType.ACCESS_REPORT
    access_id: int = 0
    return_code: int = 0
    reserved_bits: int = 0
    reserved: int = 0

    def __post_init__(self) -> None:
        _fits("the ID", self.access_id, 4)
        _fits("the Return Code", self.return_code, 8)
        _fits("the reserved bits", self.reserved_bits, 4)
        _fits("the reserved field", self.reserved, 16)

    @classmethod
    def decode(cls, value: bytes) -> AccessReport:
        first, code, reserved = struct.unpack("!BBH", value)
        return cls(first >> 4, code, first & 0xF, reserved)

    def value(self) -> bytes:
        return struct.pack("!BBH", self.access_id << 4 | self.reserved_bits, self.return_code, self.reserved)


@dataclass(frozen=True, slots=True)
class FollowUpTelemetry(_Value):
    """
    Follow-Up Telemetry (RFC 8972 §4.7): the reflector's sequence number of
    the packet it reflected before, that packet's actual transmit timestamp
    (64 bits as on the wire, in the format of the reflector's Z), how it was
    taken (L{TimestampMethod}), 24 reserved bits.
    """

    TYPE: ClassVar[TlvType] = TlvType.FOLLOW_UP_TELEMETRY
    sequence: int = 0
    timestamp: int = 0
    mode: int = 0
    reserved: int = 0

    def __post_init__(self) -> None:
        _fits("the sequence number", self.sequence, 32)
        _fits("the timestamp", self.timestamp, 64)
        _fits("the timestamp mode", self.mode, 8)
        _fits("the reserved field", self.reserved, 24)

    @classmethod
    def decode(cls, value: bytes) -> FollowUpTelemetry:
        sequence, timestamp, tail = struct.unpack("!IQI", value)
        return cls(sequence, timestamp, tail >> 24, tail & 0xFFFFFF)

    def value(self) -> bytes:
        return struct.pack("!IQI", self.sequence, self.timestamp, self.mode << 24 | self.reserved)


@dataclass(frozen=True, slots=True)
class Hmac(_Value):
    """HMAC (RFC 8972 §4.8): 16 octets of HMAC-SHA-256 over the packet and its TLVs; the last TLV."""

    TYPE: ClassVar[TlvType] = TlvType.HMAC
    digest: bytes = bytes(16)

    def __post_init__(self) -> None:
        if len(self.digest) != FIXED_LENGTH[TlvType.HMAC]:
            raise ValueError(f"an HMAC is 16 octets, not {len(self.digest)}")

    @classmethod
    def decode(cls, value: bytes) -> Hmac:
        return cls(bytes(value))

    def value(self) -> bytes:
        return self.digest


TypedValue = (
    ExtraPadding
    | Location
    | TimestampInformation
    | ClassOfService
    | DirectMeasurement
    | AccessReport
    | FollowUpTelemetry
    | Hmac
)

#: Each type's value class.
BY_TYPE: dict[int, type[TypedValue]] = {
    cls.TYPE: cls
    for cls in (
        ExtraPadding,
        Location,
        TimestampInformation,
        ClassOfService,
        DirectMeasurement,
        AccessReport,
        FollowUpTelemetry,
        Hmac,
    )
}
assert set(FIXED_LENGTH) | set(WITH_SUB_TLVS) <= set(BY_TYPE)


def typed(tlv: Tlv) -> TypedValue | None:
    """
    C{tlv}'s Value as its type's value; C{None} for a type RFC 8972 does not
    define. ValueError if the Value does not fit its type: a TLV that
    L{echod.stamp.tlv.parse_tlvs} found malformed.
    """
    cls = BY_TYPE.get(tlv.type)
    if cls is None:
        return None
    wanted = FIXED_LENGTH.get(tlv.type)
    if wanted is not None and len(tlv.value) != wanted:
        raise ValueError(f"type {tlv.type} has a {wanted}-octet value, not {len(tlv.value)}")
    if tlv.type in WITH_SUB_TLVS and len(tlv.value) < SUB_TLVS_AT:
        raise ValueError(
            f"type {tlv.type} has a value of at least {SUB_TLVS_AT} octets, not {len(tlv.value)}"
        )
    return cls.decode(tlv.value)


def decoded(extensions: Extensions) -> tuple[tuple[Tlv, TypedValue | None], ...]:
    """
    Each TLV of C{extensions} with its typed value: C{None} for an unknown
    type and for one the list's faults name as malformed.
    """
    faulty = extensions.faulty()
    return tuple((tlv, None if index in faulty else typed(tlv)) for index, tlv in enumerate(extensions.tlvs))


def _join(tlvs: Sequence[Tlv]) -> bytes:
    return b"".join(tlv.encode() for tlv in tlvs)
