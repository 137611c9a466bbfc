"""
A reload carried out: the L{Plan} (reload.py) of what the listeners become,
done to the running listeners of the daemon, and the metrics endpoint moved.

Listeners are added, removed, moved and renamed in an order that keeps each
socket served for as long as it can be: removed ones first (their sockets
are wanted by no one, their names may be taken by a rename), then renames,
all at once, then moves and additions, once the removed sockets are closed.
Whatever cannot be had stands as an alert in the status line.
"""

from __future__ import annotations

import socket
from collections.abc import Generator
from dataclasses import replace

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore
from twisted.logger import Logger

from echod.accounting.alerts import Alerts
from echod.config import ListenerSettings, Settings
from echod.daemon.listeners import ListenerService, bind_for, endpoint, make_listener, successor
from echod.daemon.reload import Plan
from echod.metrics.endpoint import MetricsEndpoint
from echod.protocols.limits import LimitedFactory, ListenerContext
from echod.sockets import BindError, describe_bind_failure
from echod.systemd.activation import APPLY_SOCKETS
from echod.systemd.unwanted import Unclaimed


def listeners_of(daemon: MultiService) -> list[ListenerService]:
    """The listeners among C{daemon}'s child services, in the order they joined."""
    return [service for service in daemon if isinstance(service, ListenerService)]


class Reconciler:
    """
    Carries reloads out on the listeners of C{daemon} (their parent) and on
    its metrics endpoint; keeps counting the factories of listeners gone
    until their last connection ends (L{retired}).
    """

    log = Logger()

    def __init__(
        self,
        daemon: MultiService,
        reactor: IReactorCore,
        alerts: Alerts,
        unclaimed: Unclaimed,
        metrics: MetricsEndpoint,
        context: ListenerContext | None = None,
    ) -> None:
        self._daemon = daemon
        self._reactor = reactor
        self._alerts = alerts
        self._unclaimed = unclaimed
        self._metrics = metrics
        #: What every listener started from now on reads (the access log, ...).
        self._context = context if context is not None else ListenerContext()
        #: The factories of listeners removed or moved, with connections still open.
        self.retired: list[LimitedFactory] = []
        #: Set once the daemon stops: nothing more is bound.
        self.stopping = False

    @defer.inlineCallbacks
    def carry_out(self, actions: Plan, new: Settings) -> Generator[defer.Deferred, object, None]:
        """Do C{actions} to the listeners, which then serve as C{new} says, and move the metrics."""
        self._alerts.clear_family("moved")  # raised again below for each listener still pinned
        current = {listener.name: listener for listener in listeners_of(self._daemon)}
        # Removed first: their sockets are wanted by no one, and their names may be taken by a rename.
        removed = [self._remove(current[name]) for name in actions.remove]
        self._rename([(current[old], name) for old, name in actions.renames])
        for old, settings in actions.keep:
            current[old].reconfigure(settings)
        for old, settings in actions.pin:
            self._pin(current[old], settings, new.path)
        # Twisted closes a port in a later turn: a socket bound before then on
        # an address a removed one overlaps (0.0.0.0:P, then 127.0.0.1:P) fails.
        yield defer.gatherResults(removed, consumeErrors=True)
        for old, settings in actions.move:
            if not self.stopping:
                yield self._move(current[old], settings)
        for settings in actions.add:
            if not self.stopping:
                self._add(settings)
        self._alerts.keep_only("bind", {settings.name for settings in new.listeners})
        if not self.stopping:
            yield self._metrics.move(new.metrics)

    def _pin(self, listener: ListenerService, settings: ListenerSettings, path: str) -> None:
        """Apply C{settings} but its address to C{listener}, whose socket systemd alone can move."""
        self._alerts.raise_(
            "moved",
            settings.name,
            f"systemd's sockets differ from {path}: run '{APPLY_SOCKETS}'",
            log=f"{settings.name}: the configuration now says {endpoint(settings)}, but its socket "
            f"comes from systemd and is {endpoint(listener.settings)}; to move it run: {APPLY_SOCKETS}",
        )
        kept = {"transport": listener.settings.transport, "address": listener.settings.address}
        listener.reconfigure(replace(settings, port=listener.settings.port, **kept))

    def _rename(self, renames: list[tuple[ListenerService, str]]) -> None:
        """Give listeners new names; all at once, as names may be swapped."""
        named = self._daemon.namedServices
        for listener, _ in renames:
            del named[listener.name]
        for listener, name in renames:
            old = listener.name
            listener.rename(name)
            named[name] = listener
            self._alerts.clear("bind", old)
            self.log.info(
                "{name}: renamed from {old}, still listening on {where}",
                name=name,
                old=old,
                where=endpoint(replace(listener.settings, port=listener.as_running().bound_port)),
            )

    def _add(self, settings: ListenerSettings) -> None:
        """Start a new listener for C{settings}, or say why it cannot listen."""
        try:
            self._start(settings).setServiceParent(self._daemon)
        except BindError as e:
            self._bind_failed(settings, f"reload: {settings.name} not added: {e}", "could not listen on")
        else:
            self._alerts.clear("bind", settings.name)

    @defer.inlineCallbacks
    def _move(
        self, old: ListenerService, settings: ListenerSettings
    ) -> Generator[defer.Deferred, object, None]:
        """
        Move C{old} to C{settings}' socket with its counters and limits; it
        keeps its old socket if the new one cannot be had, unless the old one
        was in the way.
        """
        try:
            sock, inherited = self._socket_for(settings)
        except BindError as e:
            if not (e.address_in_use and old.holds_port(settings)):
                self._bind_failed(
                    settings, f"reload: {old.name} keeps its previous socket: {e}", "could not move to"
                )
                return
            # E.g. 0.0.0.0:P to 127.0.0.1:P: both cannot be bound at once, so
            # the old one closes first, and clients are refused until the new one listens.
            self.log.info(
                "{name}: {where} overlaps its socket {old}: closing that one first",
                name=old.name,
                where=endpoint(settings),
                old=endpoint(old.settings),
            )
            yield self._remove(old)
            try:
                self._start(settings, predecessor=old).setServiceParent(self._daemon)
            except BindError as e:
                self._bind_failed(
                    settings,
                    f"reload: {settings.name} is not served: its socket {endpoint(old.settings)} was "
                    f"closed to make way for {endpoint(settings)}, which then failed too: {e}",
                    "is not served: could not move to",
                )
                return
        else:
            if old.settings.transport == "udp":
                # One UDP echo answers through one port at a time (its
                # started() and stopped()); meanwhile datagrams queue in the new socket.
                yield self._remove(old)
            try:
                listener = self._start(settings, sock, inherited, predecessor=old)
            except BindError as e:
                still = old.parent is not None
                self._bind_failed(
                    settings,
                    f"reload: {settings.name} "
                    f"{'keeps its previous socket' if still else 'is not served'}: {e}",
                    "could not move to" if still else "is not served: could not move to",
                )
                return
            # The new listener may have the old one's name only once that one left.
            removed = self._remove(old) if old.parent is not None else None
            listener.setServiceParent(self._daemon)
            yield removed
        self._alerts.clear("bind", settings.name)

    def _bind_failed(self, settings: ListenerSettings, message: str, could_not: str) -> None:
        self._alerts.raise_(
            "bind",
            settings.name,
            f"{settings.name} {could_not} {endpoint(settings)}, see the log",
            log=message,
        )

    def _socket_for(self, settings: ListenerSettings) -> tuple[socket.socket, bool]:
        """
        A listening socket for C{settings}, and whether it is systemd's: one
        systemd passed that no listener wanted until now (the admin reverted
        a port, say), else one of its own, which binding beside systemd's would fail.
        """
        found = self._unclaimed.claim(settings)
        if found is None:
            return bind_for(settings), False
        return found.sock, True

    def _start(
        self,
        settings: ListenerSettings,
        sock: socket.socket | None = None,
        inherited: bool = False,
        predecessor: ListenerService | None = None,
    ) -> ListenerService:
        """
        A listener for C{settings} listening on C{sock} (by default a socket
        of its own), taking over what C{predecessor} served with; not yet
        part of the daemon.

        @raise BindError: if it cannot listen; C{sock} is then closed.
        """
        if sock is None:
            sock, inherited = self._socket_for(settings)
        if predecessor is not None:
            listener = successor(
                predecessor, settings, self._reactor, sock=sock, inherited=inherited, context=self._context
            )
        else:
            listener = make_listener(
                settings, self._reactor, sock=sock, inherited=inherited, context=self._context
            )
        try:
            listener.privilegedStartService()  # Twisted takes the socket: it needs a descriptor too
        except OSError as e:
            # E.g. EMFILE as Twisted duplicates the descriptor.
            if listener.port is not None:
                listener.port.stopListening()
            sock.close()
            raise BindError(
                describe_bind_failure(e, settings.address, settings.port, settings.transport)
            ) from e
        return listener

    def _remove(self, listener: ListenerService) -> defer.Deferred:
        """Stop C{listener}; the Deferred fires once its socket is closed."""
        stopped = defer.maybeDeferred(listener.disownServiceParent)
        self._retire(listener.factory)
        self.log.info(
            "{name}: stopped listening on {where}", name=listener.name, where=endpoint(listener.settings)
        )
        return stopped

    def _retire(self, factory: LimitedFactory | None) -> None:
        """Keep counting a factory that no longer accepts, until its last connection ends."""
        if factory is None or not factory.protocols:
            return
        self.retired.append(factory)
        factory.when_empty().addCallback(lambda _: self.retired.remove(factory))
