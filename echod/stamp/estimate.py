"""
The Error Estimate of a STAMP timestamp (RFC 8762 §4.2.1, as RFC 4656
§4.1.2 defines it; Z from RFC 8186 §2.3): 16 bits, S | Z | Scale (6) |
Multiplier (8), saying how far the clock that wrote the timestamp may be off:
Multiplier x 2^(Scale - 32) seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

_NS = 1_000_000_000
_S = 0x8000
_Z = 0x4000


@dataclass(frozen=True, slots=True)
class ErrorEstimate:
    """
    One Error Estimate (RFC 4656 §4.1.2). C{synchronized} is S: the clock is
    kept to UTC by an external source. C{ptp} is Z: the timestamps beside it
    are PTPv2 truncated ones, not NTP ones (RFC 8186 §2.3). A Multiplier of
    0, which RFC 4656 forbids, is kept as received: L{valid} says so.
    """

    synchronized: bool = False
    ptp: bool = False
    scale: int = 0
    multiplier: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.scale < 64:
            raise ValueError(f"an Error Estimate's Scale is 6 bits (0 to 63), not {self.scale}")
        if not 0 <= self.multiplier < 256:
            raise ValueError(f"an Error Estimate's Multiplier is 8 bits (0 to 255), not {self.multiplier}")

    @classmethod
    def decode(cls, value: int) -> ErrorEstimate:
        """The Error Estimate of the 16-bit field C{value}."""
        return cls(bool(value & _S), bool(value & _Z), (value >> 8) & 0x3F, value & 0xFF)

    def encode(self) -> int:
        """The 16-bit field."""
        return (_S if self.synchronized else 0) | (_Z if self.ptp else 0) | self.scale << 8 | self.multiplier

    @property
    def valid(self) -> bool:
        """Whether the Multiplier is not 0 (RFC 4656 §4.1.2: it MUST NOT be)."""
        return self.multiplier != 0

    @property
    def seconds(self) -> Fraction:
        """The error it states, exactly: Multiplier x 2^(Scale - 32) s."""
        return Fraction(self.multiplier << self.scale, 1 << 32)

    @property
    def ns(self) -> int:
        """The error it states in nanoseconds, rounded up."""
        return -(-(self.multiplier << self.scale) * _NS // (1 << 32))

    @classmethod
    def covering(cls, error_ns: int, synchronized: bool, ptp: bool = False) -> ErrorEstimate:
        """
        The smallest Error Estimate that states at least C{error_ns}: never
        less than the error, whatever the rounding. Of the Scales whose
        Multiplier fits in 8 bits the smallest has the finest step, so it
        overshoots least. No error is stated as the smallest there is
        (Multiplier 1, Scale 0: 2^-32 s), since a Multiplier of 0 is invalid.
        """
        if error_ns < 0:
            raise ValueError(f"an error is not negative: {error_ns} ns")
        wanted = error_ns << 32  # Multiplier x 2^Scale x 10^9 must reach this
        for scale in range(64):
            multiplier = -(-wanted // (_NS << scale))
            if multiplier < 256:
                return cls(synchronized, ptp, scale, max(multiplier, 1))
        raise ValueError(f"{error_ns} ns is more than an Error Estimate can state (255 x 2^31 s)")
