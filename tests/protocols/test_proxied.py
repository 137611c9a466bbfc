"""
The PROXY header applied to connections (echod.protocols.proxied, with proxy_protocol):
who the peer is, when the caps apply, and what closes a connection. The
header's own grammar is tested in test_proxy.py.
"""

import dataclasses
import ipaddress

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from echod.accounting.accesslog import FLUSH_INTERVAL, AccessLog
from echod.accounting.stats import ListenerStats
from echod.protocols.bytecount import BytecountFactory
from echod.protocols.connection import LimitedProtocol
from echod.protocols.echo import EchoFactory
from echod.protocols.limits import ConnectionLimits, LimitedFactory, ListenerContext
from echod.protocols.proxied import PROXY_HEADER_TIMEOUT
from tests.proxyheaders import V2_LOCAL, proxy_v1, proxy_v2
from tests.transports import connect

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1"))
V1 = proxy_v1(("198.18.1.10", 40000))


class Listener:
    """A proxy_protocol listener on a fake clock, its connections on string transports; a real access log."""

    def __init__(self, tmp_path, inner=None, **limits) -> None:
        self.clock = Clock()
        self.log_path = tmp_path / "access.log"
        self.access_log = AccessLog(str(self.log_path), self.clock)
        options = {
            "max_connections": 100,
            "max_connections_per_peer": 100,
            "idle_timeout": 0,
            "proxy_protocol": True,
            "trusted_proxies": LOOPBACK,
        }
        options.update(limits)
        self.factory = LimitedFactory(
            inner or EchoFactory(),
            name="l",
            limits=ConnectionLimits(**options),
            stats=ListenerStats(),
            clock=self.clock,
            context=ListenerContext(access_log=self.access_log),
        )

    def connect(self, host: str = "127.0.0.1", port: int = 50000):
        """A connection from C{host}, by default the trusted proxy on loopback."""
        return connect(self.factory, host, port)

    def close(self, protocol: LimitedProtocol) -> None:
        protocol.connectionLost(None)

    def lines(self) -> list[str]:
        self.clock.advance(FLUSH_INTERVAL)
        return [line.split(" ", 1)[1] for line in self.log_path.read_text().splitlines()]


def warnings(events) -> list[str]:
    return [e["log_format"].format(**e) for e in events if e["log_level"] == LogLevel.warn]


def test_header_names_the_client_and_the_payload_after_it_is_echoed(tmp_path):
    listener = Listener(tmp_path)
    protocol, transport = listener.connect()
    protocol.dataReceived(V1 + b"hello")
    assert transport.value() == b"hello"
    assert (protocol.getPeer().host, protocol.getPeer().port) == ("198.18.1.10", 40000)
    listener.close(protocol)
    assert listener.lines() == [
        "l 198.18.1.10:40000 in=5 out=5 duration=0.000s closed=client via=127.0.0.1:50000"
    ]
    assert (listener.factory.stats.accepted, listener.factory.stats.bytes_received) == (1, 5)


@pytest.mark.parametrize(
    "header, client",
    [
        (V1, "198.18.1.10:40000"),
        (b"PROXY TCP6 2001:db8::10 2001:db8::1 40000 7\r\n", "[2001:db8::10]:40000"),
        (proxy_v2(("198.18.1.10", 40000)), "198.18.1.10:40000"),
        (proxy_v2(("2001:db8::10", 40000), tlvs=b"\x01\x00\x02h2" + b"\x04\x00\x00"), "[2001:db8::10]:40000"),
        (b"PROXY UNKNOWN\r\n", "127.0.0.1:50000"),
        (V2_LOCAL, "127.0.0.1:50000"),
    ],
)
def test_a_header_split_at_every_byte_gives_the_same_connection(tmp_path, header, client):
    for cut in range(1, len(header) + 4):
        (tmp_path / str(cut)).mkdir()
        listener = Listener(tmp_path / str(cut))
        protocol, transport = listener.connect()
        stream = header + b"abc"
        for piece in (stream[:cut], stream[cut:]):
            if piece:
                protocol.dataReceived(piece)
        assert transport.value() == b"abc"
        listener.close(protocol)
        via = "" if client.startswith("127.") else " via=127.0.0.1:50000"
        assert listener.lines() == [f"l {client} in=3 out=3 duration=0.000s closed=client{via}"]


def test_nothing_reaches_the_protocol_before_the_header_is_complete(tmp_path):
    listener = Listener(tmp_path, inner=BytecountFactory("l", 20, 1 << 20, ListenerStats()))
    protocol, transport = listener.connect()
    protocol.dataReceived(V1[:-1])
    assert protocol.wrappedProtocol.transport is None  # the bytecount protocol has not begun
    protocol.dataReceived(V1[-1:] + b"3 abc")
    assert transport.value() == b"abc"


def test_once_the_header_is_read_chunks_go_straight_to_the_class_method(tmp_path):
    listener = Listener(tmp_path)
    protocol, _ = listener.connect()
    assert "dataReceived" in vars(protocol)
    protocol.dataReceived(V1)
    assert "dataReceived" not in vars(protocol)


def test_a_connection_from_outside_trusted_proxies_is_closed_at_once_and_warned_of_once(tmp_path):
    listener = Listener(tmp_path, trusted_proxies=(ipaddress.ip_network("198.18.0.0/15"),))
    with capturedLogs() as events:
        assert listener.connect("127.0.0.1", 1) == (None, None)
        assert listener.connect("127.0.0.1", 2) == (None, None)
    assert listener.connect("198.18.0.1", 3)[0] is not None
    assert listener.factory.stats.untrusted_proxies == 2
    assert listener.factory.stats.accepted == 0
    assert warnings(events) == [
        "l: closing a connection from 127.0.0.1:1, which is not in trusted_proxies:"
        " with proxy_protocol = yes only the balancers listed there may connect"
    ]
    assert listener.lines() == [
        "l 127.0.0.1:1 in=0 out=0 duration=0.000s closed=untrusted-proxy",
        "l 127.0.0.1:2 in=0 out=0 duration=0.000s closed=untrusted-proxy",
    ]


def test_ipv4_mapped_source_is_trusted_as_its_ipv4_address(tmp_path):
    listener = Listener(tmp_path)
    assert listener.connect("::ffff:127.0.0.1")[0] is not None


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"GET / HTTP/1.0\r\n", "bad PROXY header from 127.0.0.1:50000, closing: "),
        (
            b"PROXY TCP4 198.18.1.10 198.18.0.1 99999 7\r\n",
            "bad PROXY header from 127.0.0.1:50000, closing: ",
        ),
        (b"PROXY UNKNOWN " + b"x" * 100, "bad PROXY header from 127.0.0.1:50000, closing: "),
    ],
)
def test_a_bad_header_closes_the_connection_with_one_warning(tmp_path, data, reason):
    listener = Listener(tmp_path)
    protocol, transport = listener.connect()
    with capturedLogs() as events:
        protocol.dataReceived(data)
    assert transport.disconnected  # aborted
    assert transport.value() == b""
    [warning] = warnings(events)
    assert warning.startswith("l: " + reason)
    listener.close(protocol)
    assert listener.factory.stats.bad_proxy_headers == 1
    assert listener.lines() == ["l 127.0.0.1:50000 in=0 out=0 duration=0.000s closed=bad-proxy-header"]


def test_a_header_not_complete_in_time_closes_the_connection_within_a_quarter_more(tmp_path):
    listener = Listener(tmp_path)
    first, _ = listener.connect(port=1)  # the sweep of late headers began with it
    listener.clock.advance(0.5)
    first.dataReceived(V1)
    protocol, transport = listener.connect()
    protocol.dataReceived(V1[:10])
    listener.clock.advance(PROXY_HEADER_TIMEOUT - 0.001)
    assert not transport.disconnected
    with capturedLogs() as events:
        listener.clock.advance(PROXY_HEADER_TIMEOUT / 4)
    assert transport.disconnected
    assert warnings(events) == [
        f"l: bad PROXY header from 127.0.0.1:50000, closing: no complete PROXY header within"
        f" {PROXY_HEADER_TIMEOUT:g}s (10 bytes of one came)"
    ]
    listener.close(protocol)
    assert listener.factory.stats.bad_proxy_headers == 1


def test_the_sweep_of_late_headers_stops_once_none_is_awaited(tmp_path):
    listener = Listener(tmp_path)
    timers = len(listener.clock.getDelayedCalls())  # the access log's
    protocol, _ = listener.connect()
    assert len(listener.clock.getDelayedCalls()) == timers + 1
    protocol.dataReceived(V1)
    assert listener.factory.proxy.awaiting == {}
    listener.clock.advance(PROXY_HEADER_TIMEOUT)
    assert len(listener.clock.getDelayedCalls()) == timers


def test_a_connection_closed_before_its_header_is_no_longer_awaited(tmp_path):
    listener = Listener(tmp_path)
    protocol, _ = listener.connect()
    listener.close(protocol)
    assert listener.factory.proxy.awaiting == {}
    assert listener.factory.stats.active == 0


def test_an_ipv4_client_of_a_dual_stack_balancer_counts_as_its_ipv4_address(tmp_path):
    listener = Listener(tmp_path, max_connections_per_peer=1)
    mapped = b"PROXY TCP6 ::ffff:198.18.1.10 ::ffff:198.18.0.1 40000 7\r\n"
    first, _ = listener.connect(port=1)
    first.dataReceived(mapped)
    second, second_transport = listener.connect(port=2)
    second.dataReceived(V1)  # the same client, as IPv4: over the cap
    assert second_transport.disconnected
    listener.close(first)
    assert (
        listener.lines()[0] == "l 198.18.1.10:40000 in=0 out=0 duration=0.000s closed=client via=127.0.0.1:1"
    )


def test_end_of_file_with_nothing_sent_is_a_port_check_not_a_bad_header(tmp_path):
    listener = Listener(tmp_path)
    protocol, transport = listener.connect()
    with capturedLogs() as events:
        protocol.readConnectionLost()
    assert transport.disconnecting
    assert warnings(events) == []
    listener.close(protocol)
    assert listener.factory.stats.bad_proxy_headers == 0
    assert listener.lines() == ["l 127.0.0.1:50000 in=0 out=0 duration=0.000s closed=client"]


def test_end_of_file_inside_the_header_is_a_bad_header(tmp_path):
    listener = Listener(tmp_path)
    protocol, transport = listener.connect()
    protocol.dataReceived(V1[:7])
    with capturedLogs() as events:
        protocol.readConnectionLost()
    assert transport.disconnected
    assert warnings(events) == [
        "l: bad PROXY header from 127.0.0.1:50000, closing:"
        " the client stopped sending after 7 bytes of its PROXY header"
    ]


def test_the_per_peer_cap_counts_the_client_once_its_header_is_read(tmp_path):
    listener = Listener(tmp_path, max_connections_per_peer=1)
    first, _ = listener.connect(port=1)
    second, second_transport = listener.connect(port=2)
    other, other_transport = listener.connect(port=3)
    first.dataReceived(V1)
    with capturedLogs() as events:
        second.dataReceived(V1 + b"x")  # the same client: over its cap
    other.dataReceived(b"PROXY TCP4 198.18.1.11 198.18.0.1 40000 7\r\nok")
    assert second_transport.disconnected and second_transport.value() == b""
    assert other_transport.value() == b"ok"
    assert warnings(events) == [
        "l: max_connections_per_peer (1) reached, refusing new connections from 198.18.1.10"
    ]
    stats = listener.factory.stats
    assert (stats.accepted, stats.refused, stats.active) == (2, 1, 3)
    listener.close(second)
    assert listener.lines() == [
        "l 198.18.1.10:40000 in=0 out=0 duration=0.000s closed=refused-max_connections_per_peer"
        " via=127.0.0.1:2"
    ]
    listener.close(first)
    third, third_transport = listener.connect(port=4)
    third.dataReceived(V1 + b"again")
    assert third_transport.value() == b"again"


def test_connections_awaiting_their_header_count_against_the_total_cap(tmp_path):
    listener = Listener(tmp_path, max_connections=1)
    listener.connect(port=1)
    assert listener.connect(port=2) == (None, None)
    assert listener.factory.stats.refused == 1


def test_bad_requests_inside_name_the_client(tmp_path):
    listener = Listener(tmp_path, inner=BytecountFactory("l", 20, 1 << 20, ListenerStats()))
    protocol, _ = listener.connect()
    with capturedLogs() as events:
        protocol.dataReceived(V1 + b"x")
    assert warnings(events) == [
        "l: bad request from 198.18.1.10:40000, closing: byte b'x' at header offset 0 is not a digit;"
        " the header is a decimal length and one space"
    ]


def test_turning_it_off_applies_to_new_connections_only(tmp_path):
    listener = Listener(tmp_path)
    waiting, waiting_transport = listener.connect(port=1)
    listener.factory.limits = dataclasses.replace(listener.factory.limits, proxy_protocol=False)
    plain, plain_transport = listener.connect(port=2)
    plain.dataReceived(V1)
    assert plain_transport.value() == V1  # echoed: just bytes to a plain listener
    waiting.dataReceived(V1 + b"hi")
    assert waiting_transport.value() == b"hi"
    assert waiting.getPeer().host == "198.18.1.10"


def test_peer_prefixes_changed_while_a_header_is_awaited_keep_it_uncounted(tmp_path):
    listener = Listener(tmp_path, max_connections_per_peer=1)
    waiting, _ = listener.connect(port=1)
    listener.factory.limits = dataclasses.replace(
        listener.factory.limits, peer_prefix_ipv4=24, peer_prefix_ipv6=64
    )
    waiting.dataReceived(V1)
    other, other_transport = listener.connect(port=2)
    other.dataReceived(b"PROXY TCP4 198.18.1.99 198.18.0.1 40000 7\r\nx")  # the same /24: over the cap
    assert other_transport.disconnected and other_transport.value() == b""


def test_a_connection_closed_for_its_header_is_not_closed_again_by_the_sweep(tmp_path):
    listener = Listener(tmp_path)
    protocol, _ = listener.connect()
    listener.clock.advance(PROXY_HEADER_TIMEOUT - 0.1)
    with capturedLogs() as events:
        protocol.dataReceived(b"GET /")  # aborted; Twisted reports it lost a turn later
        listener.clock.advance(PROXY_HEADER_TIMEOUT)  # a sweep due before that turn
    listener.close(protocol)
    assert len(warnings(events)) == 1
    assert listener.factory.stats.bad_proxy_headers == 1
