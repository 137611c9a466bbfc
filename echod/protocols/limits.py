"""
Connection limits around any protocol factory: a total cap, a per-peer cap,
an idle timeout, the PROXY protocol header that names the client behind a
balancer, and the accounting that goes with them: counters, and a line in the
access log for every connection.

One wrapper does all of it, in the manner of L{twisted.protocols.policies}:
the protocols inside know nothing of limits, and stacking a wrapper per
concern would put one more Python call per chunk on the data path for each.
Twisted's own C{LimitConnectionsByPeer} cannot be used: it indexes an
C{IPv4Address} as a tuple and fails on every connection (Twisted 22.4 to
26.10).
"""

from __future__ import annotations

import fcntl
import struct
import termios

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from echod.accounting.accesslog import AccessLog
from echod.accounting.stats import ListenerStats
from echod.accounting.throttle import Summary, WarningThrottle
from echod.addresses import (
    DEFAULT_PREFIX_IPV4,
    DEFAULT_PREFIX_IPV6,
    format_peer,
    network_matcher,
    peer_host,
    peer_key,
)
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

#: Seconds a connection to a C{proxy_protocol} listener has to send its whole
#: PROXY header. A balancer sends it at once, before any client byte, so a
#: few seconds are plenty; the idle timeout (minutes) would let a client that
#: never sends one hold a connection slot, uncounted against any peer's cap,
#: for that long. Connections are closed between this and a quarter more
#: after they were accepted (see L{LimitedFactory}).
PROXY_HEADER_TIMEOUT = 3.0


def unsent(transport) -> int:
    """Bytes written to C{transport} that Twisted still holds, not yet given to the kernel (0 if unknown)."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:  # not one of Twisted's socket transports
        return 0


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

    factory: LimitedFactory
    #: The peer as the per-peer cap counts it (see L{peer_key}); C{None} until
    #: the connection is admitted: on a C{proxy_protocol} listener, until its
    #: PROXY header has named the client and the cap has let it in.
    peer: str | None = None
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
    closed_by: str | None = None
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
        self._direct = hasattr(transport, "writeSomeData") and hasattr(transport, "_tempDataLen")
        transport.bufferSize = BUFFER_SIZE
        Protocol.makeConnection(self, transport)
        factory.registerProtocol(self)
        if self.peer is not None:
            self.wrappedProtocol.makeConnection(self)
            return
        # A PROXY header first. Until it is complete, input goes to its parser;
        # an instance attribute, deleted then, so that afterwards no chunk of
        # any connection pays for the header's existence.
        self._proxy_parser = ProxyHeaderParser()
        factory.await_header(self)
        self.dataReceived = self._header_received

    def getPeer(self) -> IAddress:
        """The client: named by the PROXY header if there was one, else the socket's peer."""
        return self.client or self.transport.getPeer()

    def _header_received(self, data: bytes) -> None:
        try:
            header = self._proxy_parser.feed(data)
        except ProxyHeaderError as e:
            self._bad_header(str(e))
            return
        if header is None:
            return
        del self.dataReceived
        self._proxy_parser = None
        factory = self.factory
        del factory.awaiting_header[self]
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
        self._bad_header(
            f"no complete PROXY header within {PROXY_HEADER_TIMEOUT:g}s ({pending} bytes of one came)"
            if pending
            else f"no PROXY header within {PROXY_HEADER_TIMEOUT:g}s"
        )

    def _bad_header(self, reason: str) -> None:
        self.factory.bad_header(self.transport.getPeer(), reason)
        self.abort("bad-proxy-header")

    def logPrefix(self) -> str:
        # Twisted asks every new connection; ProtocolWrapper's answer costs a
        # zope interface lookup and a format, and the listener's name says more.
        return self.factory.name

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.wrappedProtocol.dataReceived(data)

    def write(self, data: bytes) -> None:
        transport = self.transport
        # Nothing queued: send now. Twisted's write() always queues and waits
        # for the next turn of the loop to send, which costs an echo two
        # epoll_ctl calls and a turn per reply (measured: 1 KiB echo 1.7 times
        # the requests/s). Not for a connection's first reply: that cost
        # one-reply connections a tenth of their rate (measured): sent sooner,
        # the reply and the FIN more often find the client asleep and must
        # wake it (README, "Benchmark"). Whatever the kernel does not take,
        # or an error, goes Twisted's usual way.
        direct = (
            self.sent
            and self._direct
            and not transport.dataBuffer
            and not transport._tempDataLen
            and not transport.disconnecting
        )
        self.sent += len(data)
        if direct:
            sent = transport.writeSomeData(data)
            if sent == len(data):
                return
            if isinstance(sent, int) and sent > 0:
                data = data[sent:]
        transport.write(data)

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
            self.factory.awaiting_header.pop(self, None)
        if self.closed_by is None:
            self.closed_by = cause
            # The kernel drops, with a reset, what the peer has not acknowledged yet.
            self.sent -= unacknowledged(transport)
        transport.abortConnection()

    def readConnectionLost(self) -> None:
        if self._proxy_parser is not None:
            pending = self._proxy_parser.pending
            if pending:
                self._bad_header(f"the client stopped sending after {pending} bytes of its PROXY header")
                return
            # A connection opened and closed with nothing said: a balancer's
            # or a monitor's check that the port is open, not a bad header.
            self.factory.awaiting_header.pop(self, None)
        self.eof = True
        if self.ending is None:
            self.ending = "client"
        if self.peer is None:  # not admitted: nothing inside to tell
            self.transport.loseConnection()
            return
        if self.linger_until >= 0:
            self.transport.loseConnection()  # what lingering waited for
        else:
            self._half_closed("readConnectionLost")

    def writeConnectionLost(self) -> None:
        if self.peer is None:
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
        self.factory.stats.timed_out += 1
        if self.factory.log_connections:
            self.factory.log.debug(
                "{listener}: closing {peer}, idle for {timeout}s",
                listener=self.factory.name,
                peer=format_peer(self.getPeer()),
                timeout=self.factory.idle_timeout,
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
        if self.closed_by is None:
            if reason is not None and not reason.check(error.ConnectionDone):
                self.closed_by = "reset" if reason.check(error.ConnectionLost) else "error"
            else:
                self.closed_by = self.ending or "client"
        # Out is what was handed over: not what Twisted still held when the connection went.
        self.sent -= unsent(self.transport)
        if self.peer is None:
            # Never admitted (see peer): the protocol inside never began, so it is not told the end.
            self.factory.awaiting_header.pop(self, None)
            self.factory.unregisterProtocol(self)
            self.wrappedProtocol = None
            return
        super().connectionLost(reason)


class LimitedFactory(WrappingFactory):
    """
    Wraps a factory so that its listener serves at most C{max_connections}
    connections, at most C{max_connections_per_peer} from one peer, each
    closed after C{idle_timeout} seconds idle (0: never). A peer is an
    address's C{peer_prefix_ipv4} or C{peer_prefix_ipv6} leading bits
    (L{peer_key}), so that a host with a whole IPv6 /64 is still one peer.

    A connection is idle when nothing moves either way: no input, and the
    peer takes none of the output queued for it. A client reading a large
    echo slowly is not idle, though the server, its output full, reads
    nothing from it meanwhile (backpressure).

    Idleness is found by a sweep, four times per C{idle_timeout}, that looks
    for connections whose counts have not moved, rather than by a timer
    per connection reset on every read: that kept a timer on the data path
    (4% of small-message throughput, measured) and one more object per
    connection. Only for a connection that had output outstanding at the
    last look does the sweep ask the kernel how much of it is still
    unacknowledged (one ioctl). A connection is
    closed between C{idle_timeout} and 1.25 times that after the last
    progress.

    A connection over a cap is closed as soon as it is accepted and counted
    as refused. The limits are plain attributes: changing them applies to
    the next connection.

    With C{proxy_protocol}, every connection must begin with a PROXY header
    (L{echod.protocols.proxy}) naming the client, as a balancer in front writes it;
    from then on the connection is the client's: its per-peer cap, its line
    in the access log (with C{via=} the balancer), its warnings. A
    connection from outside C{trusted_proxies} is closed at once: anyone
    else could name any client. The per-peer cap is applied once the
    header is read, and the protocol inside begins only then; a header that
    is bad, or not complete within L{PROXY_HEADER_TIMEOUT}, closes the
    connection. That deadline is kept the way idleness is: by a sweep, four
    times per timeout, through the connections still awaiting their header,
    oldest first, rather than by a timer per connection, which cost a tenth
    of what the whole header does (measured).
    """

    protocol = LimitedProtocol
    noisy = False
    log = Logger()
    #: Log each connection opened and closed (at debug level). Off unless the
    #: log level is debug: Twisted builds every event before filtering it,
    #: which would cost each connection that much for nothing.
    log_connections = False

    def __init__(
        self,
        wrappedFactory: Factory,
        *,
        name: str,
        max_connections: int,
        max_connections_per_peer: int,
        idle_timeout: float,
        stats: ListenerStats,
        clock: IReactorTime | None = None,
        access_log: AccessLog | None = None,
        log_connections: bool = False,
        peer_prefix_ipv4: int = DEFAULT_PREFIX_IPV4,
        peer_prefix_ipv6: int = DEFAULT_PREFIX_IPV6,
        proxy_protocol: bool = False,
        trusted_proxies: tuple = (),
    ) -> None:
        super().__init__(wrappedFactory)
        if clock is None:
            from twisted.internet import reactor as clock
        self.name = name
        self.max_connections = max_connections
        self.max_connections_per_peer = max_connections_per_peer
        self._sweeper: LoopingCall | None = None
        self.idle_timeout = idle_timeout
        self.stats = stats
        self.clock = clock
        self.access_log = access_log
        self.log_connections = log_connections
        self._per_peer: dict[str, int] = {}
        self._prefixes = (peer_prefix_ipv4, peer_prefix_ipv6)
        self.proxy_protocol = proxy_protocol
        self.trusted_proxies = trusted_proxies
        #: The connections awaiting their PROXY header, oldest first, and when each began.
        self.awaiting_header: dict[LimitedProtocol, float] = {}
        self._header_sweeper: LoopingCall | None = None
        # "max_connections" while its warning stands, for the line that says it is over.
        self._announced: set[str] = set()
        # Refusals are client-made, and a client at its cap can make one per connection
        # it tries: their warnings are throttled (see echod.accounting.throttle).
        self._refusal_warnings = {
            limit: WarningThrottle(self.clock, lambda summary, limit=limit: self._summarise(limit, summary))
            for limit in ("max_connections", "max_connections_per_peer")
        }
        self._proxy_warnings = {
            what: WarningThrottle(self.clock, lambda summary, what=what: self._summarise_proxy(what, summary))
            for what in ("untrusted-proxy", "bad-proxy-header")
        }
        self._empty_waiters: list[defer.Deferred] = []

    _idle_timeout: float | None = None

    @property
    def trusted_proxies(self) -> tuple:
        """The networks that may connect, and send a PROXY header, with C{proxy_protocol}."""
        return self._trusted_proxies

    @trusted_proxies.setter
    def trusted_proxies(self, networks: tuple) -> None:
        self._trusted_proxies = networks
        self._trusted = network_matcher(networks)

    def await_header(self, p: LimitedProtocol) -> None:
        """Give C{p} L{PROXY_HEADER_TIMEOUT} seconds from now to send its PROXY header."""
        self.awaiting_header[p] = p.started
        if self._header_sweeper is not None and not self._header_sweeper.running:
            self._header_sweeper = None  # a sweep raised, which ended its LoopingCall
        if self._header_sweeper is None:
            self._header_sweeper = LoopingCall(self._sweep_headers)
            self._header_sweeper.clock = self.clock
            self._header_sweeper.start(PROXY_HEADER_TIMEOUT / 4, now=False)

    def _sweep_headers(self) -> None:
        if not self.awaiting_header:
            # Stopped when a sweep finds none, as the idle sweep is, not at every header read.
            self._header_sweeper.stop()
            self._header_sweeper = None
            return
        too_old = self.clock.seconds() - PROXY_HEADER_TIMEOUT
        late = []
        for p, since in self.awaiting_header.items():  # oldest first
            if since > too_old:
                break
            late.append(p)
        for p in late:
            del self.awaiting_header[p]
            p.header_too_slow()

    @property
    def idle_timeout(self) -> float:
        """Seconds without progress either way after which a connection is closed; 0 for never."""
        return self._idle_timeout

    @idle_timeout.setter
    def idle_timeout(self, seconds: float) -> None:
        if seconds == self._idle_timeout:
            # Restarting the sweep would put its next run a whole interval
            # off: a reload every 0.4 s kept a 2 s timeout from ever firing.
            return
        self._idle_timeout = seconds
        self._stop_sweeping()
        if self.protocols:
            # A sweep at once, for the same reason: changes in a row must not
            # keep postponing it. Connections keep their quiet_since.
            self._start_sweeping(now=True)

    def _start_sweeping(self, now: bool = False) -> None:
        if self._sweeper is not None and not self._sweeper.running:
            self._sweeper = None  # a sweep raised, which ended its LoopingCall
        if self._sweeper is None and self._idle_timeout > 0:
            self._sweeper = LoopingCall(self._sweep)
            self._sweeper.clock = self.clock
            self._sweeper.start(self._idle_timeout / 4, now=now)

    def set_peer_prefixes(self, ipv4: int, ipv6: int) -> None:
        """
        Count peers by their first C{ipv4} or C{ipv6} address bits from now
        on, the open connections too, so that the per-peer cap holds at once.
        """
        if (ipv4, ipv6) == self._prefixes:
            return
        self._prefixes = (ipv4, ipv6)
        self._per_peer = {}
        for p in self.protocols:
            if p.peer is not None:
                p.peer = peer_key(peer_host(p.getPeer()), ipv4, ipv6)
                self._per_peer[p.peer] = self._per_peer.get(p.peer, 0) + 1

    def serve(self, factory: Factory) -> None:
        """
        Build new connections' protocols with C{factory}; those open keep
        theirs. Caps, counts and the idle sweep go on as they were: a host at
        its cap stays there across a switch of protocol.
        """
        old, self.wrappedFactory = self.wrappedFactory, factory
        if old.numPorts:
            factory.doStart()
            old.doStop()

    def _stop_sweeping(self) -> None:
        if self._sweeper is not None:
            if self._sweeper.running:
                self._sweeper.stop()
            self._sweeper = None

    def _sweep(self) -> None:
        if not self.protocols:
            # Stopped here rather than when the last connection closes: a
            # listener whose connections come and go one at a time would
            # otherwise start and stop a timer for each of them.
            self._stop_sweeping()
            return
        now = self.clock.seconds()
        for p in list(self.protocols):
            # Output outstanding at the last look is asked after even when input moved:
            # the peer taking the echo of that input is progress too, and seen only
            # at the next sweep it would give the connection a quarter timeout more.
            took = p.sent != p.taken and p.took_more()
            if p.received != p.seen:
                p.seen = p.received
                p.quiet_since = now
            elif took:
                p.quiet_since = now
            elif now - p.quiet_since >= self._idle_timeout:
                p.timeoutConnection()

    def buildProtocol(self, addr: IAddress) -> LimitedProtocol | None:
        if len(self.protocols) >= self.max_connections:
            self._refuse(addr, "max_connections", self.max_connections, "max_connections")
            self._log_closed(addr, "refused-max_connections")
            return None
        if self.proxy_protocol:
            if not self._trusted(peer_host(addr)):
                self._untrusted(addr)
                return None
            return super().buildProtocol(addr)  # admitted once its header is read
        peer = peer_key(peer_host(addr), *self._prefixes)
        if self._per_peer.get(peer, 0) >= self.max_connections_per_peer:
            self._refuse(addr, "max_connections_per_peer", self.max_connections_per_peer, peer)
            self._log_closed(addr, "refused-max_connections_per_peer")
            return None
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            protocol.peer = peer
        return protocol

    def admit(self, p: LimitedProtocol) -> bool:
        """
        Let in C{p}, whose PROXY header has been read, if its client is
        within the per-peer cap; else count it refused and close it.
        """
        client = p.client or p.transport.getPeer()
        peer = peer_key(peer_host(client), *self._prefixes)
        if self._per_peer.get(peer, 0) >= self.max_connections_per_peer:
            self._refuse(client, "max_connections_per_peer", self.max_connections_per_peer, peer)
            p.abort("refused-max_connections_per_peer")
            return False
        p.peer = peer
        self._admitted(p)
        return True

    def _untrusted(self, addr: IAddress) -> None:
        self.stats.untrusted_proxies += 1
        self._log_closed(addr, "untrusted-proxy")
        if self._proxy_warnings["untrusted-proxy"].allow(peer_host(addr)):
            self.log.warn(
                "{listener}: closing a connection from {peer}, which is not in trusted_proxies:"
                " with proxy_protocol = yes only the balancers listed there may connect",
                listener=self.name,
                peer=format_peer(addr),
            )

    def bad_header(self, addr: IAddress, reason: str) -> None:
        """Count and warn, throttled, of a bad PROXY header from C{addr}."""
        self.stats.bad_proxy_headers += 1
        if self._proxy_warnings["bad-proxy-header"].allow(peer_host(addr)):
            self.log.warn(
                "{listener}: bad PROXY header from {peer}, closing: {reason}",
                listener=self.name,
                peer=format_peer(addr),
                reason=reason,
            )

    def _summarise_proxy(self, what: str, summary: Summary) -> None:
        text = {
            "untrusted-proxy": "connections closed from outside trusted_proxies",
            "bad-proxy-header": "bad PROXY headers",
        }[what]
        self.log.warn("{listener}: ... and {summary}", listener=self.name, summary=summary.describe(text))

    def _log_closed(
        self,
        peer: IAddress,
        cause: str,
        received: int = 0,
        sent: int = 0,
        duration: float = 0.0,
        via: IAddress | None = None,
    ) -> None:
        """The access log line of a connection that ended, or was refused, for C{cause}."""
        if self.access_log is not None:
            self.access_log.log_connection(
                self.clock.seconds(), self.name, peer, received, sent, duration, cause, via
            )

    def _refuse(self, addr: IAddress, limit: str, value: int, reached: str) -> None:
        """Count a refusal; warn, throttled, that the cap C{limit} is reached."""
        self.stats.refuse(limit)
        source = reached if limit == "max_connections_per_peer" else peer_host(addr)
        if not self._refusal_warnings[limit].allow(source):
            if not self.log_connections:
                return
            self.log.debug(
                "{listener}: refused {peer} ({limit})",
                listener=self.name,
                peer=format_peer(addr),
                limit=limit,
            )
            return
        if limit == "max_connections":
            self._announced.add(reached)
        self.log.warn(
            "{listener}: {limit} ({value}) reached, refusing new connections from {who}",
            listener=self.name,
            limit=limit,
            value=value,
            who=reached if limit == "max_connections_per_peer" else "anyone",
        )

    def _summarise(self, limit: str, summary: Summary) -> None:
        self.log.warn(
            "{listener}: ... and {summary}",
            listener=self.name,
            summary=summary.describe(f"connections refused over {limit}"),
        )

    def stopFactory(self) -> None:
        # The listener stops: the warnings held back are said now, not lost.
        for throttle in (*self._refusal_warnings.values(), *self._proxy_warnings.values()):
            throttle.flush()
        super().stopFactory()

    def registerProtocol(self, p: LimitedProtocol) -> None:
        super().registerProtocol(p)
        self.stats.active += 1
        self._start_sweeping()
        if p.peer is not None:
            self._admitted(p)

    def _admitted(self, p: LimitedProtocol) -> None:
        self._per_peer[p.peer] = self._per_peer.get(p.peer, 0) + 1
        self.stats.accepted += 1
        if self.log_connections:
            self.log.debug(
                "{listener}: connection from {peer}", listener=self.name, peer=format_peer(p.getPeer())
            )

    def unregisterProtocol(self, p: LimitedProtocol) -> None:
        super().unregisterProtocol(p)
        if p.peer is not None:
            left = self._per_peer[p.peer] - 1
            if left:
                self._per_peer[p.peer] = left
            else:
                del self._per_peer[p.peer]
        self.stats.active -= 1
        self.stats.bytes_received += p.received
        self.stats.bytes_sent += p.sent
        now = self.clock.seconds()
        duration = now - p.started
        self.stats.close(p.closed_by, duration)
        if self.access_log is not None:
            # Not through _log_closed: at every close, the clock is read once.
            self.access_log.log_connection(
                now, self.name, p.getPeer(), p.received, p.sent, duration, p.closed_by, p.via
            )
        if "max_connections" in self._announced and len(self.protocols) < self.max_connections:
            self._announced.discard("max_connections")
            self.log.info("{listener}: below max_connections again, accepting", listener=self.name)
        if self.log_connections:
            self.log.debug(
                "{listener}: closed connection from {peer}", listener=self.name, peer=format_peer(p.getPeer())
            )
        if not self.protocols:
            waiters, self._empty_waiters = self._empty_waiters, []
            for d in waiters:
                d.callback(None)

    def when_empty(self) -> defer.Deferred:
        """A Deferred that fires once no connection is open."""
        if not self.protocols:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._empty_waiters.append(d)
        return d

    def abort_all(self, cause: str = "shutdown") -> int:
        """Abort every open connection; return how many there were."""
        open_protocols = list(self.protocols)
        for p in open_protocols:
            p.abort(cause)
        return len(open_protocols)

    def totals(self) -> tuple[int, int]:
        """Bytes received and sent, closed connections and open ones together."""
        received, sent = self.stats.bytes_received, self.stats.bytes_sent
        for p in self.protocols:
            received += p.received
            sent += p.sent
        return received, sent
