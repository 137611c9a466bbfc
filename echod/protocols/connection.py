"""
One connection inside a listener's limits (see L{echod.protocols.limits}):
it counts its bytes, reads the PROXY header first where one is due, sends
at once when nothing is queued, and lingers when it ends the conversation.

One wrapper does all of it, in the manner of L{twisted.protocols.policies}:
the protocols inside know nothing of limits, and stacking a wrapper per
concern would put one more Python call per chunk on the data path for each.
"""

from __future__ import annotations

import fcntl
import struct
import termios

from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from echod._twisted import send_at_once, sends_at_once, unsent
from echod.addresses import format_peer
from echod.protocols.proxied import PROXY_HEADER_TIMEOUT
from echod.protocols.proxy import ProxyHeaderError, ProxyHeaderParser

#: How much a connection reads at once, and how much of its output may queue
#: before it stops reading (Twisted uses one figure for both; its default is
#: 64 KiB). Twice that takes a third off the cost of 100 KiB echoes, and
#: still bounds what a client that never reads can make the server hold.
BUFFER_SIZE = 128 * 1024

#: When the server ends a conversation the client may still be sending on (a
#: bytecount echo, a bad request), it shuts down its own sending side (a FIN
#: after the queued echo) and then reads and discards what still comes, until
#: the client's end of file, before it closes. Closing with input unread
#: would make the kernel answer with a reset and throw away the echo not yet
#: delivered. At most this many bytes are discarded: some megabytes are
#: milliseconds of work, and well beyond what a client that reads its reply
#: sends on after it, so a client still sending past that is using the
#: server as a sink, and is closed. The time it may take is the idle
#: timeout's to bound: while the client reads its echo or sends, it is
#: busy, as any other connection; once neither moves, it is idle.
LINGER_BYTES = 4 * 1024 * 1024

#: The ioctl that tells how much of a socket's send queue the peer has not
#: acknowledged yet (SIOCOUTQ, which Linux defines as TIOCOUTQ).
SIOCOUTQ = termios.TIOCOUTQ


def unacknowledged(transport) -> int:
    """Bytes in the send queue of C{transport}'s socket the peer has not acknowledged (0 if unknown)."""
    try:
        return struct.unpack("i", fcntl.ioctl(transport.fileno(), SIOCOUTQ, b"\0\0\0\0"))[0]
    except (AttributeError, OSError):  # no socket, or no longer one
        return 0


@implementer(IHalfCloseableProtocol)
class LimitedProtocol(ProtocolWrapper):
    """
    Relays one connection to the wrapped protocol, counting its bytes and
    closing it when it stays idle for the factory's C{idle_timeout}.

    Half-closes are passed through, which Twisted's C{ProtocolWrapper} does
    not do: without that, a client's EOF would drop the echo still queued.
    """

    #: The L{echod.protocols.limits.LimitedFactory} that built it (not
    #: annotated as one: that module imports this one).
    factory: WrappingFactory
    #: The peer as the per-peer cap counts it (see L{echod.addresses.peer_key});
    #: C{None} until the connection is admitted: on a C{proxy_protocol}
    #: listener, until its PROXY header has named the client and the cap has
    #: let it in.
    peer_key: str | None = None
    #: From a PROXY header: the client, and the proxy the connection came
    #: through (the socket's own peer). C{None} without a header, or when it
    #: named no client (a balancer's own health check).
    client: IAddress | None = None
    via: IAddress | None = None
    #: While a PROXY header is awaited, its parser.
    _proxy_parser: ProxyHeaderParser | None = None
    received = 0
    sent = 0
    started = 0.0
    #: For the idle sweep: the input count it saw last, how much output the
    #: peer had taken (acknowledged) when it last looked, and since when
    #: neither has moved.
    seen = 0
    taken = 0
    quiet_since = 0.0
    #: Why the connection ended, for the access log: an abort's cause, or
    #: settled when it closes.
    cause: str | None = None
    #: Who began to end it, the cause of a clean close: "client" (its end of
    #: file), "server" or "bad-request".
    ending: str | None = None
    #: Whether the client has shut down its sending side.
    eof = False
    #: While lingering (see L{LINGER_BYTES}), the input count at which to stop; -1 before.
    linger_until = -1

    def makeConnection(self, transport) -> None:
        # ProtocolWrapper.makeConnection would also copy every interface the
        # transport provides onto this wrapper, a zope call per connection
        # that nothing here needs: the transport's methods are reached
        # through __getattr__ all the same.
        factory = self.factory
        self.started = self.quiet_since = factory.clock.seconds()
        # Only Twisted's own socket transports can send at once (see write), and
        # linger (see loseConnection).
        self._direct = sends_at_once(transport)
        transport.bufferSize = BUFFER_SIZE
        Protocol.makeConnection(self, transport)
        factory.registerProtocol(self)
        if self.peer_key is not None:
            self.wrappedProtocol.makeConnection(self)
            return
        # A PROXY header first. Until it is complete, input goes to its parser;
        # an instance attribute, deleted then, so that afterwards no chunk of
        # any connection pays for the header's existence.
        self._proxy_parser = ProxyHeaderParser()
        factory.proxy.await_header(self, self.started)
        self.dataReceived = self._header_received

    def getPeer(self) -> IAddress:
        """The client: named by the PROXY header if there was one, else the socket's peer."""
        return self.client or self.transport.getPeer()

    def _header_received(self, data: bytes) -> None:
        try:
            header = self._proxy_parser.feed(data)
        except ProxyHeaderError as e:
            self.header_failed(str(e))
            return
        if header is None:
            return
        del self.dataReceived
        self._proxy_parser = None
        factory = self.factory
        del factory.proxy.awaiting[self]
        if not header.local:
            host, port = header.source
            self.via = self.transport.getPeer()
            self.client = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
        if factory.admit(self):
            self.wrappedProtocol.makeConnection(self)
            if header.rest:
                self.dataReceived(header.rest)

    def header_too_slow(self) -> None:
        """Close the connection: its PROXY header did not come in time."""
        pending = self._proxy_parser.pending
        self.header_failed(
            f"no complete PROXY header within {PROXY_HEADER_TIMEOUT:g}s ({pending} bytes of one came)"
            if pending
            else f"no PROXY header within {PROXY_HEADER_TIMEOUT:g}s"
        )

    def header_failed(self, reason: str) -> None:
        """Close the connection, its PROXY header bad (C{reason} says how)."""
        self.factory.proxy.bad_header(self.transport.getPeer(), reason)
        self.abort("bad-proxy-header")

    def logPrefix(self) -> str:
        # Twisted asks every new connection; ProtocolWrapper's answer costs a
        # zope interface lookup and a format, and the listener's name says more.
        return self.factory.name

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.wrappedProtocol.dataReceived(data)

    def write(self, data: bytes) -> None:
        # Sent at once when nothing is queued (echod._twisted.send_at_once, with its
        # measurement), but not a connection's first reply: that cost one-reply
        # connections a tenth of their rate (measured): sent sooner, the reply and
        # the FIN more often find the client asleep and must wake it (README,
        # "Benchmark"). The call the helper costs is lost in the send()'s noise:
        # 2.48 µs a 64 B write inline, 2.53 µs through it (Twisted 26; 22.4 alike).
        direct = self.sent and self._direct
        self.sent += len(data)
        send_at_once(self.transport, data, direct)

    def writeSequence(self, data: list[bytes]) -> None:
        self.sent += sum(map(len, data))
        self.transport.writeSequence(data)

    def loseConnection(self) -> None:
        """
        Close once what is queued is sent; if the client may still be
        sending, linger first (see L{LINGER_BYTES}).
        """
        if getattr(self.wrappedProtocol, "rejected", None):
            self.ending = "bad-request"  # even after the client's end of file: it cut its request short
        elif self.ending is None:
            self.ending = "server"
        self.disconnecting = 1
        transport = self.transport
        if self.eof or self.linger_until >= 0 or transport.disconnecting or not self._direct:
            transport.loseConnection()
        else:
            self._linger()

    def _linger(self) -> None:
        transport = self.transport
        self.linger_until = self.received + LINGER_BYTES
        # A paused streaming producer would stop Twisted from ever sending the FIN, and
        # reading must go on whether or not backpressure had paused it.
        if transport.producer is not None:
            transport.unregisterProducer()
        transport.loseWriteConnection()
        transport.resumeProducing()
        # Input from here on is discarded here, never reaching the protocol, which has
        # finished. An instance attribute, so that no other connection pays a test for
        # it on every chunk.
        self.dataReceived = self._discard

    def _discard(self, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.linger_until:
            self.transport.loseConnection()

    def abort(self, cause: str) -> None:
        """Drop the connection now, whatever is still queued for it."""
        transport = self.transport
        if self._proxy_parser is not None:
            # No longer awaited: the sweep of late headers must not close it a second time
            # before Twisted reports it lost.
            self.factory.proxy.awaiting.pop(self, None)
        if self.cause is None:
            self.cause = cause
            # The kernel drops, with a reset, what the peer has not acknowledged yet.
            self.sent -= unacknowledged(transport)
        transport.abortConnection()

    def readConnectionLost(self) -> None:
        if self._proxy_parser is not None:
            pending = self._proxy_parser.pending
            if pending:
                self.header_failed(f"the client stopped sending after {pending} bytes of its PROXY header")
                return
            # A connection opened and closed with nothing said: a balancer's
            # or a monitor's check that the port is open, not a bad header.
            self.factory.proxy.awaiting.pop(self, None)
        self.eof = True
        if self.ending is None:
            self.ending = "client"
        if self.peer_key is None:  # not admitted: nothing inside to tell
            self.transport.loseConnection()
            return
        if self.linger_until >= 0:
            self.transport.loseConnection()  # what lingering waited for
        else:
            self._half_closed("readConnectionLost")

    def writeConnectionLost(self) -> None:
        if self.peer_key is None:
            self.transport.loseConnection()
        elif self.linger_until < 0:  # not the half-close of our own lingering
            self._half_closed("writeConnectionLost")

    def _half_closed(self, event: str) -> None:
        if IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            getattr(self.wrappedProtocol, event)()
        else:
            self.transport.loseConnection()

    def timeoutConnection(self) -> None:
        transport = self.transport
        if self.linger_until >= 0 and unsent(transport) + unacknowledged(transport) <= 1:
            # Lingering, and the client has taken all of its reply (the 1 being our FIN)
            # but not closed: the server's part is done, and it ends as it began to,
            # "server" or "bad-request". A plain close: nothing is left to lose.
            transport.loseConnection()
            return
        factory = self.factory
        factory.stats.timed_out += 1
        if factory.context.log_connections:
            factory.log.debug(
                "{listener}: closing {peer}, idle for {timeout}s",
                listener=factory.name,
                peer=format_peer(self.getPeer()),
                timeout=factory.limits.idle_timeout,
            )
        # abort, not lose: an idle peer that stopped reading would otherwise
        # keep the connection open until its unread echo drained.
        self.abort("idle-timeout")

    def took_more(self) -> bool:
        """Whether the peer has taken (acknowledged) more output since this was last asked."""
        transport = self.transport
        taken = self.sent - unsent(transport) - unacknowledged(transport)
        if taken == self.taken:
            return False
        self.taken = taken
        return True

    def connectionLost(self, reason: Failure) -> None:
        if self.cause is None:
            if reason is not None and not reason.check(error.ConnectionDone):
                self.cause = "reset" if reason.check(error.ConnectionLost) else "error"
            else:
                self.cause = self.ending or "client"
        # Out is what was handed over: not what Twisted still held when the connection went.
        self.sent -= unsent(self.transport)
        if self.peer_key is None:
            # Never admitted (see peer_key): the protocol inside never began, so it is not told the end.
            self.factory.proxy.awaiting.pop(self, None)
            self.factory.unregisterProtocol(self)
            self.wrappedProtocol = None
            return
        super().connectionLost(reason)
