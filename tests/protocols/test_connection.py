"""One connection inside the limits: what it relays, how it half-closes and lingers, what it counts."""

import pytest
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol

from echod.protocols.limits import LimitedFactory
from tests.protocols.limited import SocketLikeTransport, closed_at, entries, limited, logged
from tests.transports import connect


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
    protocol, transport = connect(factory, transport=SocketLikeTransport)
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
    protocol, transport = connect(factory, transport=SocketLikeTransport)
    protocol.dataReceived(b"1 a")
    protocol.dataReceived(b"x" * (LINGER_BYTES - 1))
    assert not transport.disconnecting
    protocol.dataReceived(b"xx")
    assert transport.disconnecting


def test_a_bad_request_lingers_too_and_is_logged_as_one(tmp_path):
    from twisted.internet import error
    from twisted.python.failure import Failure

    factory = bytecount_factory(tmp_path)
    protocol, transport = connect(factory, transport=SocketLikeTransport)
    protocol.dataReceived(b"GET / HTTP/1.1\r\n")
    assert transport.write_closed and not transport.disconnecting
    protocol.readConnectionLost()
    protocol.connectionLost(Failure(error.ConnectionDone()))
    assert entries(factory, tmp_path)[-1][-1] == "closed=bad-request"


def test_a_client_that_half_closed_first_is_not_lingered_for(tmp_path):
    from twisted.internet import error
    from twisted.python.failure import Failure

    factory = bytecount_factory(tmp_path)
    protocol, transport = connect(factory, transport=SocketLikeTransport)
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
    protocol, transport = connect(factory, transport=SocketLikeTransport)
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


def test_out_counts_only_what_was_handed_over(tmp_path):
    from twisted.internet import error
    from twisted.python.failure import Failure

    factory = logged(tmp_path, idle_timeout=40)
    protocol, transport = connect(factory, transport=SocketLikeTransport)
    protocol.dataReceived(b"x" * 1000)
    transport.hold(600)  # what Twisted still held when it was cut off
    closed_at(factory, transport, 100)
    protocol.connectionLost(Failure(error.ConnectionAborted()))
    assert entries(factory, tmp_path)[-1][2:4] == ["in=1000", "out=400"]
    assert factory.stats.bytes_sent == 400
