"""
Property-based fuzzing: whatever bytes or text arrive, the parsers answer
with a result or their own typed error, and never hold more than their limits.
"""

import ipaddress
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from echod.config import ConfigError, Settings, parse
from echod.protocols.bytecount import HeaderError, HeaderParser
from echod.protocols.proxy import (
    DEFAULT_MAX_V2_LENGTH,
    V1_MAX_LENGTH,
    ProxyHeader,
    ProxyHeaderError,
    ProxyHeaderParser,
)
from tests.protocols.limited import limited
from tests.proxyheaders import V2_SIGNATURE, proxy_v1
from tests.transports import connect

KEYS = [
    "log_level", "access_log", "shutdown_grace", "protocol", "transport", "address", "port",
    "max_connections", "max_connections_per_peer", "idle_timeout", "max_message_size",
    "max_header_length", "blocked_source_ports", "datagram_rate_per_peer", "datagram_rate", "byte_rate",
    "proxy_protocol", "trusted_proxies", "metrics",
]  # fmt: skip
VALUES = [
    "echo",
    "bytecount",
    "tcp",
    "udp",
    "::",
    "127.0.0.1",
    "7",
    "0",
    "-1",
    "16M",
    "5m",
    "0-1023",
    "yes",
    "198.18.0.0/15, ::1",
    "127.0.0.1:9207",
    "[::1]:7",
    "::1:7",
    "",
    "x",
]
SECTIONS = ["echod", "listener:a", "listener:b", "listener:", "listner:a", "DEFAULT", "a b"]

ini_line = st.one_of(
    st.builds(lambda s: f"[{s}]", st.sampled_from(SECTIONS) | st.text(max_size=10)),
    st.builds(
        lambda k, v: f"{k} = {v}",
        st.sampled_from(KEYS) | st.text(max_size=8),
        st.sampled_from(VALUES) | st.text(),
    ),
    st.text(max_size=30),
)


def check_config(text: str) -> None:
    try:
        result = parse(text, "fuzz.conf")
    except ConfigError as e:
        assert e.problems
        for problem in e.problems:
            assert str(problem).startswith("fuzz.conf")
            assert problem.message
    else:
        assert isinstance(result, Settings)
        assert result.listeners


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_arbitrary_text_is_a_config_or_a_config_error(text):
    check_config(text)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ini_line, max_size=25))
def test_ini_shaped_text_is_a_config_or_a_config_error(lines):
    check_config("\n".join(lines))


def then_anything(prefix: bytes, max_size: int) -> st.SearchStrategy[bytes]:
    """C{prefix}, then up to C{max_size} bytes of anything."""
    return st.binary(max_size=max_size).map(lambda tail: prefix + tail)


@settings(max_examples=500)
@given(
    max_header=st.integers(1, 64),
    max_size=st.integers(1, 1 << 40),
    chunks=st.lists(st.binary(max_size=40), max_size=20),
)
def test_header_parser_never_crashes_nor_buffers_past_its_limit(max_header, max_size, chunks):
    parser = HeaderParser(max_header, max_size)
    for chunk in chunks:
        try:
            result = parser.feed(chunk)
        except HeaderError as e:
            assert str(e)
            return
        if result is not None:
            length, rest = result
            assert 0 <= length <= max_size
            assert rest == chunk[len(chunk) - len(rest) :]
            return
        assert parser.pending <= max_header


@settings(max_examples=500)
@given(
    data=st.one_of(
        st.binary(max_size=700),
        # Near-misses: a real signature, then anything.
        then_anything(b"PROXY ", 150),
        then_anything(b"PROXY TCP4 ", 150),
        then_anything(V2_SIGNATURE, 700),
        # The parser's shortcut for a whole IPv4 header, and its near misses.
        then_anything(V2_SIGNATURE + b"\x21\x11\x00", 60),
    ),
    cuts=st.lists(st.integers(0, 1000), max_size=20),
)
def test_proxy_parser_never_crashes_nor_buffers_past_its_bounds_and_splitting_changes_nothing(data, cuts):
    def run(chunks: list[bytes]) -> ProxyHeader | str | None:
        parser = ProxyHeaderParser()
        for i, chunk in enumerate(chunks):
            try:
                result = parser.feed(chunk)
            except ProxyHeaderError as e:
                assert str(e)
                return str(e)
            if result is None:
                assert parser.pending <= max(V1_MAX_LENGTH, DEFAULT_MAX_V2_LENGTH)
                assert parser.pending <= (V1_MAX_LENGTH if data[:1] != b"\r" else DEFAULT_MAX_V2_LENGTH)
                continue
            assert isinstance(result, ProxyHeader)
            assert result.rest == chunk[len(chunk) - len(result.rest) :]
            rest = result.rest + b"".join(chunks[i + 1 :])
            return ProxyHeader(result.version, result.local, result.source, result.destination, rest)
        return None

    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    whole = run([data])
    assert run([data[a:b] for a, b in itertools.pairwise(points)]) == whole
    assert run([data[i : i + 1] for i in range(len(data))]) == whole


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.binary(max_size=300),
        then_anything(proxy_v1(("198.18.1.10", 1)), 100),
        then_anything(b"PROXY ", 150),
        then_anything(V2_SIGNATURE, 300),
    ),
    cuts=st.lists(st.integers(0, 400), max_size=10),
)
def test_a_proxy_listener_echoes_exactly_what_follows_a_good_header_and_closes_on_a_bad_one(data, cuts):
    factory = limited(proxy_protocol=True, trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    protocol, transport = connect(factory, "127.0.0.1", 1)
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for a, b in itertools.pairwise(points):
        if transport.disconnected:
            break
        protocol.dataReceived(data[a:b])
    try:
        expected = ProxyHeaderParser().feed(data)
    except ProxyHeaderError:
        assert transport.disconnected and transport.value() == b""
        assert factory.stats.bad_proxy_headers == 1
        return
    if expected is None:  # incomplete: waiting, nothing echoed yet
        assert not transport.disconnected and transport.value() == b""
    else:
        assert transport.value() == expected.rest
        assert (factory.stats.accepted, factory.stats.bad_proxy_headers) == (1, 0)
    protocol.connectionLost(None)
    assert factory.stats.active == 0
