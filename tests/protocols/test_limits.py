import pytest
from twisted.logger import LogLevel, capturedLogs

from tests.protocols.limited import SocketLikeTransport, change, closed_at, entries, limited, logged
from tests.transports import connect


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


def test_a_peer_taking_its_output_is_not_idle_though_it_sends_nothing():
    factory = limited(idle_timeout=40)
    protocol, transport = connect(factory, transport=SocketLikeTransport)
    protocol.dataReceived(b"x" * 100_000)
    transport.hold(100_000)  # backpressure: all of it still queued, and nothing more read
    for unsent in range(90_000, 0, -10_000):  # the peer reads a little every 30 s
        factory.clock.advance(30)
        transport.hold(unsent)
    assert not transport.disconnected
    # From the last progress (at 270 s), nothing moves.
    assert 270 + 40 <= closed_at(factory, transport, 500) <= 270 + 50


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


def test_the_limits_are_a_listeners_settings_of_the_same_names():
    from echod.config import parse
    from echod.protocols.limits import ConnectionLimits

    settings = parse(
        "[listener:l]\nprotocol = echo\nport = 7\nmax_connections = 9\nmax_connections_per_peer = 3\n"
        "idle_timeout = 90s\npeer_prefix_ipv4 = 24\npeer_prefix_ipv6 = 48\nproxy_protocol = yes\n"
        "trusted_proxies = 198.18.0.0/15\n"
    ).listeners[0]
    limits = ConnectionLimits.of(settings)
    assert (limits.max_connections, limits.max_connections_per_peer, limits.idle_timeout) == (9, 3, 90)
    assert (limits.peer_prefix_ipv4, limits.peer_prefix_ipv6) == (24, 48)
    assert limits.proxy_protocol and [str(n) for n in limits.trusted_proxies] == ["198.18.0.0/15"]


def test_the_shared_context_is_read_at_each_use_so_a_change_there_reaches_open_connections(tmp_path):
    from echod.accounting.accesslog import AccessLog

    factory = limited()
    protocol, _ = connect(factory, "10.0.0.1", 1)
    factory.context.access_log = AccessLog(str(tmp_path / "access.log"), factory.clock)
    factory.context.log_connections = True
    with capturedLogs() as events:
        protocol.connectionLost(None)
    assert [e["log_format"].format(**e) for e in events] == ["l: closed connection from 10.0.0.1:1"]
    assert entries(factory, tmp_path) == [
        ["l", "10.0.0.1:1", "in=0", "out=0", "duration=0.000s", "closed=client"]
    ]
