"""
The two formats the metrics are served in, and which one a scrape gets from
its Accept header (RFC 9110, section 12.5.1).

echod names both formats itself, content type and all, and parses the header
itself: no byte a client sent reaches the client library's encoders or a
response header, and a page is cached per format, so however many different
headers come there are two pages. prometheus_client's own C{choose_encoder}
cannot serve here: it copies the client's C{version} and C{escaping}
parameters into the content type it returns (and so into any cache keyed by
it), and raises on a version it cannot parse.

A range asks for OpenMetrics if it is C{application/openmetrics-text} with
version 1.0.0 or none, for the text format if C{text/plain} with version 0.0.4
or none; C{*/*} and C{type/*} ask for either. The most specific range that
matches a format gives its weight. The higher weight wins; on a tie, the
format named more specifically, then the text format. A range that cannot be
parsed counts for nothing; a header asking for neither, or for nothing
parseable at all, gets the text format: every scraper reads it, and RFC 9110
allows a server to disregard Accept rather than answer 406.

Other parameters, C{escaping} among them, change nothing: echod's metric
and label names are all of the legacy character set, so every escaping
scheme leaves the page as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.exposition import generate_latest as text_page
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_page
from prometheus_client.registry import CollectorRegistry


@dataclass(frozen=True, eq=False)
class Format:
    """One format: its media type and version, its C{Content-Type}, and its renderer."""

    type: str
    subtype: str
    version: str
    content_type: bytes
    render: Callable[[CollectorRegistry], bytes]


TEXT = Format("text", "plain", "0.0.4", b"text/plain; version=0.0.4; charset=utf-8", text_page)
# The client library's OpenMetrics output is version 1.0.0 (Debian bookworm's 0.16 labels it
# 0.0.1, from before the standard was published; the text is the same).
OPENMETRICS = Format(
    "application",
    "openmetrics-text",
    "1.0.0",
    b"application/openmetrics-text; version=1.0.0; charset=utf-8",
    openmetrics_page,
)
FORMATS = (TEXT, OPENMETRICS)

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})")
#: A quoted string's text: any byte but controls (tab aside), '"' and a lone backslash.
_QUOTED_TEXT = r'(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*'
_PARAMETER = re.compile(rf'({_TOKEN})=(?:({_TOKEN})|"({_QUOTED_TEXT})")')
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)
#: A header as pieces: a quoted string (to its end, if unterminated), a run of other text, or a
#: separator. Each byte is looked at once, whatever comes: no backtracking on hostile input.
_PIECES = re.compile(r'"(?:[^"\\]|\\[\s\S]?)*"?|[^,;"]+|[,;]')
_WEIGHT = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_OWS = " \t"


@dataclass(frozen=True)
class MediaRange:
    """One element of an Accept header."""

    type: str
    subtype: str
    version: str | None
    weight: float

    def specificity(self, format_: Format) -> int | None:
        """How closely it names C{format_} (3: with its version, 0: C{*/*}), or C{None} if not at all."""
        if self.type == "*":
            return 0 if self.subtype == "*" else None
        if self.type != format_.type:
            return None
        if self.subtype == "*":
            return 1
        if self.subtype != format_.subtype:
            return None
        if self.version is None:
            return 2
        return 3 if self.version == format_.version else None


def _elements(value: str) -> Iterator[list[str]]:
    """Each comma-separated element of C{value}, as its semicolon-separated parts."""
    parts, part = [], []
    for piece in _PIECES.findall(value):
        if piece == ",":
            yield [*parts, "".join(part)]
            parts, part = [], []
        elif piece == ";":
            parts.append("".join(part))
            part = []
        else:
            part.append(piece)
    yield [*parts, "".join(part)]


def parse_range(parts: list[str]) -> MediaRange | None:
    """The media range of one element's C{parts} (type and parameters), or C{None} if malformed."""
    media_type = _MEDIA_TYPE.fullmatch(parts[0].strip(_OWS))
    if media_type is None:
        return None
    version, weight = None, 1.0
    for part in parts[1:]:
        part = part.strip(_OWS)
        if not part:
            continue  # an empty parameter: allowed
        parameter = _PARAMETER.fullmatch(part)
        if parameter is None:
            return None
        name, token, quoted = parameter.groups()
        value = token if token is not None else _QUOTED_PAIR.sub(r"\1", quoted)
        name = name.lower()
        if name == "q":
            if not _WEIGHT.fullmatch(value):
                return None
            weight = float(value)
        elif name == "version":
            version = value
    return MediaRange(media_type[1].lower(), media_type[2].lower(), version, weight)


def parse_accept(value: str) -> Iterator[MediaRange]:
    """The well-formed media ranges of an Accept header's C{value}; the rest are skipped."""
    for parts in _elements(value):
        if len(parts) > 1 or parts[0].strip(_OWS):
            found = parse_range(parts)
            if found is not None:
                yield found


def choose(accept: bytes | None) -> Format:
    """The format to answer a request with Accept header C{accept} (C{None}: none sent) in."""
    if not accept:
        return TEXT
    # Latin-1 maps every byte to one character: no byte can fail to decode.
    ranges = list(parse_accept(accept.decode("latin-1")))
    best: tuple[float, int, int] = (0.0, -1, 0)
    chosen = TEXT
    for preference, format_ in enumerate(FORMATS):  # the text format first: it wins a full tie
        specific = [(s, r.weight) for r in ranges if (s := r.specificity(format_)) is not None]
        if not specific:
            continue
        specificity = max(s for s, _ in specific)
        weight = max(w for s, w in specific if s == specificity)
        rank = (weight, specificity, -preference)
        if weight > 0 and rank > best:
            best, chosen = rank, format_
    return chosen
