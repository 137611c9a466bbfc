"""
One value's grammar, without the file around it: sizes and durations as
admins and the probe's options write them, and the converters of
configuration values with the messages they raise (tests/test_config.py
holds those messages as the file's problems tell them, located).
"""

import ipaddress

import pytest

from echod.units import (
    did_you_mean,
    duration_within,
    format_duration,
    format_networks,
    format_port_ranges,
    format_size,
    one_of,
    optional_absolute_path,
    parse_boolean,
    parse_duration,
    parse_networks,
    parse_port_ranges,
    parse_size,
    size_within,
    whole_number,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("512", 512),
        ("512b", 512),
        ("64K", 65536),
        ("16M", 16 << 20),
        ("16MiB", 16 << 20),
        ("2g", 2 << 30),
        ("1T", 1 << 40),
        (" 3 KB ", 3072),
    ],
)
def test_size_accepts_bytes_and_binary_units(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "M", "-1", "1.5M", "16X", "16 M M", "0x10", "16iB"])
def test_size_rejects_what_is_not_a_size(text):
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("300s", 300), ("5m", 300), ("1h", 3600), ("2d", 172800), ("250ms", 0.25), ("1.5s", 1.5), ("10", 10)],
)
def test_duration_accepts_seconds_and_units(text, value):
    assert parse_duration(text) == value


@pytest.mark.parametrize("text", ["", "s", "-5s", "5 minutes", "5y", "1e3"])
def test_duration_rejects_what_is_not_a_duration(text):
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("value", "text"), [(16 << 20, "16M"), (1000, "1000"), (3 << 10, "3K"), (0, "0")])
def test_format_size_uses_the_largest_exact_unit(value, text):
    assert format_size(value) == text


@pytest.mark.parametrize(("value", "text"), [(300, "5m"), (10, "10s"), (0.25, "250ms"), (90.5, "90.5s")])
def test_format_duration_round_trips(value, text):
    assert format_duration(value) == text
    assert parse_duration(text) == value


def test_a_choice_is_taken_in_any_case_and_a_near_miss_is_named():
    protocol = one_of("echo", "bytecount")
    assert protocol("ECHO") == "echo"
    assert protocol.options == ("echo", "bytecount")
    with pytest.raises(ValueError) as caught:
        protocol("bytecuont")
    assert str(caught.value) == "'bytecuont' is not one of: echo, bytecount; did you mean 'bytecount'?"
    with pytest.raises(ValueError) as caught:
        protocol("sctp")
    assert str(caught.value) == "'sctp' is not one of: echo, bytecount"


def test_did_you_mean_names_nothing_when_nothing_is_close():
    assert did_you_mean("max_conections", ["max_connections", "port"]) == "; did you mean 'max_connections'?"
    assert did_you_mean("colour", ["port", "address"]) == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("+5", "'+5' is not a whole number; expected 1 to 64"),
        ("5.0", "'5.0' is not a whole number; expected 1 to 64"),
        ("0", "0 is out of range; expected 1 to 64"),
        ("65", "65 is out of range; expected 1 to 64"),
    ],
)
def test_a_whole_number_has_digits_only_and_its_range(text, message):
    with pytest.raises(ValueError) as caught:
        whole_number(1, 64)(text)
    assert str(caught.value) == message


def test_the_bounds_of_a_range_are_allowed():
    assert [whole_number(1, 64)(t) for t in ("1", "64", "007")] == [1, 64, 7]
    assert [size_within(1, 1 << 40)(t) for t in ("1", "1T")] == [1, 1 << 40]
    assert [duration_within(0.001, 604800)(t) for t in ("1ms", "7d")] == [0.001, 604800]


def test_zero_is_allowed_below_a_duration_range_only_when_it_means_something():
    assert duration_within(0.001, 60, zero_means="no timeout")("0") == 0
    with pytest.raises(ValueError) as caught:
        duration_within(0.001, 60)("0")
    assert str(caught.value) == "0 is out of range; expected 1ms to 1m"


def test_a_size_out_of_range_is_told_as_written_with_the_range_in_units():
    with pytest.raises(ValueError) as caught:
        size_within(1 << 10, 16 << 20)("17M")
    assert str(caught.value) == "17M is out of range; expected 1K to 16M"


def test_port_ranges_read_ports_and_ranges_and_write_them_back():
    ranges = parse_port_ranges("0-1023, 1900 ,5353, 7 - 9")
    assert ranges == ((0, 1023), (1900, 1900), (5353, 5353), (7, 9))
    assert format_port_ranges(ranges) == "0-1023, 1900, 5353, 7-9"
    assert parse_port_ranges(format_port_ranges(ranges)) == ranges


def test_no_port_range_at_all_blocks_none():
    assert parse_port_ranges("") == ()
    assert parse_port_ranges(" , ") == ()
    assert format_port_ranges(()) == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0-1023, x", "'x' is not a port or a range of ports; write e.g. 0-1023, 1900, 5353"),
        ("1023-0", "'1023-0' is not a range of ports from 0 to 65535, low to high"),
        ("70000", "'70000' is not a range of ports from 0 to 65535, low to high"),
        ("-5", "'-5' is not a port or a range of ports; write e.g. 0-1023, 1900, 5353"),
    ],
)
def test_what_is_not_a_port_range_is_refused_with_an_example(text, message):
    with pytest.raises(ValueError) as caught:
        parse_port_ranges(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "value"),
    [("yes", True), ("On", True), ("1", True), ("TRUE", True), ("no", False), ("off", False), ("0", False)],
)
def test_a_boolean_is_yes_or_no_in_the_usual_words(text, value):
    assert parse_boolean(text) is value


def test_a_boolean_is_nothing_else():
    for text in ("maybe", "", "2", "y"):
        with pytest.raises(ValueError, match=r"is not yes or no$"):
            parse_boolean(text)


def test_ipv4_mapped_trusted_proxies_are_the_ipv4_addresses_echod_counts_peers_as():
    assert parse_networks("::ffff:198.18.0.1, ::ffff:198.18.0.0/112") == (
        ipaddress.ip_network("198.18.0.1/32"),
        ipaddress.ip_network("198.18.0.0/16"),
    )


def test_networks_take_brackets_and_are_written_back_with_single_addresses_bare():
    networks = parse_networks("127.0.0.0/8, [::1], 2001:db8::/32")
    assert networks == tuple(map(ipaddress.ip_network, ("127.0.0.0/8", "::1", "2001:db8::/32")))
    assert format_networks(networks) == "127.0.0.0/8, ::1, 2001:db8::/32"
    assert format_networks(()) == "nowhere"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("192.0.2.1/24", "'192.0.2.1/24' has bits set past its prefix length; did you mean 192.0.2.0/24?"),
        (
            "localhost",
            "'localhost' is not an address or a network; write e.g. 127.0.0.0/8, ::1, 198.18.0.0/15",
        ),
        (
            "10.0.0.0/33",
            "'10.0.0.0/33' is not an address or a network; write e.g. 127.0.0.0/8, ::1, 198.18.0.0/15",
        ),
    ],
)
def test_what_is_not_a_network_is_refused_with_the_fix(text, message):
    with pytest.raises(ValueError) as caught:
        parse_networks("::1, " + text)
    assert str(caught.value) == message


def test_a_path_is_absolute_or_empty_for_off():
    assert optional_absolute_path("/var/log/echod/access.log") == "/var/log/echod/access.log"
    assert optional_absolute_path("") is None
    with pytest.raises(ValueError) as caught:
        optional_absolute_path("access.log")
    assert str(caught.value) == "'access.log' is not an absolute path; write one, or leave it empty for off"
