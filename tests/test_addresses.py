import timeit

import pytest
from twisted.internet.address import IPv4Address, IPv6Address

from echod.addresses import format_peer, host_port, peer_host, peer_key, split_host_port


def test_peer_host_turns_ipv4_mapped_addresses_back_into_ipv4():
    assert peer_host(IPv6Address("TCP", "::ffff:192.0.2.7", 1)) == "192.0.2.7"
    assert peer_host(IPv6Address("TCP", "2001:db8::1", 1)) == "2001:db8::1"
    assert format_peer(IPv6Address("TCP", "2001:db8::1", 7)) == "[2001:db8::1]:7"
    assert format_peer(IPv4Address("TCP", "192.0.2.7", 7)) == "192.0.2.7:7"


@pytest.mark.parametrize(
    ("host", "prefix", "key"),
    [
        ("192.0.2.77", 32, "192.0.2.77"),
        ("192.0.2.77", 31, "192.0.2.76/31"),
        ("192.0.2.77", 24, "192.0.2.0/24"),
        ("192.0.2.77", 1, "128.0.0.0/1"),
        ("192.0.2.77", 0, "0.0.0.0/0"),
        ("255.255.255.255", 8, "255.0.0.0/8"),
    ],
)
def test_ipv4_prefixes(host, prefix, key):
    assert peer_key(host, prefix_ipv4=prefix) == key


@pytest.mark.parametrize(
    ("host", "prefix", "key"),
    [
        ("2001:db8:1:2:a:b:c:d", 128, "2001:db8:1:2:a:b:c:d"),
        ("2001:db8:1:2:a:b:c:d", 127, "2001:db8:1:2:a:b:c:c/127"),
        ("2001:db8:1:2:a:b:c:d", 65, "2001:db8:1:2::/65"),
        ("2001:db8:1:2:ffff:b:c:d", 65, "2001:db8:1:2:8000::/65"),
        ("2001:db8:1:2:a:b:c:d", 64, "2001:db8:1:2::/64"),
        ("2001:db8:1:2:a:b:c:d", 63, "2001:db8:1:2::/63"),
        ("2001:db8:1:3:a:b:c:d", 63, "2001:db8:1:2::/63"),
        ("2001:db8:1:2:a:b:c:d", 32, "2001:db8::/32"),
        ("2001:db8:1:2:a:b:c:d", 1, "::/1"),
        ("ffff::1", 1, "8000::/1"),
        ("2001:db8:1:2:a:b:c:d", 0, "::/0"),
        ("::1", 64, "::/64"),
    ],
)
def test_ipv6_prefixes(host, prefix, key):
    assert peer_key(host, prefix_ipv6=prefix) == key


def test_four_addresses_of_one_slash_64_are_one_peer_by_default():
    hosts = [
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
        "2001:db8:1:2:dead:beef:0:1",
        "2001:db8:1:2:ffff:ffff:ffff:ffff",
    ]
    assert {peer_key(host) for host in hosts} == {"2001:db8:1:2::/64"}
    assert peer_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"


def test_ipv4_mapped_ipv6_counts_as_ipv4_with_the_ipv4_prefix():
    assert peer_key("::ffff:192.0.2.77") == "192.0.2.77"
    assert peer_key("::ffff:192.0.2.77", prefix_ipv4=24, prefix_ipv6=0) == "192.0.2.0/24"
    assert peer_key("::ffff:192.0.2.77", 24) == peer_key("192.0.2.77", 24)


def test_link_local_addresses_always_count_whole():
    assert peer_key("fe80::1:2:3:4") == "fe80::1:2:3:4"
    assert peer_key("febf::1", prefix_ipv6=0) == "febf::1"
    assert peer_key("fe80::1%eth0") == "fe80::1%eth0"
    assert peer_key("fec0::1") == "fec0::/64"  # just outside fe80::/10


def test_anything_else_is_its_own_peer():
    assert peer_key("not an address", 8, 8) == "not an address"
    assert peer_key("1.2.3", 8) == "1.2.3"


def test_a_key_costs_a_few_microseconds_at_most_even_for_new_addresses():
    new = [f"2001:db8:{i >> 16:x}:{i & 0xFFFF:x}::1" for i in range(20_000)]  # none seen before
    seen = ["2001:db8:1:2:a:b:c:d"] * 20_000

    def cost(hosts: list[str]) -> float:
        return timeit.timeit(lambda: [peer_key(host) for host in hosts], number=1) / len(hosts)

    assert cost(new) < 20e-6, f"{cost(new) * 1e6:.2f} µs a new address"
    assert cost(seen) < 5e-6, f"{cost(seen) * 1e6:.2f} µs an address seen before"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", ("192.0.2.1", 7)),
        ("192.0.2.1:50007", ("192.0.2.1", 50007)),
        ("echo.example:7007", ("echo.example", 7007)),
        ("localhost", ("localhost", 7)),
        ("[2001:db8::1]:7", ("2001:db8::1", 7)),
        ("[2001:db8::1]", ("2001:db8::1", 7)),
        ("[fe80::1%eth0]:9", ("fe80::1%eth0", 9)),
        ("2001:db8::1", ("2001:db8::1", 7)),  # an IPv6 address without brackets is all host
        ("::1", ("::1", 7)),
        (" 192.0.2.1:65535 ", ("192.0.2.1", 65535)),
    ],
)
def test_split_host_port_reads_what_host_port_writes_and_names(text, expected):
    assert split_host_port(text, 7) == expected


def test_split_host_port_is_the_inverse_of_host_port():
    for host in ("192.0.2.1", "2001:db8::1", "echo.example"):
        assert split_host_port(host_port(host, 50007), 7) == (host, 50007)


@pytest.mark.parametrize(
    "text",
    [
        "",
        ":7",
        "[]:7",
        "[2001:db8::1",
        "[2001:db8::1]7",
        "host:",
        "host:0",
        "host:65536",
        "host:x",
        "host:-1",
        "host:+7",
    ],
)
def test_split_host_port_rejects_what_names_no_host_or_no_port(text):
    with pytest.raises(ValueError):
        split_host_port(text, 7)
