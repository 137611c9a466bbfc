"""
Stream sockets systemd passed that no listener wants: every connection on
them is reset at once.

systemd listens on a socket unit's addresses until the unit itself is
restarted. When an admin moves a port in the configuration and restarts only
the service, clients of the old port still connect, into a backlog nobody
accepts from, and hang until their own timeout. A reset tells them at once,
as a closed port would; the log says what makes systemd's sockets follow the
configuration again.
"""

from __future__ import annotations

import socket
import struct

from twisted.internet.interfaces import IListeningPort, IReactorSocket, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

#: SO_LINGER on, zero seconds: close(2) sends a reset instead of a FIN.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)
#: A warning about turned-away clients is logged at most this often (seconds).
WARN_INTERVAL = 60.0


class TurnAway(Protocol):
    """Reset the connection as soon as it is accepted."""

    factory: TurnAwayFactory

    def connectionMade(self) -> None:
        self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        self.transport.abortConnection()
        self.factory.turned_away()


class TurnAwayFactory(Factory):
    """Counts the connections turned away on one unwanted socket, and says so now and then."""

    protocol = TurnAway
    noisy = False
    log = Logger()

    def __init__(self, where: str, fix: str, clock: IReactorTime) -> None:
        self.where = where
        self.fix = fix
        self.clock = clock
        self.count = 0
        self._unreported = 0
        self._last_warning = -WARN_INTERVAL

    def turned_away(self) -> None:
        self.count += 1
        self._unreported += 1
        now = self.clock.seconds()
        if now - self._last_warning < WARN_INTERVAL:
            return
        self.log.warn(
            "reset {count} connection(s) to {where}, a socket systemd passed that no listener uses; "
            "to make systemd's sockets follow the configuration run: {fix}",
            count=self._unreported,
            where=self.where,
            fix=self.fix,
        )
        self._last_warning = now
        self._unreported = 0


def turn_away(
    sock: socket.socket, where: str, fix: str, reactor: IReactorSocket
) -> tuple[IListeningPort, TurnAwayFactory]:
    """Serve C{sock}, a listening stream socket, by resetting every connection."""
    sock.setblocking(False)
    factory = TurnAwayFactory(where, fix, reactor)
    return reactor.adoptStreamPort(sock.fileno(), sock.family, factory), factory
