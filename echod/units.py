"""
Values as admins write them: sizes and durations (C{16M}, C{64K}, C{300s},
C{5m}), and the converters that turn the text of one configuration value into
its typed value: a choice, a number in a range, port ranges, networks, yes or
no, a path.

Kept apart from L{echod.config} so that the grammar of a value can be read and
tested without the grammar of the file around it: the file's reader adds where
a value is (file, line, section, key) to the ValueError a converter raises,
whose text says what is wrong and what is allowed. The probe's options share
the sizes and durations.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

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


# -- the converters of configuration values --------------------------------
#
# Each takes the text of a value (stripped) and returns the typed value, or
# raises ValueError whose text says what is allowed.


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """C{"; did you mean 'x'?"} for the candidate closest to C{word}, or C{""} if none is close."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def one_of(*options: str) -> Callable[[str], str]:
    """A converter to one of C{options}, in any case; its C{options} are what the man page lists."""

    def convert(text: str) -> str:
        if text.lower() not in options:
            hint = did_you_mean(text.lower(), options)
            raise ValueError(f"{text!r} is not one of: {', '.join(options)}{hint}")
        return text.lower()

    convert.options = options  # type: ignore[attr-defined]
    return convert


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """A converter to a whole number from C{low} to C{high}: digits only, no sign or exponent."""

    def convert(text: str) -> int:
        if not re.fullmatch(r"\d+", text):
            raise ValueError(f"{text!r} is not a whole number; expected {low} to {high}")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range; expected {low} to {high}")
        return value

    return convert


def size_within(low: int, high: int) -> Callable[[str], int]:
    """A converter to a size (L{parse_size}) from C{low} to C{high} bytes."""

    def convert(text: str) -> int:
        value = parse_size(text)
        if not low <= value <= high:
            raise ValueError(f"{text} is out of range; expected {format_size(low)} to {format_size(high)}")
        return value

    return convert


def optional_size_within(low: int, high: int) -> Callable[[str], int | None]:
    """As L{size_within}, but the empty text is C{None}: not set."""
    within = size_within(low, high)

    def convert(text: str) -> int | None:
        return within(text) if text else None

    return convert


def duration_within(low: float, high: float, zero_means: str = "") -> Callable[[str], float]:
    """
    A converter to a duration (L{parse_duration}) from C{low} to C{high}
    seconds; with C{zero_means} (what 0 turns off, e.g. C{"no timeout"}), 0 too.
    """

    def convert(text: str) -> float:
        value = parse_duration(text)
        if not (low <= value <= high or (zero_means and value == 0)):
            allowed = f"{format_duration(low)} to {format_duration(high)}"
            if zero_means:
                allowed += f", or 0 for {zero_means}"
            raise ValueError(f"{text} is out of range; expected {allowed}")
        return value

    return convert


def parse_port_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """Ports and ranges of ports, comma-separated (C{0-1023, 1900}), as (low, high) pairs; empty: none."""
    ranges = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not match:
            raise ValueError(f"{part!r} is not a port or a range of ports; write e.g. 0-1023, 1900, 5353")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if not 0 <= low <= high <= 65535:
            raise ValueError(f"{part!r} is not a range of ports from 0 to 65535, low to high")
        ranges.append((low, high))
    return tuple(ranges)


def format_port_ranges(ranges: tuple[tuple[int, int], ...]) -> str:
    """Port ranges as the file writes them: C{0-1023, 1900}."""
    return ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)


def parse_networks(text: str) -> tuple[Network, ...]:
    """
    Addresses and networks, comma-separated (C{127.0.0.0/8, ::1}); an
    IPv4-mapped IPv6 one is taken as the IPv4 one it maps.
    """
    networks = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        written = part.replace("[", "").replace("]", "")
        try:
            network = ipaddress.ip_network(written)
            mapped = getattr(network.network_address, "ipv4_mapped", None)
            if mapped is not None and network.prefixlen >= 96:
                # echod counts an IPv4-mapped peer (::ffff:192.0.2.1, as a dual-stack socket
                # shows an IPv4 client) as its IPv4 address: so is such an entry.
                network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
            networks.append(network)
        except ValueError:
            try:
                network = ipaddress.ip_network(written, strict=False)
            except ValueError:
                raise ValueError(
                    f"{part!r} is not an address or a network; write e.g. 127.0.0.0/8, ::1, 198.18.0.0/15"
                ) from None
            raise ValueError(
                f"{part!r} has bits set past its prefix length; did you mean {network}?"
            ) from None
    return tuple(networks)


def format_networks(networks: tuple[Network, ...]) -> str:
    """Networks as the file writes them, a single address without its /32 or /128; none: C{nowhere}."""
    return (
        ", ".join(str(n.network_address) if n.prefixlen == n.max_prefixlen else str(n) for n in networks)
        or "nowhere"
    )


_BOOLEANS = {
    "yes": True,
    "true": True,
    "on": True,
    "1": True,
    "no": False,
    "false": False,
    "off": False,
    "0": False,
}


def parse_boolean(text: str) -> bool:
    """yes, true, on or 1; no, false, off or 0; in any case."""
    try:
        return _BOOLEANS[text.lower()]
    except KeyError:
        raise ValueError(f"{text!r} is not yes or no") from None


def optional_absolute_path(text: str) -> str | None:
    """An absolute path, or C{None} (off) for the empty text."""
    if not text:
        return None
    if not os.path.isabs(text):
        raise ValueError(f"{text!r} is not an absolute path; write one, or leave it empty for off")
    return text
