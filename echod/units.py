"""
Sizes and durations as admins write them: C{16M}, C{64K}, C{300s}, C{5m}.

Kept apart from L{echod.config} so that the grammar of a value can be read and
tested without the grammar of the file around it.
"""

import re

#: A receive this size holds any UDP datagram whole: UDP's length field is 16 bits and counts its
#: own 8-byte header, so no payload is longer than 65527 bytes (65507 over IPv4, whose header
#: counts too). Every datagram socket's Twisted maxPacketSize; its default, 8192, would cut longer
#: datagrams silently.
MAX_DATAGRAM = 65535

_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?", re.IGNORECASE)
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_size(text: str) -> int:
    """
    Parse a byte count: digits with an optional binary suffix (K, M, G, T, each
    optionally followed by B or iB), e.g. C{512}, C{64K}, C{16MiB}.

    @raise ValueError: if C{text} is not such a size.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None or (match.group(3) and not match.group(2) and match.group(3).lower() == "ib"):
        raise ValueError(f"{text!r} is not a size; write bytes, or a number with K, M, G or T (e.g. 16M)")
    return int(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()]


def parse_duration(text: str) -> float:
    """
    Parse a duration in seconds: a number with an optional unit (ms, s, m, h,
    d), e.g. C{300s}, C{5m}, C{1.5s}, C{250ms}; a bare number is seconds.

    @raise ValueError: if C{text} is not such a duration.
    """
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration; write seconds, or a number with ms, s, m, h or d (e.g. 5m)"
        )
    return float(match.group(1)) * _DURATION_FACTORS[(match.group(2) or "s").lower()]


def format_size(size: int) -> str:
    """Render a byte count in the largest binary unit that divides it exactly."""
    for suffix in ("T", "G", "M", "K"):
        factor = _SIZE_FACTORS[suffix.lower()]
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def format_duration(seconds: float) -> str:
    """Render a duration compactly, the inverse of L{parse_duration} for whole units."""
    if not seconds:
        return "0"
    for suffix in ("d", "h", "m", "s"):
        factor = _DURATION_FACTORS[suffix]
        if seconds and seconds >= factor and float(seconds / factor).is_integer():
            return f"{int(seconds // factor)}{suffix}"
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"
