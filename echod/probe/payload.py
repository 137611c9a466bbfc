"""
A probe of `echod probe`: its payload, its record, and how an answer differs
from it. Pure, no I/O.

A probe's payload is its sequence number (8 bytes, big-endian) and bytes from
SHAKE-128 keyed with a random key of the run: unique to the probe, random to
the network, and remade from the number alone when a late answer must be
checked after the payload itself was let go.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

SEQ_BYTES = 8


def make_payload(key: bytes, seq: int, size: int) -> bytes:
    """The C{size} bytes of probe C{seq}: its number, then SHAKE-128 of the run's C{key} and the number."""
    head = seq.to_bytes(SEQ_BYTES, "big")
    if size <= SEQ_BYTES:
        return head[SEQ_BYTES - size :]
    return head + hashlib.shake_128(key + head).digest(size - SEQ_BYTES)


@dataclass
class Mismatch:
    """How the bytes that came back for one probe differ from those sent."""

    count: int = 0
    first: int = -1
    got: int = 0
    wanted: int = 0
    missing: int = 0
    extra: int = 0

    def compare(self, sent: bytes, offset: int, got: bytes) -> None:
        """Compare C{got} with C{sent} from C{offset} on; C{got} must fit within C{sent}."""
        if sent.startswith(got, offset):
            return
        for index, (want, have) in enumerate(zip(sent[offset : offset + len(got)], got, strict=True)):
            if want != have:
                if self.first < 0:
                    self.first, self.got, self.wanted = offset + index, have, want
                self.count += 1

    def __bool__(self) -> bool:
        return bool(self.count or self.missing or self.extra)

    def describe(self, size: int) -> str:
        parts = []
        if self.count:
            parts.append(
                f"{self.count} of {size} bytes differ, the first at offset {self.first} "
                f"(0x{self.got:02x} for 0x{self.wanted:02x})"
            )
        if self.missing:
            parts.append(f"{self.missing} bytes short")
        if self.extra:
            parts.append(f"{self.extra} bytes more than sent")
        return ", ".join(parts)


def compare_whole(sent: bytes, got: bytes) -> Mismatch:
    """The mismatch between a whole answer and its probe (a datagram's)."""
    mismatch = Mismatch()
    common = min(len(sent), len(got))
    mismatch.compare(sent, 0, got[:common])
    mismatch.missing = max(0, len(sent) - len(got))
    mismatch.extra = max(0, len(got) - len(sent))
    return mismatch


@dataclass(eq=False)
class Probe:
    """One probe sent: its payload while it may still be compared, its times, its state."""

    seq: int
    payload: bytes | None
    size: int
    #: timer() when the probe began: its connection attempt, or its send.
    started: float
    sent_at: float | None = None
    connect: float | None = None
    timeout: object | None = None  # the IDelayedCall of its timeout
    timed_out: bool = False
    decided: bool = False
    #: Per-probe channel state (its connection, for --connect).
    channel_state: object | None = field(default=None, repr=False)
