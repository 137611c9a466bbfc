"""
Connection limits around any protocol factory: a total cap, a per-peer cap,
an idle timeout, the PROXY protocol header that names the client behind a
balancer, and the accounting that goes with them: counters, and a line in the
access log for every connection. Each connection is one
L{LimitedProtocol} (L{echod.protocols.connection}).

Twisted's own C{LimitConnectionsByPeer} cannot be used: it indexes an
C{IPv4Address} as a tuple and fails on every connection (Twisted 22.4 to
26.10).
"""

from __future__ import annotations

import dataclasses

from twisted.internet import defer
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory

from echod import addresses
from echod.accounting.accesslog import AccessLog
from echod.accounting.descriptors import DescriptorShortage
from echod.accounting.stats import ListenerStats
from echod.accounting.throttle import Summary, WarningThrottle
from echod.addresses import DEFAULT_PREFIX_IPV4, DEFAULT_PREFIX_IPV6, format_peer, peer_host
from echod.protocols.connection import LimitedProtocol
from echod.protocols.proxied import ProxyGate
from echod.protocols.sweep import Sweep


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """
    What a listener holds its connections to, named as in echod.conf(5): a
    value, replaced whole when the configuration changes (see
    L{LimitedFactory.limits}).
    """

    max_connections: int
    max_connections_per_peer: int
    #: Seconds without progress either way after which a connection is closed; 0 for never.
    idle_timeout: float
    #: A peer is an address's first this many bits (see L{echod.addresses.peer_key}).
    peer_prefix_ipv4: int = DEFAULT_PREFIX_IPV4
    peer_prefix_ipv6: int = DEFAULT_PREFIX_IPV6
    #: Whether every connection begins with a PROXY header, and who may send one.
    proxy_protocol: bool = False
    trusted_proxies: tuple = ()

    @classmethod
    def of(cls, settings: object) -> ConnectionLimits:
        """The limits C{settings} (a listener's, or anything with the same names) set."""
        return cls(**{field.name: getattr(settings, field.name) for field in dataclasses.fields(cls)})


@dataclasses.dataclass
class ListenerContext:
    """
    What the daemon shares with every listener and its factory. Held by
    reference: the daemon sets a field once and every listener and factory
    reads the new value at its next use, a factory retired with its last
    connections too.
    """

    #: Where each connection gets its line, if anywhere.
    access_log: AccessLog | None = None
    #: Log each connection opened and closed (at debug level). Off unless the
    #: log level is debug: Twisted builds every event before filtering it,
    #: which would cost each connection that much for nothing.
    log_connections: bool = False
    #: Where the connections Twisted drops for want of file descriptors are counted and told.
    shortage: DescriptorShortage | None = None


class LimitedFactory(WrappingFactory):
    """
    Wraps a factory so that its listener holds its connections to its
    L{ConnectionLimits}: at most C{max_connections} connections, at most
    C{max_connections_per_peer} from one peer, each closed after
    C{idle_timeout} seconds idle (0: never). A peer is an address's
    C{peer_prefix_ipv4} or C{peer_prefix_ipv6} leading bits
    (L{echod.addresses.peer_key}), so that a host with a whole IPv6 /64 is
    still one peer.

    A connection is idle when nothing moves either way: no input, and the
    peer takes none of the output queued for it. A client reading a large
    echo slowly is not idle, though the server, its output full, reads
    nothing from it meanwhile (backpressure).

    Idleness is found by a L{Sweep}, four times per C{idle_timeout}, that
    looks for connections whose counts have not moved, rather than by a
    timer per connection reset on every read: that kept a timer on the data
    path (4% of small-message throughput, measured) and one more object per
    connection. Only for a connection that had output outstanding at the
    last look does the sweep ask the kernel how much of it is still
    unacknowledged (one ioctl). A connection is closed between
    C{idle_timeout} and 1.25 times that after the last progress.

    A connection over a cap is closed as soon as it is accepted and counted
    as refused.

    With C{proxy_protocol}, every connection must begin with a PROXY header
    (L{echod.protocols.proxy}) naming the client, as a balancer in front writes it;
    from then on the connection is the client's: its per-peer cap, its line
    in the access log (with C{via=} the balancer), its warnings. A
    connection from outside C{trusted_proxies} is closed at once (see
    L{ProxyGate}). The per-peer cap is applied once the header is read, and
    the protocol inside begins only then; a header that is bad, or not
    complete within L{echod.protocols.proxied.PROXY_HEADER_TIMEOUT}, closes
    the connection.
    """

    protocol = LimitedProtocol
    noisy = False
    log = Logger()

    def __init__(
        self,
        wrappedFactory: Factory,
        *,
        name: str,
        limits: ConnectionLimits,
        stats: ListenerStats,
        clock: IReactorTime | None = None,
        context: ListenerContext | None = None,
    ) -> None:
        super().__init__(wrappedFactory)
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.stats = stats
        #: The access log and the connection-logging switch, shared with the daemon.
        self.context = context if context is not None else ListenerContext()
        #: On a proxy_protocol listener, the connections awaiting their header, and who may send one.
        self.proxy = ProxyGate(name, stats, clock, limits.trusted_proxies)
        self.name = name
        self._limits = limits
        self._per_peer: dict[str, int] = {}
        self._idle = Sweep(clock, self.protocols, self._sweep)
        # "max_connections" while its warning stands, for the line that says it is over.
        self._announced: set[str] = set()
        # Refusals are client-made, and a client at its cap can make one per connection
        # it tries: their warnings are throttled (see echod.accounting.throttle).
        self._refusal_warnings = {
            limit: WarningThrottle(self.clock, lambda summary, limit=limit: self._summarise(limit, summary))
            for limit in ("max_connections", "max_connections_per_peer")
        }
        self._empty_waiters: list[defer.Deferred] = []

    @property
    def name(self) -> str:
        """The listener's name, in its log lines and access log lines."""
        return self._name

    @name.setter
    def name(self, name: str) -> None:
        self._name = self.proxy.name = name

    @property
    def access_log(self) -> AccessLog | None:
        """Where each connection gets its line, if anywhere: the shared context's, read at each use."""
        return self.context.access_log

    @property
    def limits(self) -> ConnectionLimits:
        """
        The limits in force. Replaced, they apply to the next connection, and
        to those open: the caps count them, the idle timeout closes them, and
        a peer prefix changed counts them by the new one at once. Those open
        keep the PROXY header they were or were not sent.
        """
        return self._limits

    @limits.setter
    def limits(self, limits: ConnectionLimits) -> None:
        old, self._limits = self._limits, limits
        self.proxy.trusted_proxies = limits.trusted_proxies
        if (limits.peer_prefix_ipv4, limits.peer_prefix_ipv6) != (old.peer_prefix_ipv4, old.peer_prefix_ipv6):
            self._count_peers_again()
        if limits.idle_timeout != old.idle_timeout:
            # Only when it changed: restarting the sweep would put its next run a
            # whole interval off: a reload every 0.4 s kept a 2 s timeout from ever firing.
            self._idle.stop()
            if self.protocols:
                # A sweep at once, for the same reason: changes in a row must not
                # keep postponing it. Connections keep their quiet_since.
                self._start_sweeping(now=True)

    def _count_peers_again(self) -> None:
        # The open connections too, so that the per-peer cap holds at once.
        self._per_peer = {}
        for p in self.protocols:
            if p.peer_key is not None:
                p.peer_key = self._key(p.getPeer())
                self._per_peer[p.peer_key] = self._per_peer.get(p.peer_key, 0) + 1

    def _key(self, addr: IAddress) -> str:
        """The peer C{addr} counts as for the per-peer cap."""
        limits = self._limits
        return addresses.peer_key(peer_host(addr), limits.peer_prefix_ipv4, limits.peer_prefix_ipv6)

    def _start_sweeping(self, now: bool = False) -> None:
        if self._limits.idle_timeout > 0:
            self._idle.start(self._limits.idle_timeout / 4, now=now)

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

    def _sweep(self) -> None:
        now = self.clock.seconds()
        idle_timeout = self._limits.idle_timeout
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
            elif now - p.quiet_since >= idle_timeout:
                p.timeoutConnection()

    def buildProtocol(self, addr: IAddress) -> LimitedProtocol | None:
        limits = self._limits
        if len(self.protocols) >= limits.max_connections:
            self._refuse(addr, "max_connections", limits.max_connections, "max_connections")
            self._log_closed(addr, "refused-max_connections")
            return None
        if limits.proxy_protocol:
            if not self.proxy.trusts(peer_host(addr)):
                self._log_closed(addr, "untrusted-proxy")
                self.proxy.untrusted(addr)
                return None
            return super().buildProtocol(addr)  # admitted once its header is read
        peer_key = self._key(addr)
        if self._per_peer.get(peer_key, 0) >= limits.max_connections_per_peer:
            self._refuse(addr, "max_connections_per_peer", limits.max_connections_per_peer, peer_key)
            self._log_closed(addr, "refused-max_connections_per_peer")
            return None
        protocol = super().buildProtocol(addr)
        if protocol is not None:
            protocol.peer_key = peer_key
        return protocol

    def admit(self, p: LimitedProtocol) -> bool:
        """
        Let in C{p}, whose PROXY header has been read, if its client is
        within the per-peer cap; else count it refused and close it.
        """
        client = p.getPeer()
        peer_key = self._key(client)
        cap = self._limits.max_connections_per_peer
        if self._per_peer.get(peer_key, 0) >= cap:
            self._refuse(client, "max_connections_per_peer", cap, peer_key)
            p.abort("refused-max_connections_per_peer")
            return False
        p.peer_key = peer_key
        self._admitted(p)
        return True

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
        access_log = self.access_log
        if access_log is not None:
            access_log.log_connection(
                self.clock.seconds(), self.name, peer, received, sent, duration, cause, via
            )

    def _refuse(self, addr: IAddress, limit: str, value: int, reached: str) -> None:
        """Count a refusal; warn, throttled, that the cap C{limit} is reached."""
        self.stats.refuse(limit)
        source = reached if limit == "max_connections_per_peer" else peer_host(addr)
        if not self._refusal_warnings[limit].allow(source):
            if not self.context.log_connections:
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
        for throttle in self._refusal_warnings.values():
            throttle.flush()
        self.proxy.flush()
        super().stopFactory()

    def registerProtocol(self, p: LimitedProtocol) -> None:
        super().registerProtocol(p)
        self.stats.active += 1
        self._start_sweeping()
        if p.peer_key is not None:
            self._admitted(p)

    def _admitted(self, p: LimitedProtocol) -> None:
        self._per_peer[p.peer_key] = self._per_peer.get(p.peer_key, 0) + 1
        self.stats.accepted += 1
        if self.context.log_connections:
            self.log.debug(
                "{listener}: connection from {peer}", listener=self.name, peer=format_peer(p.getPeer())
            )

    def unregisterProtocol(self, p: LimitedProtocol) -> None:
        super().unregisterProtocol(p)
        if p.peer_key is not None:
            left = self._per_peer[p.peer_key] - 1
            if left:
                self._per_peer[p.peer_key] = left
            else:
                del self._per_peer[p.peer_key]
        self.stats.active -= 1
        self.stats.bytes_received += p.received
        self.stats.bytes_sent += p.sent
        now = self.clock.seconds()
        duration = now - p.started
        self.stats.close(p.cause, duration)
        context = self.context
        if context.access_log is not None:
            # Not through _log_closed: at every close, the clock is read once.
            context.access_log.log_connection(
                now, self.name, p.getPeer(), p.received, p.sent, duration, p.cause, p.via
            )
        if "max_connections" in self._announced and len(self.protocols) < self._limits.max_connections:
            self._announced.discard("max_connections")
            self.log.info("{listener}: below max_connections again, accepting", listener=self.name)
        if context.log_connections:
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
