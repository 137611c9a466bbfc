import functools
import socket

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, formatEvent

from echod.accounting.alerts import Alerts
from echod.config import parse
from echod.systemd.activation import APPLY_SOCKETS, InheritedSocket
from echod.systemd.unwanted import TurnAwayFactory, Unclaimed
from tests import transports

WHERE = "tcp 127.0.0.1:7 (fd 3)"
FIX = "systemctl daemon-reload && systemctl restart echod.socket"


class TCPTransport(StringTransport):
    """A connection as far as L{TurnAway} may ask: its peer and an abort, not its socket."""

    def getHandle(self):
        raise AssertionError("the reset is abortConnection's: TurnAway leaves the socket alone")


def factory_and_log(clock: Clock) -> tuple[TurnAwayFactory, list[str]]:
    factory = TurnAwayFactory(WHERE, FIX, clock)
    events: list[dict] = []
    factory.log = Logger(observer=events.append)
    factory.doStart()  # as the port does when it starts listening
    return factory, events


def said(events: list[dict]) -> list[str]:
    return [formatEvent(event) for event in events]


#: A client connects to the unwanted socket.
connect = functools.partial(transports.connect, transport=TCPTransport)


def test_every_connection_is_aborted_and_nothing_more():
    # Twisted's abort closes with SO_LINGER (1, 0), which sends the reset; that
    # clients are reset is tests/integration/test_systemd.py's to prove.
    factory, _ = factory_and_log(Clock())
    assert connect(factory)[1].disconnecting


def test_the_first_reset_is_said_in_full_and_those_that_follow_are_summed_up_at_the_end_of_the_minute():
    # Before, they were said only when another client came after the minute:
    # the last of them were never logged.
    clock = Clock()
    factory, events = factory_and_log(clock)
    connect(factory, port=50000)
    assert len(events) == 1
    for port in range(50001, 50004):
        connect(factory, port=port)
    connect(factory, "2001:db8::1")
    clock.advance(59.9)
    assert len(events) == 1
    clock.advance(0.1)
    assert said(events)[1:] == [
        f"... and 4 more connections reset on {WHERE} from 2 sources, 3 from 10.0.0.1 in the last 60s; "
        f"to make systemd's sockets follow the configuration run: {FIX}"
    ]
    clock.advance(60)  # a quiet minute: the next is said in full again
    connect(factory, "2001:db8::1", 40000)
    assert said(events)[2].startswith("reset a connection from [2001:db8::1]:40000 to ")
    assert said(events)[0] == (
        f"reset a connection from 10.0.0.1:50000 to {WHERE}, a socket systemd passed that no listener "
        f"uses; to make systemd's sockets follow the configuration run: {FIX}"
    )


def test_the_resets_held_back_are_said_when_the_socket_stops_being_served():
    clock = Clock()
    factory, events = factory_and_log(clock)
    for _ in range(3):
        connect(factory)
    clock.advance(5)
    factory.doStop()  # what the port does when it stops listening
    assert said(events)[1].startswith(
        f"... and 2 more connections reset on {WHERE} from 10.0.0.1 in the last 5s"
    )
    assert not clock.getDelayedCalls()


class Port:
    """A port of the fake reactor's, which says whether it was stopped."""

    stopped = False

    def stopListening(self) -> None:
        self.stopped = True


class Reactor(MemoryReactorClock):
    def adoptStreamPort(self, fileno, addressFamily, factory):
        super().adoptStreamPort(fileno, addressFamily, factory)
        self.adoptedPorts[-1] = (Port(), factory)
        return self.adoptedPorts[-1][0]


def passed(kind: int) -> InheritedSocket:
    """A socket as systemd would pass it, on a free loopback port."""
    sock = socket.socket(socket.AF_INET, kind)
    sock.bind(("127.0.0.1", 0))
    transport = "tcp" if kind == socket.SOCK_STREAM else "udp"
    return InheritedSocket(sock, None, transport, "127.0.0.1", sock.getsockname()[1])


def listener(passed: InheritedSocket, name: str = "x") -> object:
    text = f"[listener:{name}]\nprotocol = echo\ntransport = {passed.transport}\naddress = 127.0.0.1\n"
    return parse(text + f"port = {passed.port}\n").listeners[0]


def test_each_unclaimed_socket_is_an_alert_and_the_clients_of_a_stream_one_are_reset():
    reactor, alerts = Reactor(), Alerts(Logger(observer=lambda event: None))
    stream, datagram = passed(socket.SOCK_STREAM), passed(socket.SOCK_DGRAM)
    unclaimed = Unclaimed([stream, datagram], reactor, alerts)
    unclaimed.start("/etc/echod.conf")
    assert alerts.keys() == [("unmatched", stream.describe()), ("unmatched", datagram.describe())]
    assert alerts.summaries() == [f"systemd's sockets differ from /etc/echod.conf: run '{APPLY_SOCKETS}'"]
    ((port, factory),) = reactor.adoptedPorts
    assert isinstance(factory, TurnAwayFactory) and factory.where == stream.describe()
    assert not stream.sock.getblocking()
    unclaimed.stop()
    assert port.stopped
    for each in (stream, datagram):
        each.sock.close()


def test_a_listener_claims_its_socket_which_is_then_no_alert_and_no_longer_resets():
    reactor, alerts = Reactor(), Alerts(Logger(observer=lambda event: None))
    stream, other = passed(socket.SOCK_STREAM), passed(socket.SOCK_STREAM)
    unclaimed = Unclaimed([stream, other], reactor, alerts)
    unclaimed.start("/etc/echod.conf")
    (turned_away, _), (still, _) = reactor.adoptedPorts
    assert unclaimed.claim(listener(stream)) is stream
    assert turned_away.stopped and not still.stopped
    assert alerts.keys() == [("unmatched", other.describe())]
    assert unclaimed.sockets == [other]
    elsewhere = passed(socket.SOCK_DGRAM)
    assert unclaimed.claim(listener(elsewhere)) is None
    for each in (stream, other, elsewhere):
        each.sock.close()
