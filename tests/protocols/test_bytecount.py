import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv6Address
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs

from echod.accounting.stats import ListenerStats
from echod.protocols.bytecount import BytecountFactory, HeaderError, HeaderParser

MAX_HEADER = 20
MAX_SIZE = 1 << 20


def feed_all(parser: HeaderParser, chunks) -> tuple[int, bytes] | None:
    """Feed chunks until the header completes; return the length and everything after the space."""
    for i, chunk in enumerate(chunks):
        result = parser.feed(chunk)
        if result is not None:
            return result[0], result[1] + b"".join(chunks[i + 1 :])
    return None


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def test_header_split_at_every_byte():
    message = b"12345 " + b"x" * 20
    for cut in range(len(message) + 1):
        parser = HeaderParser(MAX_HEADER, MAX_SIZE)
        assert feed_all(parser, [message[:cut], message[cut:]]) == (12345, b"x" * 20), cut


def test_header_and_payload_in_one_packet():
    assert HeaderParser(MAX_HEADER, MAX_SIZE).feed(b"5 hello") == (5, b"hello")


def test_leading_zeros_are_digits_too():
    assert HeaderParser(MAX_HEADER, MAX_SIZE).feed(b"007 ") == (7, b"")


def test_header_of_exactly_max_header_length_digits_is_accepted():
    parser = HeaderParser(4, 10**6)
    assert parser.feed(b"1234 ") == (1234, b"")


@given(
    length=st.integers(0, 300),
    trailing=st.binary(max_size=50),
    cuts=st.lists(st.integers(0, 1000), max_size=12),
)
def test_any_valid_message_split_anywhere_parses_the_same(length, trailing, cuts):
    payload = bytes(range(256)) * 2
    message = b"%d " % length + payload[:length] + trailing
    parser = HeaderParser(MAX_HEADER, MAX_SIZE)
    assert feed_all(parser, chunked(message, cuts)) == (length, payload[:length] + trailing)


@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(0, 1000), max_size=12))
def test_arbitrary_bytes_never_buffer_more_than_max_header_length(data, cuts):
    parser = HeaderParser(MAX_HEADER, MAX_SIZE)
    try:
        for chunk in chunked(data, cuts):
            if parser.feed(chunk) is not None:
                break
            assert parser.pending <= MAX_HEADER
    except HeaderError as e:
        assert str(e)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"-5 hello", "byte b'-' at header offset 0 is not a digit"),
        (b"+5 hello", "byte b'+' at header offset 0 is not a digit"),
        (b" 5 hello", "the header has no digits before the space"),
        (b"\t5 hello", "byte b'\\t' at header offset 0 is not a digit"),
        (b"5\thello", "byte b'\\t' at header offset 1 is not a digit"),
        (b"5\r\nhello", "byte b'\\r' at header offset 1 is not a digit"),
        (b"12a ", "byte b'a' at header offset 2 is not a digit"),
        (b"\xd9\xa3 ", "byte b'\\xd9' at header offset 0 is not a digit"),
        (b"0" * 21, "no space after 20 header bytes (max_header_length)"),
        (b"0" * 21 + b" ", "no space after 20 header bytes (max_header_length)"),
        (b"1048577 x", "length 1048577 exceeds max_message_size (1048576 bytes)"),
        (b"99999999", "length 99999999... exceeds max_message_size (1048576 bytes)"),
    ],
)
def test_invalid_headers_are_rejected_with_the_reason(data, reason):
    with pytest.raises(HeaderError, match="^" + re.escape(reason)):
        HeaderParser(MAX_HEADER, MAX_SIZE).feed(data)


def test_bad_byte_offset_counts_bytes_from_earlier_chunks():
    parser = HeaderParser(MAX_HEADER, MAX_SIZE)
    assert parser.feed(b"12") is None
    with pytest.raises(HeaderError, match="at header offset 3 is not a digit"):
        parser.feed(b"3x ")


def test_absurd_length_is_rejected_before_the_space_arrives():
    parser = HeaderParser(MAX_HEADER, 1000)
    assert parser.feed(b"100") is None
    with pytest.raises(HeaderError, match=re.escape("length 10000... exceeds")):
        parser.feed(b"00")


def connect(max_size: int = MAX_SIZE):
    from twisted.internet.task import Clock

    return connect_to(BytecountFactory("bc", MAX_HEADER, max_size, ListenerStats(), clock=Clock()))


def connect_to(factory: BytecountFactory):
    protocol = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=IPv6Address("TCP", "2001:db8::1", 4242))
    protocol.makeConnection(transport)
    return protocol, transport, factory.stats


def test_echoes_the_payload_then_closes():
    protocol, transport, stats = connect()
    protocol.dataReceived(b"5 hel")
    assert not transport.disconnecting
    protocol.dataReceived(b"lo")
    assert transport.value() == b"hello"
    assert transport.disconnecting
    assert stats.protocol_errors == 0


def test_bytes_after_the_payload_are_not_echoed():
    protocol, transport, _ = connect()
    protocol.dataReceived(b"3 abcdef")
    protocol.dataReceived(b"more")
    assert transport.value() == b"abc"


def test_zero_length_closes_at_once():
    protocol, transport, _ = connect()
    protocol.dataReceived(b"0 ignored")
    assert transport.value() == b""
    assert transport.disconnecting


@given(length=st.integers(0, 200), cuts=st.lists(st.integers(0, 400), max_size=10))
def test_protocol_echoes_exactly_the_payload_however_it_is_split(length, cuts):
    protocol, transport, _ = connect()
    payload = bytes(i % 251 for i in range(length))
    for chunk in chunked(b"%d " % length + payload + b"tail", cuts):
        protocol.dataReceived(chunk)
    assert transport.value() == payload
    assert transport.disconnecting


def test_bad_header_closes_logs_one_warning_with_peer_and_reason_and_counts():
    protocol, transport, stats = connect()
    with capturedLogs() as events:
        protocol.dataReceived(b"-1 x")
        protocol.dataReceived(b"more junk")
    assert transport.value() == b""
    assert transport.disconnecting
    assert stats.protocol_errors == 1
    warnings = [e for e in events if e["log_level"] >= LogLevel.warn]
    assert len(warnings) == 1
    assert warnings[0]["log_format"].format(**warnings[0]) == (
        "bc: bad request from [2001:db8::1]:4242, closing: byte b'-' at header offset 0 is not a digit; "
        "the header is a decimal length and one space"
    )


def test_client_stopping_mid_payload_is_a_bad_request():
    protocol, transport, stats = connect()
    protocol.dataReceived(b"10 abc")
    with capturedLogs() as events:
        protocol.readConnectionLost()
    assert transport.value() == b"abc"
    assert transport.disconnecting
    assert stats.protocol_errors == 1
    assert "7 payload bytes still due" in events[0]["reason"]


def test_client_stopping_mid_header_is_a_bad_request():
    protocol, _transport, stats = connect()
    protocol.dataReceived(b"12")
    with capturedLogs() as events:
        protocol.readConnectionLost()
    assert stats.protocol_errors == 1
    assert events[0]["reason"] == "the client stopped sending after 2 header bytes"


def test_client_closing_without_sending_anything_is_not_an_error():
    protocol, transport, stats = connect()
    with capturedLogs() as events:
        protocol.readConnectionLost()
    assert transport.disconnecting
    assert stats.protocol_errors == 0
    assert events == []


def test_half_close_after_full_payload_keeps_the_echo():
    protocol, transport, stats = connect()
    protocol.dataReceived(b"2 ok")
    protocol.readConnectionLost()
    assert transport.value() == b"ok"
    assert stats.protocol_errors == 0


def test_finishing_while_reading_is_paused_still_closes():
    """Twisted never closes a transport whose streaming producer is paused."""
    protocol, transport, _ = connect()
    protocol.dataReceived(b"4 ab")
    transport.pauseProducing()
    protocol.dataReceived(b"cd")
    assert transport.producer is None
    assert transport.disconnecting


def test_bad_requests_warn_once_an_interval_with_a_count():
    from twisted.internet.task import Clock

    clock = Clock()
    factory = BytecountFactory("bc", MAX_HEADER, MAX_SIZE, ListenerStats(), clock=clock)
    with capturedLogs() as events:
        for port in range(1, 1001):
            protocol = factory.buildProtocol(None)
            protocol.makeConnection(StringTransport(peerAddress=IPv6Address("TCP", "2001:db8::1", port)))
            protocol.dataReceived(b"x")
        clock.advance(10)
    warnings = [e["log_format"].format(**e) for e in events if e["log_level"] >= LogLevel.warn]
    assert len(warnings) == 2
    assert warnings[0].startswith("bc: bad request from [2001:db8::1]:1, closing: byte b'x'")
    assert warnings[1] == "bc: ... and 999 more bad requests from 2001:db8::1 in the last 10s"
    assert factory.stats.protocol_errors == 1000


def test_held_back_warnings_are_said_when_the_listener_stops():
    from twisted.internet.task import Clock

    factory = BytecountFactory("bc", MAX_HEADER, MAX_SIZE, ListenerStats(), clock=Clock())
    factory.doStart()
    with capturedLogs() as events:
        for _ in range(3):
            protocol, _transport, _ = connect_to(factory)
            protocol.dataReceived(b"x")
        factory.doStop()
    assert "2 more bad requests from 2001:db8::1" in events[-1]["summary"]
