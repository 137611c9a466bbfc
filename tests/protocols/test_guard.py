"""
The anti-reflection rules on their own (L{echod.protocols.guard}): which sources are never
answered, and which endpoints are echod's own.
"""

import socket

import pytest

from echod.protocols.guard import OwnEndpoints, is_local_address, plain_address, unanswerable_source


@pytest.mark.parametrize(
    "host",
    [
        "0.0.0.0",
        "::",
        "255.255.255.255",
        "224.0.0.1",
        "239.255.255.250",
        "ff02::1",
        "::ffff:224.0.0.1",
        "bogus",
    ],
)
def test_broadcast_multicast_and_unspecified_sources_are_never_answered(host):
    assert unanswerable_source(host)


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "192.0.2.7", "::1", "2001:db8::1", "::ffff:192.0.2.7", "fe80::1%lo"]
)
def test_ordinary_sources_are_answered(host):
    assert not unanswerable_source(host)


def test_a_listener_bound_to_one_address_owns_that_address_only():
    own = OwnEndpoints()
    own.update([("127.0.0.1", 4000), ("::1", 4001)])
    assert own.includes("127.0.0.1", 4000)
    assert own.includes("::ffff:127.0.0.1", 4000)  # the same, as a dual-stack socket sees it
    assert own.includes("::1", 4001)
    assert not own.includes("127.0.0.2", 4000)  # nothing of echod's listens there
    assert not own.includes("127.0.0.1", 4001)
    assert not own.includes("127.0.0.1", 4002)


def a_host_address(family: int, probe: str) -> str | None:
    """A non-loopback address of this host (the one it would send to C{probe} from), if it has one."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((probe, 9))  # UDP: only picks a route and a source address, sends nothing
        except OSError:
            return None
        host = sock.getsockname()[0]
    return None if plain_address(host).is_loopback else host


def test_a_wildcard_listener_owns_its_port_on_every_local_address():
    own = OwnEndpoints()
    own.update([("::", 4000), ("0.0.0.0", 4001)])
    for host in ("127.0.0.1", "127.0.0.9", "::ffff:127.0.0.9", "::1"):
        assert own.includes(host, 4000), host
        assert own.includes(host, 4001), host
    assert not own.includes("127.0.0.1", 4002)
    assert not own.includes("203.0.113.9", 4000)  # TEST-NET-3: no host here has it
    assert not own.includes("2001:db8:ffff::9", 4000)
    for family, probe in ((socket.AF_INET, "203.0.113.1"), (socket.AF_INET6, "2001:db8:ffff::1")):
        host = a_host_address(family, probe)
        if host is not None:
            assert own.includes(host, 4000), host


def test_only_loopback_and_bindable_addresses_are_local():
    assert is_local_address(plain_address("127.0.0.2"))
    assert is_local_address(plain_address("::1"))
    assert not is_local_address(plain_address("203.0.113.9"))
    assert not is_local_address(plain_address("2001:db8:ffff::9"))
