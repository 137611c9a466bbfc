"""
STAMP's unauthenticated test packets (RFC 8762 §4.2.1 and §4.3.1, with
the SSID and TLVs of RFC 8972 §3 and §4), from and to octets.

Both are 44 octets, then TLVs. The sender's: Sequence Number (4), Timestamp
(8), Error Estimate (2), SSID (2), 28 octets MBZ. The reflector's: Sequence
Number (4), Timestamp t3 (8), Error Estimate (2), SSID (2), Receive
Timestamp t2 (8), then the sender's Sequence Number (4), Timestamp t1 (8)
and Error Estimate (2) copied, 2 octets MBZ, the TTL or Hop Limit the
request arrived with (1), 3 octets MBZ.

Reading is tolerant, as the reflectors in the field need: some answer with
38 octets (no TTL and the MBZ around it), some write t2 = t3, some pad at
random. A packet is read as far as it goes; a field it does not reach is
C{None}; octets past the 44 are read as TLVs, and what is not a TLV is kept
as it came and named (L{echod.stamp.tlv.Extensions}). Only a packet too short
for the fields no use of it can do without is refused, with L{NotStampError}.
Timestamps are the 64-bit numbers on the wire (L{echod.stamp.timestamps}
converts), so that what a reflector copies is copied bit for bit.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from echod.stamp.estimate import ErrorEstimate
from echod.stamp.timestamps import from_wire, to_wire
from echod.stamp.tlv import NONE, Extensions, Tlv, parse_tlvs

#: The octets of either packet before its TLVs (RFC 8762 §4.2.1, §4.3.1).
BASE = 44
#: A request must hold the Sequence Number, Timestamp and Error Estimate, which its reply copies.
REQUEST_MINIMUM = 14
#: A reply must hold everything up to the sender's Sequence Number, which matches it to its request.
REPLY_MINIMUM = 28

_SENDER = struct.Struct("!IQHH28x")
_REFLECTOR = struct.Struct("!IQHHQIQHxxB3x")
_REPLY_HEAD = struct.Struct("!IQHHQI")
_REQUEST_HEAD = struct.Struct("!IQH")
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class NotStampError(ValueError):
    """Octets too few to be a STAMP packet of the kind asked for: C{length} of the C{needed}."""

    def __init__(self, kind: str, length: int, needed: int) -> None:
        super().__init__(f"{length} octets are no STAMP {kind} packet: it needs at least {needed}")
        self.kind = kind
        self.length = length
        self.needed = needed


def _fit(wire: bytes, length: int | None) -> bytes:
    """C{wire} made C{length} octets long: cut, or filled with zeros; as it is for C{None}."""
    if length is None or length == len(wire):
        return wire
    return wire[:length] + bytes(max(0, length - len(wire)))


@dataclass(frozen=True, slots=True)
class SenderPacket:
    """
    A Session-Sender test packet (RFC 8762 §4.2.1, RFC 8972 §3). C{timestamp}
    (t1) is in the format C{error.ptp} names. C{ssid} is C{None} when the
    packet ended before it (a TWAMP-Light sender's may). C{length}: the
    octets it came in, or is to be sent in; C{None}, as many as it encodes to.
    """

    sequence: int
    timestamp: int
    error: ErrorEstimate
    ssid: int | None = 0
    extensions: Extensions = NONE
    length: int | None = None

    @property
    def size(self) -> int:
        """Octets on the wire."""
        return BASE + self.extensions.size if self.length is None else self.length

    def sent_ns(self, tai_offset: int = 0) -> int:
        """When the sender says it sent the packet (t1), in nanoseconds since the Unix epoch."""
        return from_wire(self.timestamp, self.error.ptp, tai_offset)

    def encode(self) -> bytes:
        head = _SENDER.pack(self.sequence, self.timestamp, self.error.encode(), self.ssid or 0)
        return _fit(head + self.extensions.encode(), self.length)


@dataclass(frozen=True, slots=True)
class ReflectorPacket:
    """
    A Session-Reflector test packet (RFC 8762 §4.3.1, RFC 8972 §3).
    C{timestamp} (t3) and C{received} (t2) are in the format C{error.ptp}
    names, C{sender_timestamp} (t1) in that of C{sender_error.ptp}. The
    fields a short packet does not reach are C{None}; C{ttl} is written as 0
    when it is C{None} (no datagram arrives with a TTL of 0). C{length} as
    in L{SenderPacket}.
    """

    sequence: int
    timestamp: int
    error: ErrorEstimate
    ssid: int
    received: int
    sender_sequence: int
    sender_timestamp: int | None = None
    sender_error: ErrorEstimate | None = None
    ttl: int | None = None
    extensions: Extensions = NONE
    length: int | None = None

    @property
    def size(self) -> int:
        """Octets on the wire."""
        return BASE + self.extensions.size if self.length is None else self.length

    def sent_ns(self, tai_offset: int = 0) -> int:
        """When the reflector says it sent its answer (t3), in nanoseconds since the Unix epoch."""
        return from_wire(self.timestamp, self.error.ptp, tai_offset)

    def received_ns(self, tai_offset: int = 0) -> int:
        """When the reflector says it received the request (t2)."""
        return from_wire(self.received, self.error.ptp, tai_offset)

    def turnaround_ns(self) -> int:
        """
        How long the reflector held the request (t3 - t2), by its own clock:
        what a round trip less it leaves is the network's. 0 from a reflector
        that writes t2 = t3; negative from one whose clock stepped back.
        """
        return self.sent_ns() - self.received_ns()

    def sender_sent_ns(self, tai_offset: int = 0) -> int | None:
        """The request's own timestamp (t1) as the reflector copied it, if the packet reaches it."""
        if self.sender_timestamp is None:
            return None
        ptp = self.sender_error.ptp if self.sender_error is not None else False
        return from_wire(self.sender_timestamp, ptp, tai_offset)

    def encode(self) -> bytes:
        head = _REFLECTOR.pack(
            self.sequence,
            self.timestamp,
            self.error.encode(),
            self.ssid,
            self.received,
            self.sender_sequence,
            self.sender_timestamp or 0,
            self.sender_error.encode() if self.sender_error is not None else 0,
            self.ttl or 0,
        )
        return _fit(head + self.extensions.encode(), self.length)


def request(
    sequence: int,
    sent_ns: int,
    error: ErrorEstimate,
    ssid: int = 0,
    tlvs: Iterable[Tlv] = (),
    tai_offset: int = 0,
) -> SenderPacket:
    """A sender's packet stamped C{sent_ns}, in the format C{error.ptp} names, with C{tlvs}."""
    extensions = Extensions(tuple(tlvs))
    return SenderPacket(sequence, to_wire(sent_ns, error.ptp, tai_offset), error, ssid, extensions)


def parse_request(data: bytes) -> SenderPacket:
    """
    The sender's packet in C{data}, read as far as it goes (see the module);
    L{NotStampError} if it is shorter than L{REQUEST_MINIMUM}.
    """
    if len(data) < REQUEST_MINIMUM:
        raise NotStampError("sender", len(data), REQUEST_MINIMUM)
    sequence, timestamp, error = _REQUEST_HEAD.unpack_from(data)
    ssid = _U16.unpack_from(data, 14)[0] if len(data) >= 16 else None
    extensions = parse_tlvs(data, BASE) if len(data) > BASE else NONE
    return SenderPacket(sequence, timestamp, ErrorEstimate.decode(error), ssid, extensions, len(data))


def parse_reply(data: bytes) -> ReflectorPacket:
    """
    The reflector's packet in C{data}, read as far as it goes (see the
    module); L{NotStampError} if it is shorter than L{REPLY_MINIMUM}.
    """
    length = len(data)
    if length < REPLY_MINIMUM:
        raise NotStampError("reflector", length, REPLY_MINIMUM)
    sequence, timestamp, error, ssid, received, sender_sequence = _REPLY_HEAD.unpack_from(data)
    return ReflectorPacket(
        sequence,
        timestamp,
        ErrorEstimate.decode(error),
        ssid,
        received,
        sender_sequence,
        _U64.unpack_from(data, 28)[0] if length >= 36 else None,
        ErrorEstimate.decode(_U16.unpack_from(data, 36)[0]) if length >= 38 else None,
        data[40] if length >= 41 else None,
        parse_tlvs(data, BASE) if length > BASE else NONE,
        length,
    )
