"""
The grammar of what the probe's packets carry (-I, --source-port, -Q, -t,
-M) and the settings it makes (L{echod.probe.packets}), at every edge.
"""

from __future__ import annotations

import socket

import pytest

from echod.probe.packets import (
    DSCP_NAMES,
    PacketOptions,
    Source,
    check_source_family,
    describe_tos,
    parse_pmtu_discovery,
    parse_qos,
    parse_source,
    parse_source_port,
    parse_ttl,
)

# -- -I ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("198.18.0.1", Source(address="198.18.0.1")),
        ("2001:db8::1", Source(address="2001:db8::1")),
        ("fe80::1%eth0", Source(address="fe80::1%eth0")),
        ("::", Source(address="::")),
        ("eth0", Source(interface="eth0")),
        ("veth-a.100", Source(interface="veth-a.100")),
        ("e" * 15, Source(interface="e" * 15)),
        ("e", Source(interface="e")),
    ],
)
def test_a_source_is_an_address_or_else_an_interface(text, expected):
    assert parse_source(text) == expected


@pytest.mark.parametrize("text", ["", "e" * 16, ".", "..", "eth/0", "eth:0", "eth 0", "eth\t0", "eth\x000"])
def test_a_source_that_is_neither_an_address_nor_an_interface_name_is_refused(text):
    with pytest.raises(ValueError, match="neither an IPv4 or IPv6 address nor an interface name"):
        parse_source(text)


def test_a_malformed_address_is_no_interface_either():
    # It has colons, so it cannot be an interface's name; not being an address, it is nothing.
    with pytest.raises(ValueError, match="neither"):
        parse_source("2001:db8::g")


@pytest.mark.parametrize(("text", "port"), [("1", 1), ("65535", 65535), ("4000", 4000)])
def test_a_source_port_is_1_to_65535(text, port):
    assert parse_source_port(text) == port


@pytest.mark.parametrize("text", ["0", "65536", "-1", "+5", "1.5", "", "port"])
def test_a_source_port_out_of_range_or_not_a_number_is_refused(text):
    with pytest.raises(ValueError, match="1 to 65535"):
        parse_source_port(text)


# -- -Q ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tos"),
    [
        ("ef", 0xB8),
        ("EF", 0xB8),
        ("af11", 10 << 2),
        ("af12", 12 << 2),
        ("af13", 14 << 2),
        ("af21", 18 << 2),
        ("af33", 30 << 2),
        ("af41", 34 << 2),
        ("af43", 38 << 2),
        ("cs0", 0),
        ("cs1", 8 << 2),
        ("cs6", 48 << 2),
        ("cs7", 56 << 2),
        ("va", 44 << 2),
        ("le", 1 << 2),
        ("dscp:0", 0),
        ("dscp:46", 0xB8),
        ("dscp:63", 0xFC),
        ("DSCP:46", 0xB8),
        ("dscp:046", 0xB8),
        # A number alone is the TOS byte, as ping's -Q: decimal, or hexadecimal after 0x.
        ("0", 0),
        ("184", 0xB8),
        ("255", 255),
        ("0184", 184),
        ("0xb8", 0xB8),
        ("0XB8", 0xB8),
        ("0x0", 0),
        ("0xff", 255),
        ("1", 1),  # ECN-capable (ECT(1)) and DSCP 0: the whole byte, as written
        (" ef ", 0xB8),
    ],
)
def test_qos_is_a_dscp_by_name_or_number_or_the_tos_byte_itself(text, tos):
    assert parse_qos(text) == tos


def test_every_dscp_name_is_its_rfc_value():
    # RFC 2474 class selectors, RFC 2597 AF, RFC 3246 EF, RFC 5865 VOICE-ADMIT, RFC 8622 LE.
    assert DSCP_NAMES == {
        "cs0": 0,
        "cs1": 8,
        "cs2": 16,
        "cs3": 24,
        "cs4": 32,
        "cs5": 40,
        "cs6": 48,
        "cs7": 56,
        "af11": 10,
        "af12": 12,
        "af13": 14,
        "af21": 18,
        "af22": 20,
        "af23": 22,
        "af31": 26,
        "af32": 28,
        "af33": 30,
        "af41": 34,
        "af42": 36,
        "af43": 38,
        "ef": 46,
        "va": 44,
        "le": 1,
    }


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("dscp:64", "a DSCP is 0 to 63"),
        ("256", "a TOS byte is 0 to 255"),
        ("999", "a TOS byte is 0 to 255"),
        ("0x100", "is not a DSCP name"),
        ("0x", "is not a DSCP name"),
        ("0xg0", "is not a DSCP name"),
        ("dscp:", "is not a DSCP name"),
        ("dscp:-1", "is not a DSCP name"),
        ("dscp:0x2e", "is not a DSCP name"),
        ("af44", "is not a DSCP name"),
        ("af51", "is not a DSCP name"),
        ("cs8", "is not a DSCP name"),
        ("-1", "is not a DSCP name"),
        ("1.5", "is not a DSCP name"),
        ("", "is not a DSCP name"),
        ("\u0661", "is not a DSCP name"),  # ARABIC-INDIC DIGIT ONE: a digit to Python, not to ping
    ],
)
def test_qos_out_of_range_or_unknown_is_refused_saying_what_is_allowed(text, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_qos(text)


@pytest.mark.parametrize(
    ("tos", "text"),
    [
        (0xB8, "0xb8 (dscp 46, ef)"),
        (0, "0x00 (dscp 0, cs0)"),
        (0x28, "0x28 (dscp 10, af11)"),
        (0xB9, "0xb9 (dscp 46, ef, ecn 1)"),
        (0x0B, "0x0b (dscp 2, ecn 3)"),
    ],
)
def test_a_tos_byte_is_told_with_its_dscp_and_any_ecn(tos, text):
    assert describe_tos(tos) == text


# -- -t and -M ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "ttl"), [("1", 1), ("64", 64), ("255", 255)])
def test_a_ttl_is_1_to_255(text, ttl):
    assert parse_ttl(text) == ttl


@pytest.mark.parametrize("text", ["0", "256", "-1", "", "x"])
def test_a_ttl_out_of_range_is_refused(text):
    with pytest.raises(ValueError, match="1 to 255"):
        parse_ttl(text)


@pytest.mark.parametrize(("text", "word"), [("do", "do"), ("want", "want"), ("dont", "dont"), ("DO", "do")])
def test_path_mtu_discovery_is_one_of_pings_three_words(text, word):
    assert parse_pmtu_discovery(text) == word


@pytest.mark.parametrize("text", ["probe", "don't", "", "yes"])
def test_other_path_mtu_discovery_words_are_refused(text):
    with pytest.raises(ValueError, match="do, want, dont"):
        parse_pmtu_discovery(text)


# -- the settings --------------------------------------------------------------------------------------


def test_no_settings_are_the_kernels_own_choice_and_say_nothing():
    packets = PacketOptions()
    assert (packets.family, packets.binds, packets.describe()) == (None, False, "")
    assert packets.report() == {
        "source": None,
        "interface": None,
        "source_port": None,
        "tos": None,
        "dscp": None,
        "ttl": None,
        "pmtu_discovery": None,
    }


def test_settings_are_told_and_reported_as_given():
    packets = PacketOptions(source="198.18.0.1", source_port=4000, tos=0xB8, ttl=3, pmtu_discovery="do")
    assert (packets.family, packets.binds) == (socket.AF_INET, True)
    assert packets.describe() == (
        "from 198.18.0.1 port 4000, tos 0xb8 (dscp 46, ef), ttl 3, path MTU discovery do"
    )
    assert packets.report() == {
        "source": "198.18.0.1",
        "interface": None,
        "source_port": 4000,
        "tos": 0xB8,
        "dscp": 46,
        "ttl": 3,
        "pmtu_discovery": "do",
    }
    through = PacketOptions(interface="eth1", source_port=53000)
    assert (through.family, through.binds) == (None, True)
    assert through.describe() == "from any address port 53000, through eth1"
    assert PacketOptions(source="2001:db8::1").family == socket.AF_INET6


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"source": "198.18.0.1", "interface": "eth0"}, "not both"),
        ({"source": "eth0"}, "not an IPv4 or IPv6 address"),
        ({"source_port": 0}, "--source-port 0: 1 to 65535"),
        ({"source_port": 65536}, "--source-port 65536"),
        ({"tos": 256}, "-Q 256: 0 to 255"),
        ({"tos": -1}, "-Q -1"),
        ({"ttl": 0}, "-t 0: 1 to 255"),
        ({"ttl": 256}, "-t 256"),
        ({"pmtu_discovery": "probe"}, "-M 'probe'"),
    ],
)
def test_settings_made_without_the_parsers_are_held_to_the_same_bounds(kwargs, complaint):
    with pytest.raises(ValueError, match=complaint):
        PacketOptions(**kwargs)


def test_the_bounds_themselves_are_settings():
    assert PacketOptions(source_port=1, tos=0, ttl=1).describe() == (
        "from any address port 1, tos 0x00 (dscp 0, cs0), ttl 1"
    )
    assert PacketOptions(source_port=65535, tos=255, ttl=255).ttl == 255


@pytest.mark.parametrize(
    ("source", "family", "refused"),
    [
        ("198.18.0.1", socket.AF_INET, False),
        ("198.18.0.1", None, False),
        ("198.18.0.1", socket.AF_INET6, True),
        ("2001:db8::1", socket.AF_INET, True),
        ("fe80::1%eth0", socket.AF_INET6, False),
    ],
)
def test_a_source_address_must_be_of_the_probes_family(source, family, refused):
    packets = PacketOptions(source=source)
    if refused:
        with pytest.raises(
            ValueError, match=f"-I {source} is an IPv[46] address, and the probe goes over IPv[46]"
        ):
            check_source_family(packets, family)
    else:
        check_source_family(packets, family)
    check_source_family(PacketOptions(interface="eth0"), family)  # an interface has either
