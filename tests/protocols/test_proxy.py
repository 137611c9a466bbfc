import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from echod.protocols.proxy import (
    DEFAULT_MAX_V2_LENGTH,
    V1_MAX_LENGTH,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderParser,
)
from tests.proxyheaders import V2_LOCAL, v2_header

PAYLOAD = b"payload\r\n\x00after"


V2_IPV4 = v2_header(1, 0x11, bytes([198, 18, 0, 1, 198, 18, 0, 2]) + struct.pack("!HH", 40000, 7))
V2_IPV6 = v2_header(
    1,
    0x21,
    bytes.fromhex("20010db8000000000000000000000001") + bytes.fromhex("20010db8000000000000000000000002")
    # TLVs after the addresses: NOOP (0x04) and AUTHORITY (0x02), skipped.
    + struct.pack("!HH", 65535, 7) + b"\x04\x00\x03abc" + b"\x02\x00\x0bexample.com",
)  # fmt: skip
V2_UNIX = v2_header(1, 0x31, b"/run/a".ljust(108, b"\x00") + b"/run/b".ljust(108, b"\x00"))

VALID = {
    "v1 TCP4": (
        b"PROXY TCP4 198.18.0.1 198.18.0.2 40000 7\r\n",
        ProxyHeader(1, False, ("198.18.0.1", 40000), ("198.18.0.2", 7), b""),
    ),
    "v1 TCP6": (
        b"PROXY TCP6 2001:DB8::1 2001:db8::2 65535 0\r\n",
        ProxyHeader(1, False, ("2001:db8::1", 65535), ("2001:db8::2", 0), b""),
    ),
    "v1 TCP6 longest": (
        b"PROXY TCP6 " + b"ffff:" * 7 + b"ffff " + b"ffff:" * 7 + b"ffff 65535 65535\r\n",
        ProxyHeader(1, False, (":".join(["ffff"] * 8), 65535), (":".join(["ffff"] * 8), 65535), b""),
    ),
    "v1 UNKNOWN": (b"PROXY UNKNOWN\r\n", ProxyHeader(1, True, None, None, b"")),
    "v1 UNKNOWN with ignored fields": (
        b"PROXY UNKNOWN ::1 whatever 1 2\r\n",
        ProxyHeader(1, True, None, None, b""),
    ),
    "v2 PROXY IPv4": (V2_IPV4, ProxyHeader(2, False, ("198.18.0.1", 40000), ("198.18.0.2", 7), b"")),
    "v2 PROXY IPv6 with TLVs": (
        V2_IPV6,
        ProxyHeader(2, False, ("2001:db8::1", 65535), ("2001:db8::2", 7), b""),
    ),
    # What a dual-stack balancer (HAProxy's "bind :::7 v4v6") sends for an IPv4
    # client: the same dotted form on every Python, so that the client counts
    # as its IPv4 address (Python 3.11's ipaddress writes ::ffff:c612:a).
    "v1 TCP6 IPv4-mapped": (
        b"PROXY TCP6 ::ffff:198.18.0.10 ::ffff:198.18.0.2 40000 7\r\n",
        ProxyHeader(1, False, ("::ffff:198.18.0.10", 40000), ("::ffff:198.18.0.2", 7), b""),
    ),
    "v2 PROXY IPv4-mapped": (
        v2_header(
            1,
            0x21,
            bytes(10)
            + b"\xff\xff"
            + bytes([198, 18, 0, 10])
            + bytes(10)
            + b"\xff\xff"
            + bytes([198, 18, 0, 2])
            + struct.pack("!HH", 40000, 7),
        ),
        ProxyHeader(2, False, ("::ffff:198.18.0.10", 40000), ("::ffff:198.18.0.2", 7), b""),
    ),
    "v2 LOCAL": (V2_LOCAL, ProxyHeader(2, True, None, None, b"")),
    "v2 LOCAL with addresses": (
        v2_header(0, 0x11, bytes(12)),
        ProxyHeader(2, True, None, None, b""),
    ),
    "v2 AF_UNIX is like LOCAL": (V2_UNIX, ProxyHeader(2, True, None, None, b"")),
    "v2 UNSPEC is like LOCAL": (v2_header(1, 0x00, b""), ProxyHeader(2, True, None, None, b"")),
}


def with_rest(expected: ProxyHeader, rest: bytes) -> ProxyHeader:
    return ProxyHeader(expected.version, expected.local, expected.source, expected.destination, rest)


def feed_chunks(parser: ProxyHeaderParser, chunks: list[bytes]) -> ProxyHeader | None:
    """Feed chunks until the header completes; the result's rest includes the chunks not fed."""
    for i, chunk in enumerate(chunks):
        result = parser.feed(chunk)
        if result is not None:
            return with_rest(result, result.rest + b"".join(chunks[i + 1 :]))
    return None


def outcome(chunks: list[bytes]) -> ProxyHeader | str | None:
    """The header, the error's text, or None if incomplete."""
    try:
        return feed_chunks(ProxyHeaderParser(), chunks)
    except ProxyHeaderError as e:
        return str(e)


@pytest.mark.parametrize("name", VALID)
def test_valid_header_split_at_every_byte_gives_the_same_header_and_payload(name):
    header, expected = VALID[name]
    data = header + PAYLOAD
    for cut in range(len(data) + 1):
        assert feed_chunks(ProxyHeaderParser(), [data[:cut], data[cut:]]) == with_rest(expected, PAYLOAD), cut
    for first in range(len(header)):
        for second in range(first, len(header) + 1):
            chunks = [header[:first], header[first:second], header[second:] + PAYLOAD]
            assert feed_chunks(ProxyHeaderParser(), chunks) == with_rest(expected, PAYLOAD), (first, second)


@pytest.mark.parametrize("name", VALID)
def test_valid_header_fed_byte_by_byte_completes_at_its_last_byte(name):
    header, expected = VALID[name]
    parser = ProxyHeaderParser()
    for i in range(len(header) - 1):
        assert parser.feed(header[i : i + 1]) is None
        assert parser.pending == i + 1
    assert parser.feed(header[-1:]) == expected
    assert parser.pending == 0


@pytest.mark.parametrize("name", VALID)
def test_payload_in_the_same_chunk_as_the_header_is_returned_as_rest(name):
    header, expected = VALID[name]
    assert ProxyHeaderParser().feed(header + PAYLOAD) == with_rest(expected, PAYLOAD)


def test_short_first_reads_are_buffered_not_refused():
    # Twisted's wrapper closes the connection on a first read under 16 bytes.
    parser = ProxyHeaderParser()
    assert parser.feed(b"\r") is None
    assert parser.feed(V2_IPV4[1:7]) is None
    assert parser.pending == 7
    assert parser.feed(V2_IPV4[7:]) is not None


def rejection_offset(data: bytes) -> tuple[int, str]:
    """Feed byte by byte; the offset of the byte that raised, and why."""
    parser = ProxyHeaderParser()
    for i in range(len(data)):
        try:
            parser.feed(data[i : i + 1])
        except ProxyHeaderError as e:
            return i, str(e)
    raise AssertionError(f"{data!r} was not rejected")


@pytest.mark.parametrize(
    ("data", "offset", "reason"),
    [
        (b"GET / HTTP/1.0\r\n", 0, "byte b'G' at offset 0 fits neither a v1 PROXY header"),
        (b"PROXy TCP4", 4, "byte b'y' at offset 4 fits neither"),
        (b"PROXY\r\n", 5, "byte b'\\r' at offset 5 fits neither"),
        (b"\r\n\r\n\x00\r\nQUIT\r", 11, "byte b'\\r' at offset 11 fits neither"),
        (b"\r\nPROXY", 2, "byte b'P' at offset 2"),
        (b"PROXY TCP5 1.2.3.4", 9, "v1 protocol beginning b'TCP5' is not TCP4, TCP6 or UNKNOWN"),
        (b"PROXY TCP 1.2.3.4", 9, "v1 protocol beginning b'TCP ' is not"),
        (b"PROXY  TCP4", 6, "v1 protocol beginning b' ' is not"),
        (b"PROXY UNKNOWNX\r\n", 13, "v1 protocol beginning b'UNKNOWNX'"),
        (b"PROXY TCP4 ::1 ::1 1 2\r\n", 11, "v1 source address beginning b':' cannot be valid under TCP4"),
        (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", 18, "v1 source address b'1.2.3.4' is not an IPv6 address"),
        (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", 20, "v1 source address b'1.2.3.256' is not an IPv4"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n", 27, "v1 source port beginning b'+' cannot be valid"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", 27, "v1 source port beginning b'-'"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 80  2\r\n", 30, "v1 destination port is empty"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 80 65536\r\n", 34, "v1 destination port 65536 is over 65535"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 x\r\n", 33, "v1 line with a field after the destination port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\n", 33, "v1 destination port beginning b'443\\n' cannot"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\rx", 34, "v1 line with CR not followed by LF but by b'x'"),
        (b"PROXY TCP4 1.2.3.4\r\n", 18, "v1 line ends before its destination address"),
        (v2_header(0, 0x00, b"")[:12] + b"\x11", 12, "v2 header with version 1 in byte 12"),
        (v2_header(2, 0x00, b""), 12, "v2 header with command 2 in byte 12 (0x22)"),
        (v2_header(1, 0x41, b""), 13, "v2 header with unknown address family 4"),
        (v2_header(1, 0x13, b""), 13, "v2 header with unknown protocol 3"),
        (v2_header(1, 0x12, bytes(12)), 13, "v2 header for a datagram (UDP) connection"),
        (
            v2_header(1, 0x11, bytes(8)),
            15,
            "v2 address block of 8 bytes is shorter than the 12 its family (1) requires",
        ),
        (v2_header(1, 0x21, bytes(12)), 15, "v2 address block of 12 bytes is shorter than the 36"),
        (v2_header(1, 0x31, bytes(36)), 15, "v2 address block of 36 bytes is shorter than the 216"),
        (
            v2_header(0, 0x11, b"", length=0x1000),
            14,
            "v2 header of at least 4112 bytes exceeds max_v2_length (536",
        ),
        (v2_header(0, 0x11, b"", length=521), 15, "v2 header of 537 bytes exceeds max_v2_length (536 bytes)"),
    ],
)
def test_garbage_is_rejected_at_the_first_byte_where_it_is_certainly_bad(data, offset, reason):
    at, why = rejection_offset(data)
    assert (at, why[: len(reason)]) == (offset, reason)
    # The same data in one piece gives the same reason.
    assert outcome([data]) == why


def test_v1_line_of_107_bytes_is_accepted_and_one_without_crlf_rejected():
    line = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 16) + b"\r\n"
    assert len(line) == V1_MAX_LENGTH
    assert ProxyHeaderParser().feed(line) == ProxyHeader(1, True, None, None, b"")
    at, why = rejection_offset(line[:-2] + b"xx")
    # Byte 106 (0-based 105) that is not a CR leaves no room for CRLF within 107.
    assert at == V1_MAX_LENGTH - 2
    assert why == "v1 line without CRLF within 107 bytes, the spec's limit"


def test_v1_line_of_108_bytes_without_crlf_is_rejected_in_one_piece():
    with pytest.raises(ProxyHeaderError, match="without CRLF within 107 bytes"):
        ProxyHeaderParser().feed(b"PROXY UNKNOWN " + b"x" * 94)


def test_v2_header_of_exactly_max_v2_length_is_accepted_and_one_more_byte_refused():
    tlvs = (
        b"\x04" + struct.pack("!H", DEFAULT_MAX_V2_LENGTH - 16 - 12 - 3) + bytes(DEFAULT_MAX_V2_LENGTH - 31)
    )
    header = v2_header(1, 0x11, bytes([198, 18, 0, 1, 198, 18, 0, 2]) + struct.pack("!HH", 1, 2) + tlvs)
    assert len(header) == DEFAULT_MAX_V2_LENGTH
    assert ProxyHeaderParser().feed(header + b"x").rest == b"x"
    with pytest.raises(ProxyHeaderError, match="537 bytes exceeds max_v2_length"):
        ProxyHeaderParser().feed(v2_header(1, 0x11, header[16:] + b"\x00"))


def test_max_v2_length_is_configurable_and_must_hold_an_ipv6_header():
    assert ProxyHeaderParser(max_v2_length=52).feed(v2_header(1, 0x21, bytes(36))) is not None
    with pytest.raises(ProxyHeaderError, match="53 bytes exceeds max_v2_length"):
        ProxyHeaderParser(max_v2_length=52).feed(v2_header(1, 0x21, bytes(37)))
    with pytest.raises(ValueError, match="max_v2_length must be between 52"):
        ProxyHeaderParser(max_v2_length=51)


def test_a_parser_is_ready_for_a_new_header_once_one_is_complete():
    parser = ProxyHeaderParser()
    assert parser.feed(V2_LOCAL) is not None
    assert parser.pending == 0
    assert parser.feed(b"PROXY UNKNOWN\r\n").version == 1


@settings(max_examples=300)
@given(
    name=st.sampled_from(sorted(VALID)),
    payload=st.binary(max_size=64),
    cuts=st.lists(st.integers(0, 700), max_size=10),
)
def test_any_valid_header_split_anywhere_parses_the_same(name, payload, cuts):
    header, expected = VALID[name]
    data = header + payload
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    assert feed_chunks(ProxyHeaderParser(), chunks) == with_rest(expected, payload)
