"""
The grammar of addresses and ADDRESS:PORT values, on its own: each mistake
admins make gets its own message with a right example built from what was
written (tests/test_config.py: the same told at the file's line and key).
"""

import functools

import pytest

from echod.endpoints import address, endpoint, port


def test_an_endpoint_is_an_address_and_a_port_the_address_compressed():
    assert endpoint("127.0.0.1:9207") == ("127.0.0.1", 9207)
    assert endpoint("[::1]:9207") == ("::1", 9207)
    assert endpoint("[0:0::1]:0") == ("::1", 0)
    assert endpoint("[2001:db8::7]:65535") == ("2001:db8::7", 65535)


def test_an_address_takes_brackets_and_a_port_its_range():
    assert address("[::1]") == "::1"
    assert address("0.0.0.0") == "0.0.0.0"
    assert port(0, 65535, "65535") == 65535


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # The port is what is missing: before, "[::1]" was told to write "[::1]:1]".
        ("[::1]", "'[::1]': the port is missing; write e.g. [::1]:9207"),
        ("::1", "'::1': the port is missing; write e.g. [::1]:9207"),
        ("[2001:db8::7]:", "'[2001:db8::7]:': the port is missing; write e.g. [2001:db8::7]:9207"),
        ("127.0.0.1", "'127.0.0.1': the port is missing; write e.g. 127.0.0.1:9207"),
        ("127.0.0.1:", "'127.0.0.1:': the port is missing; write e.g. 127.0.0.1:9207"),
        # The address is.
        (
            "9207",
            "'9207': the address is missing; write e.g. 127.0.0.1:9207 or [::1]:9207, "
            "or leave it empty for off",
        ),
        (":9100", "':9100': the address is missing; write e.g. 127.0.0.1:9100 or [::1]:9100"),
        ("[]:9100", "'[]:9100': the address is missing; write e.g. 127.0.0.1:9100 or [::1]:9100"),
        # The brackets are: the example keeps the address and port written.
        (
            "2001:db8::7:9100",
            "'2001:db8::7:9100': write an IPv6 address in brackets and the port after them: "
            "[2001:db8::7]:9100, or [2001:db8::7:9100]:9207 if 2001:db8::7:9100 is the address",
        ),
        (
            "2001:db8::7]:9100",
            "'2001:db8::7]:9100' is not ADDRESS:PORT; write e.g. 127.0.0.1:9207 or "
            "[::1]:9207, or leave it empty for off",
        ),
        ("[::1", "'[::1': no ']' after the IPv6 address; write e.g. [::1]:9207"),
        ("[::1]9100", "'[::1]9100': only ':PORT' may follow ']'; write e.g. [::1]:9207"),
        # The port is wrong, at the edge of its range.
        ("127.0.0.1:65536", "'127.0.0.1:65536': the port 65536 is out of range; expected 0 to 65535"),
        ("[::1]:65536", "'[::1]:65536': the port 65536 is out of range; expected 0 to 65535"),
        ("127.0.0.1:-1", "'127.0.0.1:-1': the port '-1' is not a whole number; expected 0 to 65535"),
        ("127.0.0.1:http", "'127.0.0.1:http': the port 'http' is not a whole number; expected 0 to 65535"),
    ],
)
def test_a_metrics_value_that_is_not_address_and_port_says_what_is_missing_with_a_right_example(
    value, message
):
    with pytest.raises(ValueError) as caught:
        endpoint(value)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "address",
            "127.0.0.1:7",
            "'127.0.0.1:7' is an address and a port; write address = 127.0.0.1 and port = 7",
        ),
        ("address", "[::1]:7", "'[::1]:7' is an address and a port; write address = ::1 and port = 7"),
        (
            "port",
            "127.0.0.1:7",
            "'127.0.0.1:7' is an address and a port; write address = 127.0.0.1 and port = 7",
        ),
        (
            "port",
            "[2001:db8::1]:7",
            "'[2001:db8::1]:7' is an address and a port; write address = 2001:db8::1 and port = 7",
        ),
        ("port", "65536", "65536 is out of range; expected 0 to 65535"),
        ("port", ":7", "':7' is not a whole number; expected 0 to 65535"),
    ],
)
def test_a_listener_address_or_port_written_as_address_and_port_says_which_key_takes_which(
    key, value, message
):
    convert = address if key == "address" else functools.partial(port, 0, 65535)
    with pytest.raises(ValueError) as caught:
        convert(value)
    assert str(caught.value) == message
