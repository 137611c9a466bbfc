"""
Composition: from L{Settings} to running Twisted services.

L{EchodService} owns one L{ListenerService} per configured listener. Stopping
it stops listening first, then gives the connections still open up to
C{shutdown_grace} to finish before closing them.
"""

from __future__ import annotations

from twisted.application.service import Application, MultiService, Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore, IReactorSocket, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import ILogObserver, Logger

from echod.bytecount import BytecountFactory
from echod.config import ListenerSettings, Settings
from echod.echo import EchoFactory
from echod.limits import LimitedFactory
from echod.logs import DaemonLog
from echod.sockets import BindError, bind_stream
from echod.stats import ListenerStats
from echod.units import format_duration

#: Exit status when a listener cannot be set up (sysexits.h EX_OSERR).
EX_OSERR = 71


def protocol_factory(settings: ListenerSettings, stats: ListenerStats) -> Factory:
    """The bare protocol factory a listener serves, before limits are applied."""
    if settings.protocol == "bytecount":
        return BytecountFactory(settings.name, settings.max_header_length, settings.max_message_size, stats)
    return EchoFactory()


class ListenerService(Service):
    """One configured listener: its socket, its limits and its counters."""

    log = Logger()

    def __init__(self, settings: ListenerSettings, reactor: IReactorSocket) -> None:
        self.settings = settings
        self.name = settings.name
        self.stats = ListenerStats()
        self.factory = LimitedFactory(
            protocol_factory(settings, self.stats),
            name=settings.name,
            max_connections=settings.max_connections,
            max_connections_per_peer=settings.max_connections_per_peer,
            idle_timeout=settings.idle_timeout,
            stats=self.stats,
            clock=reactor,
        )
        self._reactor = reactor
        self.port = None

    def privilegedStartService(self) -> None:
        # Binding here rather than in startService lets twistd bind a
        # privileged port before it drops root for --uid.
        sock = bind_stream(self.settings.address, self.settings.port)
        try:
            self.port = self._reactor.adoptStreamPort(sock.fileno(), sock.family, self.factory)
        finally:
            sock.close()
        host = self.port.getHost()
        shown = f"[{host.host}]" if ":" in host.host else host.host
        self.log.info(
            "{name}: {protocol}/{transport} listening on {address}",
            name=self.name,
            protocol=self.settings.protocol,
            transport=self.settings.transport,
            address=f"{shown}:{host.port}",
        )
        super().privilegedStartService()

    def stopService(self) -> defer.Deferred | None:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


class EchodService(MultiService):
    """
    The whole daemon: every listener, and the graceful stop.
    """

    log = Logger()

    def __init__(
        self, settings: Settings, reactor: IReactorCore, daemon_log: DaemonLog | None = None
    ) -> None:
        super().__init__()
        self.settings = settings
        self.daemon_log = daemon_log
        self._reactor = reactor
        self.listeners = [ListenerService(s, reactor) for s in settings.listeners]
        for listener in self.listeners:
            listener.setServiceParent(self)

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except BindError as e:
            self.log.critical("{error}", error=e)
            raise SystemExit(EX_OSERR) from None

    def startService(self) -> None:
        super().startService()
        self.log.info(
            "echod serving {count} listener(s) from {path}",
            count=len(self.listeners),
            path=self.settings.path,
        )

    def stopService(self) -> defer.Deferred:
        stopped = super().stopService()
        stopped.addCallback(lambda _: self._drain())
        return stopped

    def _drain(self) -> defer.Deferred | None:
        open_connections = sum(listener.stats.active for listener in self.listeners)
        if not open_connections:
            return None
        grace = self.settings.shutdown_grace
        self.log.info(
            "stopped listening; waiting up to {grace} for {count} open connection(s) to finish",
            grace=format_duration(grace),
            count=open_connections,
        )
        drained = defer.gatherResults([listener.factory.when_empty() for listener in self.listeners])
        timer = self._reactor.callLater(grace, self._abort_all)
        drained.addBoth(lambda result: timer.cancel() if timer.active() else None)
        return drained

    def _abort_all(self) -> None:
        count = sum(listener.factory.abort_all() for listener in self.listeners)
        self.log.warn(
            "closed {count} connection(s) still open after shutdown_grace ({grace})",
            count=count,
            grace=format_duration(self.settings.shutdown_grace),
        )


def make_application(settings: Settings, reactor: IReactorTime | None = None) -> Application:
    """
    The twistd application for C{settings}, logging to stdout at the
    configured level.
    """
    if reactor is None:
        from twisted.internet import reactor
    application = Application("echod")
    daemon_log = DaemonLog(settings.log_level)
    application.setComponent(ILogObserver, daemon_log.observer)
    EchodService(settings, reactor, daemon_log).setServiceParent(application)
    return application
