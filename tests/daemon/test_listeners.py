"""
The listener services as the daemon uses them: their sockets (bound here or
given), what serves on them, reconfigured and renamed in place, taken over by
a successor, and stopped.

The sockets are real, on loopback. Twisted's MemoryReactorClock stands in for
the reactor where only the calls matter; a real reactor of the test's own,
turned by hand and never run, where a port has to accept or close for real.
"""

from __future__ import annotations

import dataclasses
import socket

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs, formatEvent

from echod.accounting.stats import ListenerStats
from echod.accounting.throttle import INTERVAL
from echod.config import parse
from echod.daemon.listeners import (
    DatagramListener,
    StreamListener,
    endpoint,
    make_listener,
    protocol_factory,
    successor,
)
from echod.daemon.reload import Running
from echod.protocols.bytecount import BytecountFactory
from echod.protocols.echo import EchoFactory
from echod.protocols.limits import ConnectionLimits
from tests.protocols.answered import RecordingPort
from tests.reactors import turn_until
from tests.transports import connect

SECTION = "[listener:{name}]\nprotocol = {protocol}\ntransport = {transport}\naddress = 127.0.0.1\n"


def settings(name="l", protocol="echo", transport="tcp", port=0, **keys):
    """One listener's settings, as echod.conf with C{keys} added would give them."""
    text = SECTION.format(name=name, protocol=protocol, transport=transport) + f"port = {port}\n"
    return parse(text + "".join(f"{key} = {value}\n" for key, value in keys.items())).listeners[0]


def started(reactor, **kwargs):
    """A listener for the settings C{kwargs} name, started as the daemon starts its children."""
    listener = make_listener(settings(**kwargs), reactor)
    listener.privilegedStartService()
    listener.startService()
    return listener


# -- which listener, serving what ------------------------------------------------------------------


def test_the_transport_chooses_the_listener():
    reactor = MemoryReactorClock()
    assert type(make_listener(settings(transport="tcp"), reactor)) is StreamListener
    assert type(make_listener(settings(transport="udp"), reactor)) is DatagramListener


def test_the_protocol_chooses_echo_or_bytecount_with_its_sizes():
    stats = ListenerStats()
    assert type(protocol_factory(settings(protocol="echo"), stats)) is EchoFactory
    bytecount = protocol_factory(
        settings(name="bc", protocol="bytecount", max_header_length=9, max_message_size=1000), stats
    )
    assert type(bytecount) is BytecountFactory
    assert (bytecount.name, bytecount.max_header_length, bytecount.max_message_size) == ("bc", 9, 1000)
    assert bytecount.stats is stats


SERVED = [("echo", b"2 hi", b"2 hi"), ("bytecount", b"2 hiX", b"hi")]


@pytest.mark.parametrize("protocol, request_, answer", SERVED)
def test_a_stream_listener_serves_its_protocol_inside_its_limits(protocol, request_, answer):
    listener = make_listener(settings(protocol=protocol, max_connections_per_peer=1), MemoryReactorClock())
    assert listener.factory.limits == ConnectionLimits.of(listener.settings)
    served, transport = connect(listener.factory)
    served.dataReceived(request_)
    assert transport.value() == answer
    assert connect(listener.factory, port=1001) == (None, None)  # the same peer, over its cap


def test_endpoint_names_transport_address_and_port():
    assert endpoint(settings(transport="udp", port=7)) == "udp 127.0.0.1:7"
    assert endpoint(dataclasses.replace(settings(port=7), address="::")) == "tcp [::]:7"


# -- sockets --------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport, kind", [("tcp", socket.SOCK_STREAM), ("udp", socket.SOCK_DGRAM)])
def test_a_listener_binds_its_own_socket_where_configured_and_hands_the_reactor_it_non_blocking(
    transport, kind
):
    reactor = MemoryReactorClock()
    listener = started(reactor, transport=transport)
    try:
        assert listener.socket.type == kind and listener.socket.getsockname()[0] == "127.0.0.1"
        assert listener.socket.getblocking() is False
        if transport == "tcp":
            ((fileno, family, factory),) = reactor.adoptedPorts
            assert (fileno, family, factory) == (listener.socket.fileno(), socket.AF_INET, listener.factory)
        else:
            assert listener.port.handler is listener.protocol
            assert listener.port.getHost().port == listener.socket.getsockname()[1]
    finally:
        listener.stopService()
        reactor.advance(0)


def test_a_given_socket_is_served_non_blocking_and_no_other_is_bound():
    reactor = MemoryReactorClock()
    given = socket.socket()
    given.bind(("127.0.0.1", 0))
    given.listen()
    listener = make_listener(settings(port=7), reactor, sock=given, inherited=True)
    with capturedLogs() as events:
        listener.privilegedStartService()
    assert listener.socket is given and reactor.adoptedPorts[0][0] == given.fileno()
    assert given.getblocking() is False  # systemd's are blocking: a blocking accept would freeze the reactor
    assert formatEvent(events[0]).endswith(" (socket from systemd)")
    assert listener.as_running() == Running("l", listener.settings, given.getsockname()[1], True)
    listener.stopService()
    # Closed (systemd keeps its own copy), it says the configured port.
    assert given.fileno() == -1 and listener.bound_port() == 7


def test_a_listener_started_before_it_joins_the_daemon_listens_only_once():
    reactor = MemoryReactorClock()
    listener = started(reactor)
    listener.privilegedStartService()  # as the daemon's start does for every child
    assert len(reactor.adoptedPorts) == 1
    listener.stopService()


def test_a_listener_on_port_0_holds_the_port_it_got():
    listener = started(MemoryReactorClock())
    got = listener.socket.getsockname()[1]
    assert got != 0 and listener.as_running().bound_port == got
    assert listener.holds_port(settings(port=got))
    assert not listener.holds_port(settings(port=got, transport="udp"))
    assert not listener.holds_port(settings(port=got + 1))
    listener.stopService()


def test_stopping_closes_the_socket_and_new_connections_are_refused(reactor):
    listener = started(reactor)
    address = listener.socket.getsockname()
    with socket.create_connection(address, timeout=5):
        turn_until(reactor, lambda: listener.stats.active == 1)
    turn_until(reactor, lambda: listener.stats.active == 0)  # the client closed: so does its connection
    stopped = listener.stopService()
    turn_until(reactor, lambda: stopped.called)
    assert listener.port is None and listener.socket.fileno() == -1
    with socket.socket() as late, pytest.raises(ConnectionRefusedError):
        late.connect(address)


def test_stopping_a_udp_listener_frees_its_port():
    reactor = MemoryReactorClock()
    listener = started(reactor, transport="udp")
    address = listener.socket.getsockname()
    stopped = listener.stopService()
    reactor.advance(0)  # Twisted closes a UDP port in a later turn
    assert stopped.called and listener.port is None and listener.socket.fileno() == -1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(address)


def test_a_listener_that_never_started_stops_without_a_socket():
    listener = make_listener(settings(), MemoryReactorClock())
    assert listener.stopService().called and listener.socket is None


# -- reconfigured and renamed in place ------------------------------------------------------------


def test_reconfigure_replaces_the_limits_with_the_new_settings_value_for_open_connections_too():
    listener = make_listener(settings(max_connections_per_peer=2), MemoryReactorClock())
    factory = listener.factory
    connect(listener.factory)
    listener.reconfigure(settings(max_connections_per_peer=1, idle_timeout="5s"))
    assert listener.factory is factory
    assert factory.limits == ConnectionLimits.of(listener.settings)
    assert (factory.limits.max_connections_per_peer, factory.limits.idle_timeout) == (1, 5)
    assert connect(listener.factory, port=1001) == (None, None)  # the one open counts against the new cap


def test_switching_protocol_keeps_the_socket_and_the_open_connections():
    reactor = MemoryReactorClock()
    listener = started(reactor)
    sock, port, factory = listener.socket, listener.port, listener.factory
    before, before_transport = connect(listener.factory)
    listener.reconfigure(settings(protocol="bytecount"))
    assert (listener.socket, listener.port, listener.factory) == (sock, port, factory)
    assert len(reactor.adoptedPorts) == 1 and sock.fileno() != -1
    assert type(factory.wrappedFactory) is BytecountFactory
    after, after_transport = connect(listener.factory, port=1001)
    after.dataReceived(b"2 hiX")
    assert after_transport.value() == b"hi"
    before.dataReceived(b"2 hi")
    assert before_transport.value() == b"2 hi" and not before_transport.disconnecting  # still echo
    assert listener.stats.active == 2
    listener.stopService()


def test_reconfigure_updates_the_bytecount_sizes_for_the_next_requests():
    listener = make_listener(settings(protocol="bytecount", max_message_size=100), MemoryReactorClock())
    bytecount = listener.factory.wrappedFactory
    listener.reconfigure(settings(protocol="bytecount", max_message_size=10, max_header_length=3))
    assert listener.factory.wrappedFactory is bytecount
    assert (bytecount.max_message_size, bytecount.max_header_length) == (10, 3)
    with capturedLogs():
        protocol, transport = connect(listener.factory)
        protocol.dataReceived(b"50 ")
    assert transport.value() == b"" and listener.stats.protocol_errors == 1


def test_a_udp_listener_reconfigured_applies_its_new_rates_to_the_same_protocol():
    listener = make_listener(settings(transport="udp", datagram_rate_per_peer=100), MemoryReactorClock())
    protocol = listener.protocol
    listener.reconfigure(settings(transport="udp", datagram_rate_per_peer=2, blocked_source_ports="0-999"))
    assert listener.protocol is protocol and listener.settings.datagram_rate_per_peer == 2
    assert protocol.guard.rates["datagram_rate_per_peer"] == 2 and protocol.guard.blocked_source_ports == (
        (0, 999),
    )


def test_a_rename_reaches_the_factory_the_bytecount_protocol_and_the_proxy_gate():
    listener = make_listener(settings(protocol="bytecount"), MemoryReactorClock())
    listener.rename("new")
    factory = listener.factory
    assert (listener.name, factory.name, factory.proxy.name, factory.wrappedFactory.name) == ("new",) * 4


def test_a_renamed_udp_listener_names_its_new_section_in_its_drop_warnings():
    listener = make_listener(settings(transport="udp", datagram_rate_per_peer=1), MemoryReactorClock())
    listener.rename("renamed")
    listener.protocol.started(RecordingPort())
    with capturedLogs() as events:
        for _ in range(2):
            listener.protocol.datagram_received(b"x", ("192.0.2.1", 40000), [])
    assert "raise datagram_rate_per_peer in [listener:renamed]" in formatEvent(events[0])


def test_as_running_tells_a_reload_the_name_settings_bound_port_and_origin():
    listener = started(MemoryReactorClock())
    listener.rename("other")
    bound = listener.socket.getsockname()[1]
    assert listener.as_running() == Running("other", listener.settings, bound, False)
    listener.stopService()


# -- successors -----------------------------------------------------------------------------------


def test_a_successor_keeps_the_counters_and_the_factory_so_a_peer_at_its_cap_stays_there():
    reactor = MemoryReactorClock()
    old = make_listener(settings(max_connections_per_peer=1), reactor)
    connect(old.factory)
    old.stats.refuse("max_connections")
    moved = settings(name="moved", port=7000, max_connections_per_peer=1, max_connections=5)
    new = successor(old, moved, reactor)
    assert (new.stats, new.factory) == (old.stats, old.factory)
    assert (new.name, new.factory.name, new.settings.port) == ("moved", "moved", 7000)
    assert new.factory.limits.max_connections == 5
    assert connect(new.factory, port=1001) == (None, None)  # the one open on the old socket counts
    assert new.counters() == "1 open, 1 served, 2 refused"


def test_a_successor_may_switch_the_protocol_too():
    reactor = MemoryReactorClock()
    old = make_listener(settings(), reactor)
    new = successor(old, settings(protocol="bytecount", port=7000), reactor)
    assert new.factory is old.factory and type(new.factory.wrappedFactory) is BytecountFactory


def test_a_udp_successor_keeps_the_protocol_and_what_its_token_buckets_hold():
    reactor = MemoryReactorClock()
    old = make_listener(settings(name="u", transport="udp", datagram_rate_per_peer=1), reactor)
    old.protocol.started(RecordingPort())
    source = ("192.0.2.1", 40000)
    with capturedLogs():
        old.protocol.datagram_received(b"x", source, [])  # spends the peer's one token
        moved = settings(name="v", transport="udp", port=7000, datagram_rate_per_peer=1)
        new = successor(old, moved, reactor)
        assert new.protocol is old.protocol and new.stats is old.stats
        assert (new.name, new.protocol.name) == ("v", "v")
        new.protocol.datagram_received(b"x", source, [])
    assert new.counters() == "1 echoed, 1 dropped"  # no fresh burst for the move


def test_a_successor_on_the_other_transport_starts_afresh_but_keeps_the_counters():
    reactor = MemoryReactorClock()
    old = make_listener(settings(), reactor)
    new = successor(old, settings(transport="udp"), reactor)
    assert type(new) is DatagramListener and new.stats is old.stats


# -- counters -------------------------------------------------------------------------------------


def test_the_totals_count_the_bytes_of_open_connections_too():
    listener = make_listener(settings(), MemoryReactorClock())
    protocol, _ = connect(listener.factory)
    protocol.dataReceived(b"hello")
    assert listener.totals() == (5, 5) and listener.bytes_sent() == 5
    assert listener.counters() == "1 open, 1 served, 0 refused"
    protocol.connectionLost(None)
    assert listener.totals() == (5, 5) and listener.stats.bytes_sent == 5
    assert listener.counters() == "0 open, 1 served, 0 refused"


def test_a_udp_listeners_counters_are_datagrams():
    listener = make_listener(settings(transport="udp"), MemoryReactorClock())
    listener.protocol.started(RecordingPort())
    listener.protocol.datagram_received(b"abc", ("192.0.2.1", 40000), [])
    assert listener.counters() == "1 echoed, 0 dropped"
    assert listener.totals() == (listener.stats.bytes_received, listener.stats.bytes_sent)


@pytest.mark.parametrize("switched", [False, True])
def test_bytecount_warnings_are_summed_up_on_the_listeners_own_clock(switched):
    # The summary's timer is the listener's reactor's, as every other timer of it is.
    reactor = MemoryReactorClock()
    listener = make_listener(settings(name="bc", protocol="echo" if switched else "bytecount"), reactor)
    listener.reconfigure(settings(name="bc", protocol="bytecount"))
    with capturedLogs() as events:
        for port in (1000, 1001):
            protocol, _ = connect(listener.factory, port=port)
            protocol.dataReceived(b"x")
        reactor.advance(INTERVAL)
    said = [formatEvent(event) for event in events]
    assert len(said) == 2 and said[1].startswith("bc: ... and 1 more bad requests")


def test_a_reload_sizes_a_udp_listeners_receive_buffer_on_its_own_socket():
    reactor = MemoryReactorClock()
    listener = started(reactor, transport="udp", receive_buffer="64K")
    try:
        sock = listener.socket
        assert (
            listener.stats.receive_buffer == 2 * 65536 == sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        )
        listener.reconfigure(settings(transport="udp", receive_buffer="96K"))
        assert listener.socket is sock  # the datagrams queued in it stay
        assert (
            listener.stats.receive_buffer == 2 * 98304 == sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        )
        assert "receive buffer 192K" in listener.counters()
    finally:
        listener.stopService()
        reactor.advance(0)
