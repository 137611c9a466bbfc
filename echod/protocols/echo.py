"""
The Echo Protocol, RFC 862, over TCP.
"""

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer


def apply_backpressure(protocol: Protocol) -> None:
    """
    Make C{protocol}'s transport stop reading while its write buffer is full.

    Registering the transport as its own streaming producer makes Twisted pause
    reading once the outgoing buffer passes its high-water mark and resume when
    it drains, so a peer that sends without reading fills its own socket
    buffers instead of this process's memory.
    """
    protocol.transport.registerProducer(protocol.transport, True)


def close_when_sent(protocol: Protocol) -> None:
    """
    Close C{protocol}'s connection once everything written to it is sent.

    Twisted never closes a transport whose registered streaming producer is
    paused (see C{FileDescriptor.loseConnection}); the transport we made our
    own producer in L{apply_backpressure} may be paused right now, by the
    write just made. So unregister it first.
    """
    if protocol.transport.producer is not None:
        protocol.transport.unregisterProducer()
    protocol.transport.loseConnection()


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """
    Send back every byte received, in order (RFC 862).

    Half-close aware: a client that shuts down its sending side (as
    C{printf x | nc -N} does) still gets every byte back before the server
    closes; without this, Twisted would drop the connection and whatever was
    still queued for it.
    """

    def connectionMade(self) -> None:
        apply_backpressure(self)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        close_when_sent(self)

    def writeConnectionLost(self) -> None:
        close_when_sent(self)


class EchoFactory(Factory):
    """Builds L{Echo} protocols."""

    protocol = Echo
    noisy = False
