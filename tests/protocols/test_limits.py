import dataclasses

import pytest
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs

from echod.accounting.stats import ListenerStats
from echod.protocols.echo import EchoFactory
from echod.protocols.limits import ConnectionLimits, LimitedFactory


def limited(inner: Factory | None = None, **limits) -> LimitedFactory:
    options = {"max_connections": 100, "max_connections_per_peer": 100, "idle_timeout": 0}
    options.update(limits)
    return LimitedFactory(
        inner or EchoFactory(),
        name="l",
        limits=ConnectionLimits(**options),
        stats=ListenerStats(),
        clock=Clock(),
    )


def change(factory: LimitedFactory, **limits) -> None:
    """Replace C{factory}'s limits with a copy with C{limits} changed, as a reload does."""
    factory.limits = dataclasses.replace(factory.limits, **limits)


def connect(factory: LimitedFactory, host: str = "10.0.0.1", port: int = 1000):
    address = IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(address)
    if protocol is None:
        return None, None
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def test_wrapped_protocol_sees_the_data_and_writes_through():
    factory = limited()
    protocol, transport = connect(factory)
    protocol.dataReceived(b"ping")
    assert transport.value() == b"ping"
    assert factory.totals() == (4, 4)
    assert (factory.stats.active, factory.stats.accepted) == (1, 1)


def test_backpressure_reaches_the_real_transport():
    factory = limited()
    protocol, transport = connect(factory)
    assert transport.producer is protocol
    assert transport.streaming
    protocol.pauseProducing()
    assert transport.producerState == "paused"
    protocol.resumeProducing()
    assert transport.producerState == "producing"


def test_total_cap_refuses_the_extra_connection_and_warns_once():
    factory = limited(max_connections=2)
    first, _ = connect(factory, "10.0.0.1")
    connect(factory, "10.0.0.2")
    with capturedLogs() as events:
        assert connect(factory, "10.0.0.3") == (None, None)
        assert connect(factory, "10.0.0.4") == (None, None)
    assert factory.stats.refused == 2
    warnings = [e for e in events if e["log_level"] == LogLevel.warn]
    assert [e["log_format"].format(**e) for e in warnings] == [
        "l: max_connections (2) reached, refusing new connections from anyone"
    ]
    first.connectionLost(None)
    assert connect(factory, "10.0.0.3")[0] is not None


def test_per_peer_cap_refuses_only_that_peer():
    factory = limited(max_connections_per_peer=2)
    connect(factory, "10.0.0.1", 1)
    connect(factory, "10.0.0.1", 2)
    with capturedLogs() as events:
        assert connect(factory, "10.0.0.1", 3) == (None, None)
    assert connect(factory, "10.0.0.2", 1)[0] is not None
    assert factory.stats.refused == 1
    assert events[0]["log_format"].format(**events[0]) == (
        "l: max_connections_per_peer (2) reached, refusing new connections from 10.0.0.1"
    )


def test_ipv4_mapped_ipv6_peer_counts_as_the_ipv4_peer():
    factory = limited(max_connections_per_peer=1)
    connect(factory, "192.0.2.7")
    assert connect(factory, "::ffff:192.0.2.7") == (None, None)


def test_closing_frees_the_peers_slot():
    factory = limited(max_connections_per_peer=1)
    protocol, _ = connect(factory, "10.0.0.1")
    protocol.connectionLost(None)
    assert connect(factory, "10.0.0.1")[0] is not None
    assert factory.stats.active == 1


def closed_at(factory, transport, until: int) -> int | None:
    """Advance the clock a second at a time; when was the connection aborted?"""
    for second in range(int(factory.clock.seconds()) + 1, until + 1):
        factory.clock.advance(1)
        if transport.disconnected:  # aborted, not politely closed
            return second
    return None


def test_idle_connection_is_aborted_between_the_timeout_and_a_quarter_more():
    factory = limited(idle_timeout=40)
    protocol, transport = connect(factory)
    factory.clock.advance(30)
    protocol.dataReceived(b"x")  # the last input, at 30 s
    assert 30 + 40 <= closed_at(factory, transport, 200) <= 30 + 50
    assert factory.stats.timed_out == 1


def test_input_keeps_a_connection_open():
    factory = limited(idle_timeout=40)
    protocol, transport = connect(factory)
    for _ in range(20):
        factory.clock.advance(30)
        protocol.dataReceived(b"x")
    assert not transport.disconnected


@pytest.mark.parametrize("before", [400, 0], ids=["a longer one", "none"])
def test_a_new_idle_timeout_applies_to_open_connections_from_the_next_sweep(before):
    factory = limited(idle_timeout=before)
    _, transport = connect(factory)
    change(factory, idle_timeout=4)
    assert closed_at(factory, transport, 100) <= 5


def test_the_sweep_stops_once_it_finds_no_connection():
    factory = limited(idle_timeout=40)
    protocol, _ = connect(factory)
    assert factory.clock.getDelayedCalls()
    protocol.connectionLost(None)
    factory.clock.advance(10)
    assert not factory.clock.getDelayedCalls()


def test_the_sweep_goes_on_when_connections_come_and_go_between_sweeps():
    factory = limited(idle_timeout=40)
    first, _ = connect(factory)
    first.connectionLost(None)
    _, transport = connect(factory)
    assert 40 <= closed_at(factory, transport, 200) <= 50


def test_the_sweep_starts_again_with_the_next_connection_after_a_sweep_failed():
    factory = limited(idle_timeout=40)
    first, first_transport = connect(factory)
    timeout, failures = first.timeoutConnection, []

    def fail_once() -> None:
        if not failures:
            failures.append("raised")
            raise RuntimeError("a bug in a sweep ends its LoopingCall")
        timeout()

    first.timeoutConnection = fail_once
    factory.clock.advance(40)
    assert failures and not first_transport.disconnected
    _, transport = connect(factory)
    assert 40 + 40 <= closed_at(factory, transport, 200) <= 40 + 50
    assert first_transport.disconnected


def test_zero_idle_timeout_never_times_out():
    factory = limited(idle_timeout=0)
    _, transport = connect(factory)
    factory.clock.advance(10**9)
    assert not transport.disconnecting
    assert not factory.clock.getDelayedCalls()


def test_half_close_reaches_the_wrapped_protocol():
    factory = limited()
    protocol, transport = connect(factory)
    assert IHalfCloseableProtocol.providedBy(protocol)
    protocol.dataReceived(b"bye")
    protocol.readConnectionLost()
    assert transport.value() == b"bye"
    assert transport.disconnecting


def test_half_close_closes_a_protocol_that_does_not_handle_it():
    factory = limited(Factory.forProtocol(Protocol))
    protocol, transport = connect(factory)
    protocol.readConnectionLost()
    assert transport.disconnecting


def test_when_empty_fires_once_the_last_connection_closes():
    factory = limited()
    assert factory.when_empty().called
    a, _ = connect(factory, "10.0.0.1")
    b, _ = connect(factory, "10.0.0.2")
    waiting = factory.when_empty()
    a.connectionLost(None)
    assert not waiting.called
    b.connectionLost(None)
    assert waiting.called


def test_abort_all_aborts_every_open_connection():
    factory = limited()
    transports = [connect(factory, f"10.0.0.{i}")[1] for i in range(3)]
    assert factory.abort_all() == 3
    assert all(t.disconnected for t in transports)


def logged(tmp_path, **limits):
    from echod.accounting.accesslog import AccessLog

    factory = limited(**limits)
    factory.context.access_log = AccessLog(str(tmp_path / "access.log"), factory.clock)
    return factory


def entries(factory, tmp_path) -> list[list[str]]:
    factory.access_log.flush()
    return [line.split()[1:] for line in (tmp_path / "access.log").read_text().splitlines()]


def test_access_log_has_a_line_per_connection_with_its_cause(tmp_path):
    from twisted.internet import error
    from twisted.python.failure import Failure

    from echod.protocols.bytecount import BytecountFactory

    factory = logged(tmp_path, idle_timeout=10, max_connections_per_peer=4)
    client, _ = connect(factory, "10.0.0.1", 1)
    client.dataReceived(b"abc")
    factory.clock.advance(2)
    client.readConnectionLost()
    client.connectionLost(Failure(error.ConnectionDone()))
    idle, _ = connect(factory, "10.0.0.1", 2)
    factory.clock.advance(10)
    idle.connectionLost(Failure(error.ConnectionAborted()))
    reset, _ = connect(factory, "10.0.0.1", 3)
    reset.connectionLost(Failure(error.ConnectionLost()))
    for port in range(4, 9):
        connect(factory, "10.0.0.1", port)
    factory.abort_all()
    for p in list(factory.protocols):
        p.connectionLost(Failure(error.ConnectionAborted()))
    assert entries(factory, tmp_path)[:4] == [
        ["l", "10.0.0.1:1", "in=3", "out=3", "duration=2.000s", "closed=client"],
        ["l", "10.0.0.1:2", "in=0", "out=0", "duration=10.000s", "closed=idle-timeout"],
        ["l", "10.0.0.1:3", "in=0", "out=0", "duration=0.000s", "closed=reset"],
        ["l", "10.0.0.1:8", "in=0", "out=0", "duration=0.000s", "closed=refused-max_connections_per_peer"],
    ]
    assert [e[-1] for e in entries(factory, tmp_path)[4:]] == ["closed=shutdown"] * 4

    (tmp_path / "b").mkdir()
    bad = logged(tmp_path / "b", max_connections=5)
    bad.wrappedFactory = BytecountFactory("b", 20, 100, bad.stats, clock=bad.clock)
    protocol, _ = connect(bad, "10.0.0.2", 1)
    protocol.dataReceived(b"x")
    protocol.connectionLost(Failure(error.ConnectionDone()))
    assert entries(bad, tmp_path / "b")[-1][-1] == "closed=bad-request"


def test_a_client_that_half_closed_and_then_timed_out_is_logged_as_timed_out(tmp_path):
    from twisted.internet import error
    from twisted.python.failure import Failure

    factory = logged(tmp_path, idle_timeout=10)
    protocol, transport = connect(factory)
    protocol.dataReceived(b"echo still queued")
    protocol.readConnectionLost()  # the client is done sending; its echo cannot be delivered
    closed_at(factory, transport, 100)
    protocol.connectionLost(Failure(error.ConnectionAborted()))
    assert entries(factory, tmp_path)[-1][-1] == "closed=idle-timeout"


def test_a_client_that_half_closed_and_then_reset_is_logged_as_reset(tmp_path):
    from twisted.internet import error
    from twisted.python.failure import Failure

    factory = logged(tmp_path)
    protocol, _ = connect(factory)
    protocol.readConnectionLost()
    protocol.connectionLost(Failure(error.ConnectionLost()))
    assert entries(factory, tmp_path)[-1][-1] == "closed=reset"


class SocketLikeTransport(StringTransport):
    """
    Just enough of Twisted's TCP transport for what limits does with it: a
    write buffer it can be told holds C{unsent} bytes, and half-close.
    """

    offset = 0
    _tempDataLen = 0
    write_closed = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dataBuffer = b""

    def writeSomeData(self, data: bytes) -> int:
        self.io.write(data)
        return len(data)

    def hold(self, unsent: int) -> None:
        """Pretend that C{unsent} bytes written are still in Twisted's buffer."""
        self.dataBuffer, self.offset = b"x" * unsent, 0

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def connect_socket_like(factory: LimitedFactory, host: str = "10.0.0.1", port: int = 1000):
    address = IPv4Address("TCP", host, port)
    protocol = factory.buildProtocol(address)
    transport = SocketLikeTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def bytecount_factory(tmp_path, **limits) -> LimitedFactory:
    from echod.protocols.bytecount import BytecountFactory

    factory = logged(tmp_path, **limits)
    factory.wrappedFactory = BytecountFactory("l", 20, 100, factory.stats, clock=factory.clock)
    return factory


def test_bytecount_lingers_after_its_reply_until_the_client_ends(tmp_path):
    """Closing with the client's extra bytes unread would reset the connection and lose the reply."""
    from twisted.internet import error
    from twisted.python.failure import Failure

    factory = bytecount_factory(tmp_path)
    protocol, transport = connect_socket_like(factory)
    protocol.dataReceived(b"3 abcEXTRA")
    assert transport.value() == b"abc"
    assert transport.write_closed and not transport.disconnecting  # FIN after the reply, still reading
    assert transport.producer is None and transport.producerState == "producing"
    protocol.dataReceived(b"more extra")  # read and dropped
    assert transport.value() == b"abc"
    protocol.writeConnectionLost()  # Twisted: the FIN is sent; still waiting for the client's
    assert not transport.disconnecting
    protocol.readConnectionLost()
    assert transport.disconnecting
    protocol.connectionLost(Failure(error.ConnectionDone()))
    assert entries(factory, tmp_path)[-1][2:4] + entries(factory, tmp_path)[-1][-1:] == [
        "in=20",
        "out=3",
        "closed=server",
    ]


def test_lingering_stops_after_linger_bytes(tmp_path):
    from echod.protocols.connection import LINGER_BYTES

    factory = bytecount_factory(tmp_path)
    protocol, transport = connect_socket_like(factory)
    protocol.dataReceived(b"1 a")
    protocol.dataReceived(b"x" * (LINGER_BYTES - 1))
    assert not transport.disconnecting
    protocol.dataReceived(b"xx")
    assert transport.disconnecting


def test_a_bad_request_lingers_too_and_is_logged_as_one(tmp_path):
    from twisted.internet import error
    from twisted.python.failure import Failure

    factory = bytecount_factory(tmp_path)
    protocol, transport = connect_socket_like(factory)
    protocol.dataReceived(b"GET / HTTP/1.1\r\n")
    assert transport.write_closed and not transport.disconnecting
    protocol.readConnectionLost()
    protocol.connectionLost(Failure(error.ConnectionDone()))
    assert entries(factory, tmp_path)[-1][-1] == "closed=bad-request"


def test_a_client_that_half_closed_first_is_not_lingered_for(tmp_path):
    from twisted.internet import error
    from twisted.python.failure import Failure

    factory = bytecount_factory(tmp_path)
    protocol, transport = connect_socket_like(factory)
    protocol.dataReceived(b"5 ab")
    protocol.readConnectionLost()  # a request cut short: it has nothing more to send
    assert transport.disconnecting and not transport.write_closed
    protocol.connectionLost(Failure(error.ConnectionDone()))
    assert entries(factory, tmp_path)[-1][-1] == "closed=bad-request"


@pytest.mark.parametrize(("outstanding", "cause"), [(0, "closed=server"), (100, "closed=idle-timeout")])
def test_lingering_ends_at_the_idle_timeout(tmp_path, outstanding, cause):
    """
    With its reply all taken, the client that does not close is simply
    closed; with some of it still queued, it was cut off for idleness.
    """
    from twisted.internet import error
    from twisted.python.failure import Failure

    factory = bytecount_factory(tmp_path, idle_timeout=40)
    protocol, transport = connect_socket_like(factory)
    protocol.dataReceived(b"2 ok")
    transport.hold(outstanding)
    for _ in range(60):
        factory.clock.advance(1)
        if transport.disconnecting or transport.disconnected:
            break
    assert 40 <= factory.clock.seconds() <= 50
    assert transport.disconnected == bool(outstanding)  # aborted, or closed
    protocol.connectionLost(Failure(error.ConnectionAborted() if outstanding else error.ConnectionDone()))
    assert entries(factory, tmp_path)[-1][-1] == cause
    assert factory.stats.timed_out == (1 if outstanding else 0)


def test_a_peer_taking_its_output_is_not_idle_though_it_sends_nothing():
    factory = limited(idle_timeout=40)
    protocol, transport = connect_socket_like(factory)
    protocol.dataReceived(b"x" * 100_000)
    transport.hold(100_000)  # backpressure: all of it still queued, and nothing more read
    for unsent in range(90_000, 0, -10_000):  # the peer reads a little every 30 s
        factory.clock.advance(30)
        transport.hold(unsent)
    assert not transport.disconnected
    # From the last progress (at 270 s), nothing moves.
    assert 270 + 40 <= closed_at(factory, transport, 500) <= 270 + 50


def test_out_counts_only_what_was_handed_over(tmp_path):
    from twisted.internet import error
    from twisted.python.failure import Failure

    factory = logged(tmp_path, idle_timeout=40)
    protocol, transport = connect_socket_like(factory)
    protocol.dataReceived(b"x" * 1000)
    transport.hold(600)  # what Twisted still held when it was cut off
    closed_at(factory, transport, 100)
    protocol.connectionLost(Failure(error.ConnectionAborted()))
    assert entries(factory, tmp_path)[-1][2:4] == ["in=1000", "out=400"]
    assert factory.stats.bytes_sent == 400


@pytest.mark.parametrize("limit", ["max_connections", "max_connections_per_peer"])
def test_churn_at_a_cap_warns_once_an_interval_with_a_count(limit):
    """Closing one connection and trying two more, over and over, used to warn every time."""
    factory = limited(**{limit: 1})
    with capturedLogs() as events:
        for _ in range(1000):
            held, _ = connect(factory, "10.0.0.1", 1)
            assert connect(factory, "10.0.0.1", 2) == (None, None)
            held.connectionLost(None)
        factory.clock.advance(10)
    warnings = [e["log_format"].format(**e) for e in events if e["log_level"] == LogLevel.warn]
    assert warnings[1:] == [
        f"l: ... and 999 more connections refused over {limit} from 10.0.0.1 in the last 10s"
    ]
    assert len([e for e in events if e["log_level"] == LogLevel.info]) <= 1  # "below max_connections again"


def test_addresses_of_one_ipv6_slash_64_share_the_per_peer_cap():
    factory = limited(max_connections_per_peer=2)
    assert connect(factory, "2001:db8:1:2::1")[0] is not None
    assert connect(factory, "2001:db8:1:2::2")[0] is not None
    with capturedLogs() as events:
        assert connect(factory, "2001:db8:1:2:dead:beef:0:3") == (None, None)
        assert connect(factory, "2001:db8:1:2:ffff:ffff:ffff:ffff") == (None, None)
    assert connect(factory, "2001:db8:1:3::1")[0] is not None  # the next /64 is another peer
    assert events[0]["log_format"].format(**events[0]) == (
        "l: max_connections_per_peer (2) reached, refusing new connections from 2001:db8:1:2::/64"
    )


def test_peer_prefixes_apply_to_the_connections_already_open():
    factory = limited(max_connections_per_peer=2)
    first, _ = connect(factory, "192.0.2.1")
    connect(factory, "192.0.2.2")
    change(factory, peer_prefix_ipv4=24, peer_prefix_ipv6=64)
    assert connect(factory, "192.0.2.3") == (None, None)  # two already open from 192.0.2.0/24
    first.connectionLost(None)
    assert connect(factory, "192.0.2.3")[0] is not None
    change(factory, peer_prefix_ipv4=32, peer_prefix_ipv6=64)
    assert connect(factory, "192.0.2.3")[0] is not None  # 192.0.2.3 alone has one open


def aborted_while_setting(factory, transport, values) -> float | None:
    """Set idle_timeout to each of C{values}, half a second apart; when was the connection aborted?"""
    for value in values:
        factory.clock.advance(0.5)
        change(factory, idle_timeout=value)
        if transport.disconnected:
            return factory.clock.seconds()
    return None


def test_setting_the_same_idle_timeout_again_does_not_postpone_the_sweep():
    factory = limited(idle_timeout=4)
    _, transport = connect(factory)
    # e.g. a reload every half second, each changing nothing (the sweep runs every second)
    assert 4 <= aborted_while_setting(factory, transport, [4] * 40) <= 5


def test_changing_the_idle_timeout_often_does_not_postpone_the_sweep_either():
    factory = limited(idle_timeout=4)
    _, transport = connect(factory)
    assert 4 <= aborted_while_setting(factory, transport, [4.001, 4] * 20) <= 5


def test_switching_the_served_protocol_keeps_the_counts_and_open_connections():
    from echod.protocols.bytecount import BytecountFactory

    factory = limited(max_connections_per_peer=2, idle_timeout=10)
    first, first_transport = connect(factory, "10.0.0.1", 1)
    connect(factory, "10.0.0.1", 2)
    factory.doStart()
    factory.serve(BytecountFactory("l", 20, 100, factory.stats))
    assert connect(factory, "10.0.0.1", 3) == (None, None)  # still at its cap
    other, other_transport = connect(factory, "10.0.0.2", 1)
    other.dataReceived(b"2 hiEXTRA")
    assert other_transport.value() == b"hi"
    first.dataReceived(b"2 echo")
    assert first_transport.value() == b"2 echo"  # the open one keeps its protocol
    assert factory.wrappedFactory.numPorts == 1
