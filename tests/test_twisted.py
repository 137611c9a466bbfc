"""
echod's steps into Twisted's insides (L{echod._twisted}), on a real reactor
(made, not installed) and real sockets where a socket is what they act on.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from collections.abc import Iterator

import pytest
from twisted.internet import error
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Protocol
from twisted.internet.testing import StringTransport

from echod._twisted import (
    ConnectedDatagramPort,
    EchodProcessCollector,
    ReceiveClock,
    connect_tcp,
    route_port_log,
    send_at_once,
    sends_at_once,
    twisteds_systemd_descriptors,
    unsent,
)
from echod.ancillary import SO_EE_ORIGIN_ICMP, queued_error
from echod.sockopts import IP_RECVERR, IP_TTL
from echod.units import MAX_DATAGRAM
from tests.reactors import turn_until


def received(sock: socket.socket) -> bytes:
    """What C{sock} holds now, without waiting."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


@pytest.fixture
def connection(reactor) -> Iterator[tuple[Protocol, socket.socket]]:
    """A Twisted TCP client connection, and the plain socket at its other end."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        factory = ClientFactory.forProtocol(Protocol)
        made: list[Protocol] = []
        factory.buildProtocol = lambda addr: made.append(Protocol()) or made[-1]
        reactor.connectTCP("127.0.0.1", server.getsockname()[1], factory)
        turn_until(reactor, lambda: bool(made) and made[0].transport is not None and made[0].connected)
        peer, _ = server.accept()
        with peer:
            yield made[0], peer


# -- the direct send ------------------------------------------------------------------------------


def test_only_twisteds_socket_transports_send_at_once(connection):
    protocol, _peer = connection
    assert sends_at_once(protocol.transport)
    assert not sends_at_once(StringTransport())


def test_with_nothing_queued_the_data_is_in_the_kernel_before_the_loop_turns(connection):
    protocol, peer = connection
    send_at_once(protocol.transport, b"x" * 1000, sends_at_once(protocol.transport))
    assert received(peer) == b"x" * 1000


def test_not_direct_it_waits_for_the_loop_as_twisteds_write_does(reactor, connection):
    protocol, peer = connection
    send_at_once(protocol.transport, b"y" * 1000, False)
    assert received(peer) == b""
    got = bytearray()
    turn_until(reactor, lambda: got.extend(received(peer)) or len(got) == 1000)
    assert got == b"y" * 1000


def test_behind_what_is_queued_it_queues_and_the_order_is_kept(reactor, connection):
    protocol, peer = connection
    protocol.transport.write(b"first ")
    send_at_once(protocol.transport, b"second", True)
    assert received(peer) == b""
    got = bytearray()
    turn_until(reactor, lambda: got.extend(received(peer)) or len(got) == 12)
    assert got == b"first second"


def test_what_the_kernel_does_not_take_goes_twisteds_way_in_order(reactor, connection):
    protocol, peer = connection
    data = bytes(range(256)) * (32 << 10)  # 8 MiB: more than the socket buffers hold
    send_at_once(protocol.transport, data, True)
    assert protocol.transport.dataBuffer or protocol.transport._tempDataLen  # the rest, queued
    got = bytearray()
    turn_until(reactor, lambda: got.extend(received(peer)) or len(got) >= len(data))
    assert got == data


def test_unsent_counts_what_twisted_holds_until_the_kernel_has_taken_it(reactor, connection):
    protocol, peer = connection
    protocol.transport.write(b"a" * 1000)
    protocol.transport.write(b"b" * 500)
    assert unsent(protocol.transport) == 1500  # queued for the next turn of the loop
    got = bytearray()
    turn_until(reactor, lambda: got.extend(received(peer)) or len(got) == 1500)
    assert unsent(protocol.transport) == 0


def test_unsent_is_nothing_on_a_transport_that_is_not_twisteds_socket():
    transport = StringTransport()
    transport.write(b"x" * 10)
    assert unsent(transport) == 0


# -- the log of a TCP port -------------------------------------------------------------------------


def test_a_tcp_ports_events_go_to_the_routed_observer_which_can_pass_them_on():
    from twisted.internet import tcp

    port = tcp.Port(0, None)
    seen: list[str] = []
    passed_on: list[dict] = []
    namespace = port._logger.namespace

    def observer_for(forward):
        passed_on.append(forward)
        return lambda event: seen.append(event["log_format"])

    assert route_port_log(port, observer_for)
    assert passed_on == [tcp.Port._logger.observer]  # where its events went before
    port._logger.info("EMFILE encountered; releasing reserved file descriptor.")
    assert seen == ["EMFILE encountered; releasing reserved file descriptor."]
    assert port._logger.namespace == namespace
    assert "_logger" not in vars(tcp.Port(0, None))  # other ports are left as they were


def test_an_object_that_is_not_a_tcp_port_is_left_alone():
    other = Protocol()
    assert not route_port_log(other, lambda forward: forward)
    assert not hasattr(other, "_logger")


# -- one largest datagram for all -----------------------------------------------------------------


def test_a_largest_datagram_is_received_whole(reactor):
    # 65527 bytes: the largest UDP payload (over IPv6, whose header does not count in it).
    class Keep(DatagramProtocol):
        def __init__(self) -> None:
            self.got: list[bytes] = []

        def datagramReceived(self, data: bytes, addr) -> None:
            self.got.append(data)

    protocol = Keep()
    port = ConnectedDatagramPort(0, protocol, "::1", MAX_DATAGRAM, reactor)
    port.startListening()
    where = port.getHost().port
    payload = bytes(range(256)) * 255 + bytes(247)
    assert len(payload) == 65527
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sender:
        sender.sendto(payload, ("::1", where))
    try:
        turn_until(reactor, lambda: bool(protocol.got))
    finally:
        port.stopListening()
    assert protocol.got == [payload]


# -- ICMP errors on a connected datagram port -----------------------------------------------------


class Heard(DatagramProtocol):
    """A datagram port's protocol that keeps what its port tells it."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.queued: list[tuple[bytes, object]] = []  # (the datagram's start, the error)
        self.errors: list[int] = []

    def datagramReceived(self, data: bytes, addr) -> None:
        self.got.append(data)

    def errorQueued(self, data: bytes, messages) -> None:
        self.queued.append((data, queued_error(messages)))

    def socketError(self, code: int) -> None:
        self.errors.append(code)


def closed_port() -> int:
    """A loopback UDP port nothing listens on (free a moment ago): datagrams to it are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def error_pending(sock: socket.socket) -> None:
    """Until the kernel has an error for C{sock} (POLLERR), or fail."""
    poller = select.poll()
    poller.register(sock, 0)  # POLLERR is always reported
    assert poller.poll(10_000), "no ICMP error within 10 s"


@pytest.fixture
def refused(reactor) -> Iterator[tuple[ConnectedDatagramPort, Heard, int, socket.socket]]:
    """A port on a socket with IP_RECVERR, connected to a closed loopback port; the socket stays open."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    protocol, port = Heard(), closed_port()
    with sock:
        udp = ConnectedDatagramPort.adopt(sock, protocol, reactor, MAX_DATAGRAM)
        udp.connect("127.0.0.1", port)
        try:
            yield udp, protocol, port, udp.getHandle()
        finally:
            udp.stopListening()


def test_an_icmp_error_is_read_off_the_error_queue_with_its_sender_and_the_port_reads_on(reactor, refused):
    udp, protocol, port, sock = refused
    udp.write(b"\0\0\0\0\0\0\0\x01 probe one")
    turn_until(reactor, lambda: bool(protocol.queued))
    ((quoted, icmp),) = protocol.queued
    assert quoted == b"\0\0\0\0\0\0\0\x01 probe one"  # loopback's ICMP quotes all of it
    assert (icmp.origin, icmp.type, icmp.code, icmp.offender) == (SO_EE_ORIGIN_ICMP, 3, 3, "127.0.0.1")
    assert protocol.errors == []  # told once, with its details
    # EPOLLERR alone did not close the port: once a server is there, its answer is read.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", port))
        server.sendto(b"an answer", sock.getsockname())
        turn_until(reactor, lambda: bool(protocol.got))
    assert protocol.got == [b"an answer"] and udp.connected


def test_an_error_pending_when_datagrams_wait_is_read_off_the_queue_by_the_read(reactor, refused):
    udp, protocol, _port, sock = refused
    udp.write(b"\0\0\0\0\0\0\0\x02")
    error_pending(sock)
    udp.doRead()  # recvfrom() raises the pending error, as it does with datagrams waiting behind it
    assert [icmp.code for _, icmp in protocol.queued] == [3] and protocol.errors == []


def test_a_send_the_pending_error_of_an_earlier_one_fails_is_made_again(reactor, refused):
    udp, protocol, port, sock = refused
    udp.write(b"\0\0\0\0\0\0\0\x03")
    error_pending(sock)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", port))
        server.settimeout(10)
        # The kernel fails this send with the earlier datagram's ECONNREFUSED, and sends nothing.
        udp.write(b"\0\0\0\0\0\0\0\x04")
        assert [quoted for quoted, _ in protocol.queued] == [b"\0\0\0\0\0\0\0\x03"]
        assert server.recv(100) == b"\0\0\0\0\0\0\0\x04"  # sent all the same, once


def test_a_send_that_fails_for_its_own_sake_raises(reactor):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    with sock:
        udp = ConnectedDatagramPort.adopt(sock, Heard(), reactor, MAX_DATAGRAM)
    try:
        udp.connect("127.0.0.1", 9)
        with pytest.raises(OSError) as failed:
            udp.write(bytes(70_000))  # larger than any datagram
        assert failed.value.errno == errno.EMSGSIZE
    finally:
        udp.stopListening()


def test_without_ip_recverr_an_icmp_error_is_its_errno_alone_and_the_port_reads_on(reactor):
    protocol = Heard()
    udp = ConnectedDatagramPort(0, protocol, "127.0.0.1", MAX_DATAGRAM, reactor)
    udp.startListening()
    try:
        udp.connect("127.0.0.1", closed_port())
        udp.write(b"x")
        turn_until(reactor, lambda: bool(protocol.errors))
        assert protocol.errors == [errno.ECONNREFUSED] and protocol.queued == []
        assert udp.connected
    finally:
        udp.stopListening()


# -- the probe's TCP connections -------------------------------------------------------------------


class Attempts(ClientFactory):
    """A client factory that keeps what became of its one attempt."""

    protocol = Protocol

    def __init__(self) -> None:
        self.attempted = 0
        self.made: list[Protocol] = []
        self.failed: list[object] = []

    def attempting(self) -> None:
        self.attempted += 1

    def buildProtocol(self, addr) -> Protocol:
        self.made.append(Protocol())
        return self.made[-1]

    def clientConnectionFailed(self, connector, reason) -> None:
        self.failed.append(reason)


def test_a_connection_is_prepared_before_it_connects_and_its_attempt_told(reactor):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        factory = Attempts()

        def prepare(sock: socket.socket) -> None:
            sock.setsockopt(socket.IPPROTO_IP, IP_TTL, 7)
            sock.bind(("127.0.0.1", 0))

        connect_tcp(reactor, "127.0.0.1", server.getsockname()[1], factory, 5, prepare)
        turn_until(reactor, lambda: bool(factory.made) and factory.made[0].connected)
        transport = factory.made[0].transport
        assert transport.getHandle().getsockopt(socket.IPPROTO_IP, IP_TTL) == 7
        assert factory.attempted == 1
        transport.loseConnection()
        turn_until(reactor, lambda: transport.disconnected)


def test_a_connection_its_preparation_refuses_fails_with_the_refusal(reactor):
    factory = Attempts()

    def prepare(sock: socket.socket) -> None:
        raise OSError(errno.ENODEV, "-I nosuch0: no network interface 'nosuch0' here")

    connect_tcp(reactor, "127.0.0.1", 9, factory, 5, prepare)
    turn_until(reactor, lambda: bool(factory.failed))
    (reason,) = factory.failed
    assert reason.check(error.ConnectBindError)
    assert reason.value.args[0] == "-I nosuch0: no network interface 'nosuch0' here"
    assert factory.attempted == 0


# -- the sockets systemd passed -------------------------------------------------------------------


class TakenByTwisted:
    """Twisted's ListenFDs as its parser keeps it, with fds 3 and 4 taken (named from 22.10 on)."""

    def __init__(self, named: bool) -> None:
        if named:
            self.inheritedNamedDescriptors = lambda: {"echo": 3, "metrics": 4}

    def inheritedDescriptors(self) -> list[int]:
        return [3, 4]


@pytest.mark.parametrize(("named", "names"), [(True, ["echo", "metrics"]), (False, [None, None])])
def test_the_sockets_twisteds_parser_took_are_found_with_their_names(monkeypatch, named, names):
    from twisted.internet.endpoints import _SystemdParser

    monkeypatch.setattr(_SystemdParser, "_sddaemon", TakenByTwisted(named))
    assert twisteds_systemd_descriptors() == dict(zip([3, 4], names, strict=True))


# -- the time of answers --------------------------------------------------------------------------


class FakePoller:
    def __init__(self) -> None:
        self.registered: list[int] = []

    def poll(self, timeout: float, most: int) -> list[tuple[int, int]]:
        return [(3, 1)]

    def register(self, fd: int, events: int) -> None:
        self.registered.append(fd)


class Ticking:
    """A clock that moves a second each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1
        return self.now


def test_answers_are_stamped_when_the_reactors_wait_returns():
    reactor = type("Reactor", (), {})()
    poller = reactor._poller = FakePoller()
    clock = ReceiveClock(reactor, Ticking())
    assert clock.now() == 1.0  # the time it was made, until a wait returns
    assert reactor._poller.poll(0.5, 10) == [(3, 1)]
    assert clock.now() == clock.now() == 2.0  # reading it does not move it
    reactor._poller.register(7, 1)  # the rest is the poller's own
    assert poller.registered == [7]


def test_without_a_poller_answers_are_stamped_when_handled():
    timer = Ticking()
    clock = ReceiveClock(object(), timer)
    assert (clock.now(), clock.now()) == (2.0, 3.0)


# -- prometheus_client -----------------------------------------------------------------------------


def test_process_metrics_without_proc_stat_as_under_the_unit_procsubset(tmp_path):
    # ProcSubset=pid leaves /proc/self but hides /proc/stat, where the library reads the boot time.
    (tmp_path / "self").symlink_to(f"/proc/{os.getpid()}")
    library = EchodProcessCollector.__mro__[1](proc=str(tmp_path), registry=None)
    assert list(library.collect()) == []  # the library alone exports nothing
    ours = {
        m.name: m.samples[0].value for m in EchodProcessCollector(proc=str(tmp_path), registry=None).collect()
    }
    with open("/proc/stat") as f:
        boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
    with open(f"/proc/{os.getpid()}/stat") as f:
        started = boot + float(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    assert abs(ours["process_start_time_seconds"] - started) < 2
    assert ours["process_open_fds"] >= 3
