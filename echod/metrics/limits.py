"""
The metrics port's bounds on connections: how many, from whom, how fast.

The port is served in the reactor of the echo listeners, so whatever comes
at it must cost that reactor little: at most L{MAX_CONNECTIONS} connections
at once, L{MAX_CONNECTIONS_PER_PEER} of them from one address (an IPv6 /64,
as for the listeners' per-peer caps), L{CONNECTION_RATE_PER_PEER} new ones a
second from an address, each of them closed as it comes once over, with a
warning (throttled, L{echod.accounting.throttle}); and the port takes at most
L{ACCEPT_RATE} connections a second in all, one a reactor turn (L{echod._twisted.PacedPort}),
so that even the connections it closes at once cost a bounded share of it.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from echod import _twisted
from echod._twisted import PacedPort
from echod.accounting.rates import PeerBuckets, TokenBucket
from echod.accounting.throttle import Summary, WarningThrottle
from echod.addresses import peer_host, peer_key

#: Connections open at once; more are closed as they come. A few Prometheus servers need one each.
MAX_CONNECTIONS = 16
#: Connections open at once from one address (an IPv6 /64): one address cannot hold them all.
MAX_CONNECTIONS_PER_PEER = 4
#: New connections a second from one address (and as many at once after a pause); more are
#: closed as they come. A scrape is one connection: Prometheus makes one every few seconds.
CONNECTION_RATE_PER_PEER = 10
#: Connections the port accepts a second, from everyone (as many at once after a pause); the others
#: wait in the kernel's queue meanwhile.
ACCEPT_RATE = 100

log = Logger(namespace="echod.metrics.endpoint")


class CappedFactory(WrappingFactory):
    """
    C{factory}'s connections, at most C{limit} at once, C{per_peer} of them
    from one address, and C{rate} new ones a second from an address; the
    ones beyond are closed as they come. Twisted's
    C{LimitTotalConnectionsFactory} cannot stand in front of a L{Site}: it
    builds bare protocols that have it, not the site, as their factory; and
    its C{LimitConnectionsByPeer} fails on every IPv4 address.
    """

    noisy = False

    def __init__(
        self,
        factory: Factory,
        clock: IReactorTime,
        limit: int = MAX_CONNECTIONS,
        per_peer: int = MAX_CONNECTIONS_PER_PEER,
        rate: int = CONNECTION_RATE_PER_PEER,
    ) -> None:
        super().__init__(factory)
        self.limit = limit
        self.per_peer = per_peer
        self._clock = clock
        self._open: dict[str, int] = {}
        self._rates = PeerBuckets(rate)
        self._refusals = {
            why: WarningThrottle(clock, lambda summary, why=why: self._summarise(why, summary))
            for why in ("max", "peer", "rate")
        }

    def buildProtocol(self, addr: IAddress) -> ProtocolWrapper | None:
        key = peer_key(peer_host(addr))
        if len(self.protocols) >= self.limit:
            return self._refuse("max", key, f"{self.limit} open, the most there may be")
        if self._open.get(key, 0) >= self.per_peer:
            return self._refuse("peer", key, f"{self.per_peer} open from it, the most from one address")
        if not self._rates.take(key, self._clock.seconds()):
            return self._refuse("rate", key, f"more than {self._rates.rate} new ones a second from it")
        protocol = super().buildProtocol(addr)
        protocol.peer_key = key
        return protocol

    def registerProtocol(self, p: ProtocolWrapper) -> None:
        super().registerProtocol(p)
        self._open[p.peer_key] = self._open.get(p.peer_key, 0) + 1

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        super().unregisterProtocol(p)
        left = self._open[p.peer_key] - 1
        if left:
            self._open[p.peer_key] = left
        else:
            del self._open[p.peer_key]

    def _refuse(self, why: str, key: str, because: str) -> None:
        """Refuse a connection from the peer of cap key C{key}; warn, throttled."""
        if self._refusals[why].allow(key):
            who = "anyone" if why == "max" else key
            log.warn("metrics: refusing new connections from {who}: {because}", who=who, because=because)
        return None

    def _summarise(self, why: str, summary: Summary) -> None:
        what = {
            "max": "over the cap",
            "peer": "over the cap per address",
            "rate": "over the rate per address",
        }
        log.warn("metrics: ... and {summary}", summary=summary.describe(f"connections refused {what[why]}"))

    def stopFactory(self) -> None:
        for throttle in self._refusals.values():
            throttle.flush()
        super().stopFactory()


def adopt_paced_port(reactor: IReactorTime, fd: int, family: int, factory: Factory) -> PacedPort:
    """
    What C{reactor.adoptStreamPort} does, with a L{PacedPort} that accepts
    at most L{ACCEPT_RATE} connections a second (and as many at once after
    a pause): the port listens on a duplicate of C{fd}, which must be
    non-blocking and stays the caller's.
    """
    bucket = TokenBucket(ACCEPT_RATE, ACCEPT_RATE, reactor.seconds())
    return _twisted.adopt_paced_port(reactor, fd, family, factory, bucket)
