"""
The PROXY header on a C{proxy_protocol} listener, as its factory keeps it:
who may send one, how long a connection has to, and what is counted and
told of those that do not. The header's grammar is L{echod.protocols.proxy};
the connection that reads it, L{echod.protocols.limits.LimitedProtocol}.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress, IProtocol, IReactorTime
from twisted.logger import Logger

from echod.accounting.stats import ListenerStats
from echod.accounting.throttle import Summary, WarningThrottle
from echod.addresses import format_peer, network_matcher, peer_host
from echod.protocols.sweep import Sweep

#: Seconds a connection to a C{proxy_protocol} listener has to send its whole
#: PROXY header. A balancer sends it at once, before any client byte, so a
#: few seconds are plenty; the idle timeout (minutes) would let a client that
#: never sends one hold a connection slot, uncounted against any peer's cap,
#: for that long. Connections are closed between this and a quarter more
#: after they were accepted (see L{ProxyGate}).
PROXY_HEADER_TIMEOUT = 3.0

#: The warnings a gate throttles, and what their summaries count.
SUMMARIES = {
    "untrusted-proxy": "connections closed from outside trusted_proxies",
    "bad-proxy-header": "bad PROXY headers",
}


class ProxyGate:
    """
    A listener's connections awaiting their PROXY header, and who may send one.

    Only a connection from C{trusted_proxies} may: anyone else could name any
    client. The deadline of L{PROXY_HEADER_TIMEOUT} is kept the way idleness
    is: by a sweep, four times per timeout, through the connections still
    awaiting their header, oldest first, rather than by a timer per
    connection, which cost a tenth of what the whole header does (measured).
    """

    log = Logger()

    def __init__(self, name: str, stats: ListenerStats, clock: IReactorTime, trusted_proxies: tuple) -> None:
        #: The listener's name, for the warnings.
        self.name = name
        self.stats = stats
        self.clock = clock
        self.trusted_proxies = trusted_proxies
        #: The connections awaiting their PROXY header, oldest first, and when each began.
        self.awaiting: dict[IProtocol, float] = {}
        self._sweep = Sweep(clock, self.awaiting, self._late)
        # Both are client-made, one per connection it tries: throttled (see echod.accounting.throttle).
        self._warnings = {
            what: WarningThrottle(clock, lambda summary, what=what: self._summarise(what, summary))
            for what in SUMMARIES
        }

    @property
    def trusted_proxies(self) -> tuple:
        """The networks that may connect, and send a PROXY header."""
        return self._trusted_proxies

    @trusted_proxies.setter
    def trusted_proxies(self, networks: tuple) -> None:
        self._trusted_proxies = networks
        self.trusts = network_matcher(networks)

    def await_header(self, p: IProtocol, since: float) -> None:
        """Give C{p}, accepted at C{since}, L{PROXY_HEADER_TIMEOUT} seconds from then for its header."""
        self.awaiting[p] = since
        # Stopped when a sweep finds none, as the idle sweep is, not at every header read.
        self._sweep.start(PROXY_HEADER_TIMEOUT / 4)

    def _late(self) -> None:
        too_old = self.clock.seconds() - PROXY_HEADER_TIMEOUT
        late = []
        for p, since in self.awaiting.items():  # oldest first
            if since > too_old:
                break
            late.append(p)
        for p in late:
            del self.awaiting[p]
            p.header_too_slow()

    def untrusted(self, addr: IAddress) -> None:
        """Count and warn, throttled, of a connection from C{addr}, outside C{trusted_proxies}."""
        self.stats.untrusted_proxies += 1
        if self._warnings["untrusted-proxy"].allow(peer_host(addr)):
            self.log.warn(
                "{listener}: closing a connection from {peer}, which is not in trusted_proxies:"
                " with proxy_protocol = yes only the balancers listed there may connect",
                listener=self.name,
                peer=format_peer(addr),
            )

    def bad_header(self, addr: IAddress, reason: str) -> None:
        """Count and warn, throttled, of a bad PROXY header from C{addr}."""
        self.stats.bad_proxy_headers += 1
        if self._warnings["bad-proxy-header"].allow(peer_host(addr)):
            self.log.warn(
                "{listener}: bad PROXY header from {peer}, closing: {reason}",
                listener=self.name,
                peer=format_peer(addr),
                reason=reason,
            )

    def _summarise(self, what: str, summary: Summary) -> None:
        self.log.warn(
            "{listener}: ... and {summary}", listener=self.name, summary=summary.describe(SUMMARIES[what])
        )

    def flush(self) -> None:
        """Say the warnings held back now (the listener stops), rather than lose them."""
        for throttle in self._warnings.values():
            throttle.flush()
