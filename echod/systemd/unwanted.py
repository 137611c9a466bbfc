"""
The sockets systemd passed that no listener wants (L{Unclaimed}): each one
an alert, and every connection on a stream one reset at once.

systemd listens on a socket unit's addresses until the unit itself is
restarted. When an admin moves a port in the configuration and restarts only
the service, clients of the old port still connect, into a backlog nobody
accepts from, and hang until their own timeout. A reset tells them at once,
as a closed port would; the log says what makes systemd's sockets follow the
configuration again.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence

from twisted.internet.interfaces import IAddress, IListeningPort, IReactorSocket, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from echod.accounting.alerts import Alerts
from echod.accounting.throttle import Summary, WarningThrottle
from echod.addresses import format_peer, peer_host
from echod.config import ListenerSettings
from echod.systemd.activation import APPLY_SOCKETS, InheritedSocket, match

#: Seconds over which the resets after the first are counted, not logged.
#: Longer than the client-made warnings' 10 s: every line says the same
#: thing, a configuration to apply, which one line a minute keeps in view.
WARN_INTERVAL = 60.0


class TurnAway(Protocol):
    """Reset the connection as soon as it is accepted."""

    factory: TurnAwayFactory

    def connectionMade(self) -> None:
        # abortConnection sends the reset itself: it closes the socket with
        # SO_LINGER (1, 0), so that close(2) sends a RST instead of a FIN
        # (Connection._closeSocket(orderly=False) in twisted/internet/tcp.py,
        # the same in 22.4 and 26.10). Setting it here as well was redundant;
        # tests/integration/test_systemd.py checks the client is reset.
        self.transport.abortConnection()
        self.factory.turned_away(self.transport.getPeer())


class TurnAwayFactory(Factory):
    """Resets the connections on one unwanted socket, and says so, throttled."""

    protocol = TurnAway
    noisy = False
    log = Logger()

    def __init__(self, where: str, fix: str, clock: IReactorTime) -> None:
        self.where = where
        self.fix = fix
        #: Every client of the socket sets off a warning: the first is logged
        #: in full, those that follow summed up by client (echod.accounting.throttle).
        self.warnings = WarningThrottle(clock, self._summarise, interval=WARN_INTERVAL)

    def turned_away(self, peer: IAddress) -> None:
        """Warn that C{peer}'s connection was reset, unless the throttle counts it for a summary."""
        if not self.warnings.allow(peer_host(peer)):
            return
        self.log.warn(
            "reset a connection from {peer} to {where}, a socket systemd passed that no listener uses; "
            "to make systemd's sockets follow the configuration run: {fix}",
            peer=format_peer(peer),
            where=self.where,
            fix=self.fix,
        )

    def _summarise(self, summary: Summary) -> None:
        self.log.warn(
            "... and {summary}; to make systemd's sockets follow the configuration run: {fix}",
            summary=summary.describe(f"connections reset on {self.where}"),
            fix=self.fix,
        )

    def stopFactory(self) -> None:
        # The socket stops being served: the resets held back are said now, not lost.
        self.warnings.flush()


def turn_away(
    sock: socket.socket, where: str, fix: str, reactor: IReactorSocket
) -> tuple[IListeningPort, TurnAwayFactory]:
    """Serve C{sock}, a listening stream socket, by resetting every connection."""
    sock.setblocking(False)
    factory = TurnAwayFactory(where, fix, reactor)
    return reactor.adoptStreamPort(sock.fileno(), sock.family, factory), factory


class Unclaimed:
    """
    The sockets systemd passed that no listener claimed. Each stands as an
    alert in the status line, and the clients of a stream one are reset
    (L{turn_away}), until a listener claims it on reload (L{claim}) or the
    daemon stops.
    """

    log = Logger()

    def __init__(self, sockets: Sequence[InheritedSocket], reactor: IReactorSocket, alerts: Alerts) -> None:
        self.sockets = list(sockets)
        self._reactor = reactor
        self._alerts = alerts
        #: The ports resetting the clients of stream sockets, by descriptor.
        self._turned_away: dict[int, IListeningPort] = {}

    def start(self, path: str) -> None:
        """Raise their alerts, and reset the clients of the stream ones; C{path}: the configuration's."""
        for sock in self.sockets:
            self._alerts.raise_(
                "unmatched",
                sock.describe(),
                f"systemd's sockets differ from {path}: run '{APPLY_SOCKETS}'",
                log=f"systemd passed socket {sock.describe()}, which no listener in {path} "
                f"uses; its clients are reset; to make them agree run: {APPLY_SOCKETS}",
            )
            if sock.transport == "tcp":
                port, _ = turn_away(sock.sock, sock.describe(), APPLY_SOCKETS, self._reactor)
                self._turned_away[sock.sock.fileno()] = port

    def claim(self, settings: ListenerSettings) -> InheritedSocket | None:
        """
        The socket that is C{settings}' (the admin reverted a port, say),
        now theirs: no longer an alert, its clients no longer reset; or
        C{None} if none is.
        """
        found = match([settings], self.sockets)[0].get(settings.name)
        if found is None:
            return None
        self.sockets.remove(found)
        self._alerts.clear("unmatched", found.describe())
        turned_away = self._turned_away.pop(found.sock.fileno(), None)
        if turned_away is not None:
            turned_away.stopListening()  # accepts no more at once; Twisted closes only its duplicate
        self.log.info("{name}: takes over {socket}", name=settings.name, socket=found.describe())
        return found

    def stop(self) -> None:
        """Stop resetting clients (the daemon stops): systemd queues them for the next start."""
        for port in self._turned_away.values():
            port.stopListening()
