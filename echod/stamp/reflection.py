"""
A Session-Reflector's answer to a request (RFC 8762 §4.3, RFC 8972 §3-§4),
built so that it is never longer than the request: the reflector's packet
has the sender's 44 octets, and every TLV goes back in its place at its own
length, whatever the reflector made of it. A request shorter than 44 octets
gets an answer cut to its own length (below L{REPLY_MINIMUM} that is no
reply a sender can match: a reflector may as well drop such requests).

TLVs go back as RFC 8972 §4 says: the ones the reflector understood with U
clear and its own Value, the others with U set and their Value as it came,
the malformed ones with M set (and U clear: their type is known or none);
what could not be read as TLVs at all goes back as it came but for its first
octet, where a TLV's flags would be: M alone, as on any other malformed TLV.
"""

from __future__ import annotations

from collections.abc import Callable

from echod.stamp.estimate import ErrorEstimate
from echod.stamp.packets import REPLY_MINIMUM, ReflectorPacket, SenderPacket
from echod.stamp.timestamps import to_wire
from echod.stamp.tlv import Extensions, Flag, Tlv

__all__ = ["REPLY_MINIMUM", "Answer", "reflect", "reflect_tlvs"]

#: What a reflector makes of one well-formed TLV of a request: the TLV to send back, the same
#: length, under its own flags (U clear), or None for a TLV it does not understand.
Answer = Callable[[Tlv], Tlv | None]


def _understood_none(tlv: Tlv) -> Tlv | None:
    return None


def reflect_tlvs(extensions: Extensions, answer: Answer = _understood_none) -> Extensions:
    """
    The TLVs to send back for a request's C{extensions}, the same octets
    long: C{answer} for each well-formed one, U for those it returns
    C{None} for, M for the malformed ones. ValueError if C{answer} returns
    a TLV of another length than the one it answers.
    """
    faulty = extensions.faulty()
    back: list[Tlv] = []
    for index, tlv in enumerate(extensions.tlvs):
        if index in faulty:
            back.append(tlv.with_flags(Flag.M))
            continue
        mine = answer(tlv)
        if mine is None:
            back.append(tlv.with_flags(Flag.U))
        elif len(mine.value) != len(tlv.value):
            raise ValueError(
                f"the answer to a type {tlv.type} TLV of {len(tlv.value)} octets has {len(mine.value)}"
            )
        else:
            back.append(mine)
    trailing = extensions.trailing
    if trailing:
        trailing = bytes((Flag.M,)) + trailing[1:]
    return Extensions(tuple(back), extensions.malformed, trailing)


def reflect(
    request: SenderPacket,
    *,
    received_ns: int,
    sent_ns: int,
    error: ErrorEstimate,
    ttl: int | None,
    sequence: int | None = None,
    extensions: Extensions | None = None,
    tai_offset: int = 0,
) -> ReflectorPacket:
    """
    The answer to C{request}, received at C{received_ns} (t2: the kernel's
    receive time), sent at C{sent_ns} (t3), both written in the format
    C{error.ptp} names; C{ttl} as the request arrived with it (C{None}:
    unknown, written as 0). C{sequence}: the reflector's own count in
    stateful mode; C{None} (stateless) copies the request's. C{extensions}:
    the TLVs to send back (L{reflect_tlvs}); C{None} sends every TLV back
    as not understood. The answer is as long as the request (L{size
    <ReflectorPacket.size>}); ValueError if C{extensions} would make it
    longer or shorter.
    """
    if extensions is None:
        extensions = reflect_tlvs(request.extensions)
    elif extensions.size != request.extensions.size:
        raise ValueError(
            f"the TLVs sent back take {extensions.size} octets, the request's {request.extensions.size}"
        )
    return ReflectorPacket(
        sequence=request.sequence if sequence is None else sequence,
        timestamp=to_wire(sent_ns, error.ptp, tai_offset),
        error=error,
        ssid=request.ssid or 0,
        received=to_wire(received_ns, error.ptp, tai_offset),
        sender_sequence=request.sequence,
        sender_timestamp=request.timestamp,
        sender_error=request.error,
        ttl=ttl,
        extensions=extensions,
        length=request.size,
    )
