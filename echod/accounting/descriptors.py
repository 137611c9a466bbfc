"""
Running out of file descriptors: the connections Twisted drops meanwhile,
counted and told once.

When accept(2) fails with EMFILE, Twisted's TCP port (C{tcp.Port.doRead},
the same from 22.4 to 26.10) frees a descriptor it keeps in reserve, accepts
each waiting connection and closes it at once, and logs an info line for
every one and two more a turn ("EMFILE encountered; releasing reserved file
descriptor.", "EMFILE recovery: Closed socket from ...", "Re-reserving EMFILE
recovery file descriptor."): measured, 137 dropped connections made 274 lines.
Where no descriptor is in reserve (or ENFILE: the system's table is full) it
logs "Could not accept new connection (EMFILE)" on every turn of the loop
while the connection waits. Its listener never hears of any of it.

The port logs through a logger of its own (buffered until the accepts are
done, so that logging cannot take the freed descriptor): echod routes each of
its ports' events (L{echod._twisted.route_port_log}) through
L{DescriptorShortage.observer}, which
counts each dropped connection as a refusal of its listener (reason
C{file_descriptors}, with an access log line), warns once when a shortage
begins, sums up what followed every 10 seconds (L{echod.accounting.throttle}), keeps
an alert in the status line until a quiet interval ends it, and passes every
other event on as Twisted would have logged it.
"""

from __future__ import annotations

import errno
import resource
from typing import Protocol

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from zope.interface import provider

from echod._twisted import route_port_log
from echod.accounting.accesslog import AccessLog
from echod.accounting.alerts import Alerts
from echod.accounting.stats import ListenerStats
from echod.accounting.throttle import INTERVAL, Summary, WarningThrottle
from echod.addresses import peer_host

#: The refusal reason, in the metrics and (as "refused-file_descriptors") in the access log.
REASON = "file_descriptors"

#: Twisted's log formats (tcp.py, 22.4 to 26.10) for a connection it accepted and closed ...
_DROPPED = "EMFILE recovery: Closed socket from {address}"
#: ... for the turn in which it did ...
_RECOVERY = frozenset(
    {
        "EMFILE encountered; releasing reserved file descriptor.",
        "Re-reserving EMFILE recovery file descriptor.",
    }
)
#: ... and for a connection it could not accept, which waits.
_NOT_ACCEPTED = "Could not accept new connection ({acceptError})"
_SHORTAGE_ERRORS = frozenset({errno.errorcode[errno.EMFILE], errno.errorcode[errno.ENFILE]})

#: What the status line says while a shortage lasts.
ALERT = "out of file descriptors, new connections dropped: raise LimitNOFILE= or lower max_connections"


class Owner(Protocol):
    """What a port's dropped connections are counted against: its listener's factory."""

    name: str
    stats: ListenerStats | None
    access_log: AccessLog | None


class DescriptorShortage:
    """
    The daemon's account of running out of file descriptors, shared by all
    of its ports.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, alerts: Alerts | None = None) -> None:
        self._clock = clock
        self._alerts = alerts
        self._warnings = WarningThrottle(clock, self._summarise, quiet=self._ended)
        #: Whether a shortage is going on: begun, and no quiet interval since.
        self.ongoing = False

    def install(self, port: IListeningPort, owner: Owner) -> None:
        """
        Route the log events of Twisted TCP C{port} through this: its dropped
        connections count as refusals of C{owner} (a L{LimitedFactory}, read
        at each drop, so that a rename or a new access log applies).
        """
        route_port_log(port, lambda forward: self.observer(owner, forward))

    def observer(self, owner: Owner, forward: ILogObserver = globalLogPublisher) -> ILogObserver:
        """The log observer for the port of C{owner}; other events go on to C{forward}."""

        @provider(ILogObserver)
        def observe(event: dict) -> None:
            text = event.get("log_format")
            if text == _DROPPED:
                self._dropped(owner, _address(event.get("address")))
            elif text in _RECOVERY:
                pass
            elif text == _NOT_ACCEPTED and event.get("acceptError") in _SHORTAGE_ERRORS:
                self._shortage(owner.name, "", f"cannot accept new connections ({event['acceptError']})")
            else:
                forward(event)

        return observe

    def _dropped(self, owner: Owner, peer: IPv4Address | IPv6Address | None) -> None:
        if owner.stats is not None:
            owner.stats.refuse(REASON)
        if owner.access_log is not None and peer is not None:
            owner.access_log.log_connection(
                self._clock.seconds(), owner.name, peer, 0, 0, 0.0, "refused-" + REASON
            )
        self._shortage(owner.name, peer_host(peer) if peer is not None else "", "dropping new connections")

    def _shortage(self, name: str, source: str, what: str) -> None:
        if not self._warnings.allow(source):
            return
        self.ongoing = True
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if self._alerts is not None:
            self._alerts.raise_(REASON, None, ALERT)  # logged below, with its fields
        self.log.warn(
            "{listener}: out of file descriptors (limit {limit}): {what}; raise LimitNOFILE= "
            "(or ulimit -n) or lower max_connections",
            listener=name,
            limit=soft,
            what=what,
        )

    def _summarise(self, summary: Summary) -> None:
        self.log.warn(
            "... and {summary}",
            summary=summary.describe("connections dropped or not accepted for want of file descriptors"),
        )

    def _ended(self) -> None:
        self.ongoing = False
        if self._alerts is not None:
            self._alerts.clear(REASON)
        self.log.info(
            "file descriptors available again: no connection dropped in the last {interval:g}s",
            interval=INTERVAL,
        )

    def flush(self) -> None:
        """Say what is held back now (when stopping)."""
        self._warnings.flush()


def _address(address: object) -> IPv4Address | IPv6Address | None:
    """The peer address Twisted names in its event, as a Twisted address (C{None} if it is none)."""
    if not isinstance(address, tuple) or len(address) < 2:
        return None
    host, port = str(address[0]), address[1]
    return IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)
