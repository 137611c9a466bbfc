"""
L{Reconciler} carrying reloads out on listeners under a plain MultiService,
with a fake reactor: no daemon, no reactor running. The sockets are real (on
loopback), so that what is bound, kept or closed can be seen.
"""

from __future__ import annotations

import socket

from prometheus_client.registry import CollectorRegistry
from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger

from echod.accounting.alerts import Alerts
from echod.config import Settings, parse
from echod.daemon.listeners import ListenerService, make_listener
from echod.daemon.reconcile import Reconciler, listeners_of
from echod.daemon.reload import plan
from echod.metrics.endpoint import MetricsEndpoint
from echod.protocols.limits import ListenerContext
from echod.systemd.activation import APPLY_SOCKETS, InheritedSocket
from echod.systemd.unwanted import Unclaimed

SECTION = "[listener:{name}]\nprotocol = echo\ntransport = {transport}\naddress = 127.0.0.1\nport = {port}\n"


def section(name: str, port: int, transport: str = "tcp", extra: str = "") -> str:
    return SECTION.format(name=name, port=port, transport=transport) + extra


def taken(kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket bound to a free loopback port, which a listener then cannot have."""
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    if kind == socket.SOCK_STREAM:
        sock.listen()
    return sock


class FakePort:
    """What the fake reactor's adoptStreamPort gives: a port that says whether it was stopped."""

    def __init__(self, fd: int) -> None:
        with socket.socket(fileno=socket.dup(fd)) as sock:
            self.host = IPv4Address("TCP", *sock.getsockname())
        self.stopped = False

    def getHost(self) -> IPv4Address:
        return self.host

    def stopListening(self) -> None:
        self.stopped = True


class Reactor(MemoryReactorClock):
    """MemoryReactorClock, whose stream ports tell their address and whether they were stopped."""

    def adoptStreamPort(self, fileno, addressFamily, factory):
        super().adoptStreamPort(fileno, addressFamily, factory)
        port = FakePort(fileno)
        self.adoptedPorts[-1] = (port, factory)
        return port


class Daemon:
    """A MultiService of listeners and a metrics endpoint, as the daemon composes them, and its reconciler."""

    def __init__(self, text: str, inherited: list[InheritedSocket] = (), pinned: bool = False) -> None:
        self.reactor = Reactor()
        self.log: list[dict] = []
        self.alerts = Alerts(Logger(observer=self.log.append))
        self.parent = MultiService()
        self.settings = parse(text)
        for settings in self.settings.listeners:
            make_listener(settings, self.reactor, inherited=pinned).setServiceParent(self.parent)
        self.metrics = MetricsEndpoint(CollectorRegistry(), self.reactor, self.settings.metrics, self.alerts)
        self.metrics.setServiceParent(self.parent)
        self.unclaimed = Unclaimed(inherited, self.reactor, self.alerts)
        self.unclaimed.start(self.settings.path)
        self.parent.privilegedStartService()
        self.parent.startService()
        self.context = ListenerContext()
        self.reconciler = Reconciler(
            self.parent, self.reactor, self.alerts, self.unclaimed, self.metrics, self.context
        )

    def reload(self, text: str) -> Settings:
        new = parse(text)
        running = [listener.as_running() for listener in listeners_of(self.parent)]
        done = self.reconciler.carry_out(plan(running, new.listeners), new)
        self.reactor.advance(0)  # Twisted closes real ports (UDP, metrics) in a later turn
        assert done.called
        return new

    def named(self, name: str) -> ListenerService:
        return self.parent.getServiceNamed(name)

    def close(self) -> None:
        self.parent.stopService()
        self.reactor.advance(0)


def port_of(listener: ListenerService) -> int:
    return listener.socket.getsockname()[1]


def test_listeners_swapping_names_keep_their_sockets():
    daemon = Daemon(section("a", 0) + section("b", 0))
    a, b = daemon.named("a"), daemon.named("b")
    new = section("b", port_of(a)) + section("a", port_of(b))
    daemon.reload(new)
    assert (daemon.named("b"), daemon.named("a")) == (a, b)
    assert (a.name, b.name) == ("b", "a")
    assert a.factory.name == "b"
    assert not a.port.stopped and not b.port.stopped
    daemon.close()


def test_a_listener_moved_keeps_its_counters_and_its_factory_and_its_old_socket_closes():
    daemon = Daemon(section("x", 0))
    old = daemon.named("x")
    old.stats.refuse("max_connections")
    old_socket = old.socket
    daemon.reload(section("x", 0, extra="max_connections = 5\n").replace("127.0.0.1", "127.0.0.2"))
    new = daemon.named("x")
    assert new is not old and listeners_of(daemon.parent) == [new]
    assert new.socket.getsockname()[0] == "127.0.0.2"
    assert (new.stats, new.factory) == (old.stats, old.factory)
    assert new.factory.limits.max_connections == 5
    assert old.port is None and old_socket.fileno() == -1
    assert daemon.alerts.keys() == []
    daemon.close()


def test_a_removed_listener_with_connections_open_is_counted_until_the_last_ends():
    daemon = Daemon(section("x", 0) + section("y", 0))
    factory = daemon.named("x").factory
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    protocol.makeConnection(StringTransport())
    daemon.reload(section("y", port_of(daemon.named("y"))))
    assert [listener.name for listener in listeners_of(daemon.parent)] == ["y"]
    assert daemon.reconciler.retired == [factory]
    protocol.connectionLost(None)
    assert daemon.reconciler.retired == []
    daemon.close()


def test_a_move_to_a_port_taken_keeps_the_old_socket_and_raises_an_alert_until_the_move_succeeds():
    daemon = Daemon(section("x", 0))
    old = daemon.named("x")
    with taken() as squatter:
        port = squatter.getsockname()[1]
        daemon.reload(section("x", port))
    assert daemon.named("x") is old and not old.port.stopped
    assert daemon.alerts.summaries() == [f"x could not move to tcp 127.0.0.1:{port}, see the log"]
    said = daemon.log[-1]["message"]
    assert said.startswith(f"reload: x keeps its previous socket: cannot listen on tcp 127.0.0.1:{port}")
    daemon.reload(section("x", port))  # the squatter is gone
    assert port_of(daemon.named("x")) == port and old.port is None
    assert daemon.alerts.summaries() == []
    daemon.close()


def test_a_udp_listener_moved_stops_before_its_successor_listens_and_keeps_its_protocol():
    daemon = Daemon(section("u", 0, "udp"))
    old = daemon.named("u")
    protocol = old.protocol
    daemon.reload(section("u", 0, "udp").replace("127.0.0.1", "127.0.0.2"))
    new = daemon.named("u")
    assert new is not old and old.parent is None and old.port is None
    assert new.protocol is protocol and new.port.handler is protocol
    assert new.socket.getsockname()[0] == "127.0.0.2"
    daemon.close()


def test_a_listener_moved_onto_a_socket_systemd_passed_takes_it_over():
    systemd = taken()
    port = systemd.getsockname()[1]
    passed = InheritedSocket(systemd, None, "tcp", "127.0.0.1", port)
    daemon = Daemon(section("x", 0), inherited=[passed])
    (turn_away, _), _ = daemon.reactor.adoptedPorts
    assert [key for key in daemon.alerts.keys()] == [("unmatched", passed.describe())]
    daemon.reload(section("x", port))
    listener = daemon.named("x")
    assert listener.socket is systemd and listener.inherited
    assert turn_away.stopped
    assert daemon.alerts.keys() == [] and daemon.unclaimed.sockets == []
    daemon.close()


def test_a_listener_on_systemds_socket_moved_in_the_configuration_stays_and_says_what_to_run():
    daemon = Daemon(section("x", 0), pinned=True)
    listener = daemon.named("x")
    where = port_of(listener)
    daemon.reload(section("x", 0, extra="max_connections = 3\n").replace("127.0.0.1", "127.0.0.2"))
    assert daemon.named("x") is listener and not listener.port.stopped
    assert (listener.settings.address, port_of(listener)) == ("127.0.0.1", where)
    assert listener.factory.limits.max_connections == 3
    assert daemon.alerts.summaries() == [f"systemd's sockets differ from <string>: run '{APPLY_SOCKETS}'"]
    assert daemon.log[-1]["message"].endswith(f"to move it run: {APPLY_SOCKETS}")
    daemon.close()


def test_the_metrics_are_turned_on_moved_and_off():
    daemon = Daemon(section("x", 0))
    keep = section("x", port_of(daemon.named("x")))
    assert daemon.metrics.bound is None
    daemon.reload("[echod]\nmetrics = 127.0.0.1:0\n" + keep)
    first = daemon.metrics.bound
    assert first is not None and first[0] == "127.0.0.1"
    daemon.reload("[echod]\nmetrics = 127.0.0.2:0\n" + keep)
    assert daemon.metrics.bound[0] == "127.0.0.2"
    with socket.socket() as probe:  # the first port is free again: its socket closed
        probe.bind(first)
    daemon.reload(keep)
    assert daemon.metrics.bound is None and daemon.metrics.parent is daemon.parent
    daemon.close()


def test_once_stopping_nothing_more_is_bound():
    daemon = Daemon(section("x", 0))
    keep = section("x", port_of(daemon.named("x")))
    daemon.reconciler.stopping = True
    daemon.reload("[echod]\nmetrics = 127.0.0.1:0\n" + keep + section("y", 0))
    assert [listener.name for listener in listeners_of(daemon.parent)] == ["x"]
    assert daemon.metrics.bound is None
    daemon.close()


def test_listeners_added_or_moved_share_the_daemons_context():
    daemon = Daemon(section("a", 0))
    moved = section("a", 0).replace("127.0.0.1", "127.0.0.2")
    daemon.reload(moved + section("b", 0).replace("127.0.0.1", "127.0.0.3"))
    a, b = daemon.named("a"), daemon.named("b")
    assert a.socket.getsockname()[0] == "127.0.0.2" and a.context is daemon.context
    assert b.context is daemon.context and b.factory.context is daemon.context
    daemon.close()
