"""
Which of its two formats echod answers a scrape in: the Accept headers that
Prometheus and other clients send, and any bytes at all in their place.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from echod.metrics.formats import OPENMETRICS, TEXT, choose

#: What Prometheus sends: 2.42 (Debian bookworm, captured from it), 2.49 to 2.55
#: (scrape_protocols), 3.0 (UTF-8 names), 3.x (escaping on the 1.0.0 formats, each scheme),
#: and with protobuf first (native histograms).
PROMETHEUS = [
    b"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    b"text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    b"application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
    b"text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    b"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    b"application/openmetrics-text;version=0.0.1;escaping=allow-utf-8;q=0.5,"
    b"text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;escaping=allow-utf-8;q=0.3,"
    b"*/*;q=0.2",
    *(
        b"application/openmetrics-text;version=1.0.0;escaping=%s;q=0.6,"
        b"application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=%s;q=0.4,"
        b"text/plain;version=0.0.4;q=0.3,*/*;q=0.2" % (scheme, scheme)
        for scheme in (b"allow-utf-8", b"underscores", b"dots", b"values")
    ),
    b"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,"
    b"application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,"
    b"text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
]


@pytest.mark.parametrize("accept", PROMETHEUS)
def test_prometheus_gets_openmetrics(accept):
    assert choose(accept) is OPENMETRICS


def test_prometheus_told_to_prefer_the_text_format_gets_it():
    accept = b"text/plain;version=0.0.4;q=0.5,application/openmetrics-text;version=1.0.0;q=0.4,*/*;q=0.3"
    assert choose(accept) is TEXT


@pytest.mark.parametrize(
    "accept",
    [
        None,
        b"",
        b"*/*",
        b"text/plain",
        b"text/*",
        b"text/plain;version=0.0.4",
        b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8",  # a browser
        b"application/openmetrics-text, text/plain",  # a tie: the text format, echod's default
        b"application/json",  # nothing it has: the text format all the same, not a 406
        b"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
        b"application/openmetrics-text;version=0.0.1",  # a version echod does not write
        b"application/openmetrics-text;version=2.0.0",
        b"application/openmetrics-text;q=0,*/*",
        b"application/openmetrics-text;version=1.0.0;q=0, application/openmetrics-text",  # exact wins
        b"application/*;q=0.5, text/plain;q=0.5",  # a tie: the more specific
    ],
)
def test_anything_else_gets_the_text_format(accept):
    assert choose(accept) is TEXT


@pytest.mark.parametrize(
    "accept",
    [
        b"application/openmetrics-text",
        b"application/openmetrics-text; version=1.0.0; charset=utf-8",
        b"Application/OpenMetrics-Text;VERSION=1.0.0",
        b'application/openmetrics-text;version="1.0.0"',
        b'application/openmetrics-text;x="a,b;q=0";version=1.0.0',  # separators inside a quoted string
        b'application/openmetrics-text;x="say \\"hi\\""',
        b"application/openmetrics-text \t; \t version=1.0.0 \t;\tq=1.000",
        b"application/*",
        b"text/plain;q=0, */*",
        b"text/plain;q=0.499, application/openmetrics-text;q=0.5",
        b"application/openmetrics-text;q=0.001",
        b"application/openmetrics-text;Q=0.9, text/plain;q=0.5",
        b",, ,application/openmetrics-text,,",
        b"application/openmetrics-text;version=1.0.0, text/plain;version=0.0.4;q=x",  # a bad one ignored
        b"bogus, application/openmetrics-text",
    ],
)
def test_openmetrics_when_it_is_preferred(accept):
    assert choose(accept) is OPENMETRICS


@pytest.mark.parametrize(
    "weight", [b"q=1.0001", b"q=1.5", b"q=2", b"q=.5", b"q=0.0001", b"q=-0", b"q=", b"q=x", b"q=0.5 5"]
)
def test_a_range_with_a_malformed_weight_counts_for_nothing(weight):
    assert choose(b"application/openmetrics-text;" + weight + b", text/plain;q=0.1") is TEXT


def test_every_truncation_of_prometheus_header_gives_the_format_its_whole_ranges_ask_for():
    accept = PROMETHEUS[0]
    # Without a version, or once it is whole: a version cut short is another version.
    whole = {len(b"application/openmetrics-text"), len(b"application/openmetrics-text;")}
    first = len(b"application/openmetrics-text;version=1.0.0")
    # The text format's range whole but for its weight: a tie at q=1, which the text format wins.
    text = accept.index(b";q=0.5") + 1
    for length in range(len(accept) + 1):
        cut = accept[:length]
        expected = OPENMETRICS if length in whole or length >= first else TEXT
        if length in (text - 1, text):
            expected = TEXT
        assert choose(cut) is expected, cut


def test_any_byte_anywhere_in_prometheus_header_gives_one_of_the_two_formats():
    accept = PROMETHEUS[0]
    for position in range(len(accept) + 1):
        for byte in range(256):
            for changed in (
                accept[:position] + bytes([byte]) + accept[position:],
                accept[:position] + bytes([byte]) + accept[position + 1 :],
            ):
                assert choose(changed) in (TEXT, OPENMETRICS)


@given(st.binary(max_size=300))
def test_any_bytes_give_one_of_the_two_formats(accept):
    assert choose(accept) in (TEXT, OPENMETRICS)


#: The words and separators an Accept header is made of, and bytes that are none.
WORDS = [
    *(b"application/openmetrics-text", b"text/plain", b"*/*", b"application/*", b"text/*", b"version"),
    *(b";", b",", b"=", b'"', b"\\", b" ", b"\t", b"1.0.0", b"0.0.4", b"q", b"0.5", b"1", b"0"),
    *(b"\x00", b"\xff", b"\r", b"\n"),
]


@given(st.lists(st.sampled_from(WORDS), max_size=40))
def test_any_mix_of_the_header_words_gives_one_of_the_two_formats(words):
    assert choose(b"".join(words)) in (TEXT, OPENMETRICS)


def test_the_two_content_types_are_constants_echod_names():
    assert TEXT.content_type == b"text/plain; version=0.0.4; charset=utf-8"
    assert OPENMETRICS.content_type == b"application/openmetrics-text; version=1.0.0; charset=utf-8"
