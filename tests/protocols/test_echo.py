from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.testing import StringTransport

from echod.protocols.echo import Echo, EchoFactory


def connect() -> tuple[Echo, StringTransport]:
    protocol = EchoFactory().buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_echoes_every_byte_in_order():
    protocol, transport = connect()
    for chunk in (b"hello ", b"", b"\x00\xff" * 1000, b"world"):
        protocol.dataReceived(chunk)
    assert transport.value() == b"hello " + b"\x00\xff" * 1000 + b"world"
    assert not transport.disconnecting


def test_transport_is_its_own_streaming_producer_so_reading_pauses_when_writes_back_up():
    _protocol, transport = connect()
    assert transport.producer is transport
    assert transport.streaming is True


def test_half_close_finishes_the_echo_then_closes():
    protocol, transport = connect()
    assert IHalfCloseableProtocol.providedBy(protocol)
    protocol.dataReceived(b"last words")
    protocol.readConnectionLost()
    assert transport.value() == b"last words"
    assert transport.disconnecting


def test_peer_no_longer_reading_closes():
    protocol, transport = connect()
    protocol.writeConnectionLost()
    assert transport.disconnecting


def test_half_close_while_reading_is_paused_still_closes():
    """Twisted never closes a transport whose streaming producer is paused."""
    protocol, transport = connect()
    transport.pauseProducing()
    protocol.readConnectionLost()
    assert transport.producer is None
    assert transport.disconnecting
