"""
Composition: from L{Settings} to running Twisted services.

L{EchodService} owns one L{ListenerService} (listeners.py) per configured listener and
the metrics endpoint, its child services; tells systemd how it is doing, reloads on
SIGHUP (carried out by reconcile.py), and on stop stops listening, then gives the
connections still open up to C{shutdown_grace} to finish.
"""

from __future__ import annotations

import signal
from collections.abc import Generator

from twisted.application.service import Application, MultiService, Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.python.failure import Failure

from echod.accounting.accesslog import AccessLog
from echod.accounting.alerts import Alerts
from echod.accounting.descriptors import DescriptorShortage
from echod.config import ConfigError, Settings, load
from echod.daemon.listeners import DatagramListener, ListenerService, make_listener
from echod.daemon.logs import DaemonLog
from echod.daemon.memory import tune_malloc
from echod.daemon.reconcile import Reconciler, listeners_of
from echod.daemon.reload import plan
from echod.daemon.signals import defer_early_signals, take_pending
from echod.daemon.status import status_line, stopping_line
from echod.metrics.collector import DaemonView, ListenerView, make_registry
from echod.metrics.endpoint import MetricsEndpoint
from echod.protocols.guard import OwnEndpoints
from echod.protocols.limits import LimitedFactory, ListenerContext
from echod.sockets import BindError, raise_fd_limit
from echod.systemd import activation
from echod.systemd.activation import APPLY_SOCKETS
from echod.systemd.notify import Notifier
from echod.systemd.unwanted import Unclaimed
from echod.units import format_duration

#: Exit status when a listener cannot be set up (sysexits.h EX_OSERR).
EX_OSERR = 71
#: Exit status when the access log cannot be opened (sysexits.h EX_CANTCREAT).
EX_CANTCREAT = 73
#: Exit status when a listener's port may not be bound, e.g. a privileged
#: port systemd did not pass (sysexits.h EX_NOPERM): restarting cannot help.
EX_NOPERM = 77

#: Seconds asked of systemd beyond shutdown_grace to close what is left and flush the logs.
STOP_MARGIN = 10.0


class EchodService(MultiService):
    """
    The whole daemon: every listener and the metrics endpoint (its child
    services), systemd notifications, reload on SIGHUP, and the graceful stop.
    """

    log = Logger()

    def __init__(
        self,
        settings: Settings,
        reactor: IReactorCore,
        daemon_log: DaemonLog | None = None,
        notifier: Notifier | None = None,
        inherited: list[activation.InheritedSocket] = (),
    ) -> None:
        super().__init__()
        self.settings = settings
        self.daemon_log = daemon_log
        self.notifier = notifier if notifier is not None else Notifier(reactor, {})
        self._reactor = reactor
        self._activated = bool(inherited)
        self.alerts = Alerts(self.log)
        #: Connections Twisted drops for want of file descriptors: counted, and told once.
        self.shortage = DescriptorShortage(reactor, self.alerts)
        #: What every listener and factory reads when it needs it: set here once, never copied.
        self.context = ListenerContext(log_connections=settings.log_level == "debug", shortage=self.shortage)
        #: Whether the last reload applied, and when the configuration last loaded (for the metrics).
        self.reload_successful = True
        self.reload_success_time = reactor.seconds()
        self._stopping = False
        self._reloading: defer.Deferred | None = None  # the reload under way
        self._reload_again = False  # a reload was asked for while one was under way
        #: Where echod's UDP listeners are bound, shared by all of them: sources never answered.
        self._own = OwnEndpoints()
        pairs, unmatched = activation.match(settings.listeners, inherited)
        #: The sockets systemd passed that no listener claimed.
        self.unclaimed = Unclaimed(unmatched, reactor, self.alerts)
        for listener in settings.listeners:
            found = pairs.get(listener.name)
            make_listener(
                listener,
                reactor,
                sock=found.sock if found else None,
                inherited=found is not None,
                context=self.context,
            ).setServiceParent(self)
        # Joined after the listeners, so that they bind first at start.
        self.metrics = MetricsEndpoint(
            make_registry(self.metrics_view), reactor, settings.metrics, self.alerts, self.shortage
        )
        self.metrics.setServiceParent(self)
        self._reconciler = Reconciler(self, reactor, self.alerts, self.unclaimed, self.metrics, self.context)

    @property
    def access_log(self) -> AccessLog | None:
        """The access log, if any: the listeners' factories write to it through C{context}."""
        return self.context.access_log

    @access_log.setter
    def access_log(self, access_log: AccessLog | None) -> None:
        self.context.access_log = access_log

    @property
    def listeners(self) -> list[ListenerService]:
        return listeners_of(self)

    def privilegedStartService(self) -> None:
        files = raise_fd_limit()
        needed = sum(listener.settings.max_connections for listener in self.listeners) + 64
        if files < needed:
            self.log.warn(
                "only {files} open files allowed (RLIMIT_NOFILE) but the listeners may hold {needed} "
                "connections; raise LimitNOFILE= or lower max_connections",
                files=files,
                needed=needed,
            )
        self.unclaimed.start(self.settings.path)
        if self.settings.access_log:
            # Opened here, like the sockets, so that twistd --uid can still open it as root.
            try:
                self.access_log = AccessLog(self.settings.access_log, self._reactor)
            except OSError as e:
                self.log.critical(
                    "cannot open access_log {path}: {error}; create its directory, make it writable "
                    "for the daemon's user, or set access_log = (empty) to turn it off",
                    path=self.settings.access_log,
                    error=e.strerror or e,
                )
                raise SystemExit(EX_CANTCREAT) from None
        # MultiService's, but for the hint of what failed to bind.
        Service.privilegedStartService(self)
        for child in self:
            try:
                child.privilegedStartService()
            except BindError as e:
                self.log.critical("{error}{hint}", error=e, hint=self._bind_hint(child))
                raise SystemExit(EX_NOPERM if e.not_permitted else EX_OSERR) from None
        self._share_own_endpoints()

    def _share_own_endpoints(self) -> None:
        """Tell every UDP listener where all of them are bound, so that none answers another, or itself."""
        datagram = [listener for listener in self.listeners if isinstance(listener, DatagramListener)]
        # The socket's own address: the port it got for port 0, systemd's for an inherited one.
        self._own.update(listener.socket.getsockname()[:2] for listener in datagram)
        for listener in datagram:
            listener.protocol.guard.own = self._own

    def _bind_hint(self, child: Service) -> str:
        """What to do about C{child} not binding at start."""
        if child is self.metrics:
            return "; or set metrics = (empty) to turn the metrics off"
        if not self._activated:
            return ""
        return (
            f" (systemd's sockets do not include it; to make them follow the configuration: {APPLY_SOCKETS})"
        )

    def startService(self) -> None:
        super().startService()
        signal.signal(signal.SIGHUP, self._on_sighup)
        signal.signal(signal.SIGUSR1, self._on_sigusr1)
        # twistd starts services before the reactor runs; only once it runs
        # are Twisted's SIGTERM/SIGINT handlers in place, so only then may
        # systemd be told it can send them.
        self._reactor.callWhenRunning(self._ready)
        # What was asked for while starting, once the handlers are in place
        # (a signal from now on is handled by them): the access log was
        # opened before, and the configuration read long before, this point.
        if take_pending(signal.SIGUSR1):
            self.reopen_logs()
        if take_pending(signal.SIGHUP):
            self._reactor.callWhenRunning(self.reload)

    def _ready(self) -> None:
        self.log.info(
            "echod serving {count} listener(s) from {path}",
            count=len(self.listeners),
            path=self.settings.path,
        )
        self.notifier.ready(self.status())
        self.notifier.start(self.status)

    def _on_sighup(self, signum: int, frame: object) -> None:
        # A signal handler may run between any two bytecodes of the reactor:
        # hop onto the reactor before touching anything.
        self._reactor.callFromThread(self.reload)

    def _on_sigusr1(self, signum: int, frame: object) -> None:
        self._reactor.callFromThread(self.reopen_logs)

    def reopen_logs(self) -> None:
        """Reopen the access log at its path (after logrotate moved the file away)."""
        if self.access_log is None:
            return
        try:
            self.access_log.reopen()
        except OSError as e:
            self.alerts.raise_(
                "access_log",
                None,
                "access log cannot be reopened, see the log",
                log=f"cannot reopen access_log {self.access_log.path}: {e.strerror or e}; "
                "still writing to the file it had open",
            )
        else:
            self.alerts.clear("access_log")

    def metrics_view(self) -> DaemonView:
        """The daemon as a metrics scrape sees it."""
        views = []
        for listener in self.listeners:
            settings = listener.settings
            received, sent = listener.totals()
            views.append(
                ListenerView(
                    listener.name,
                    settings.protocol,
                    settings.transport,
                    settings.address,
                    listener.bound_port(),
                    listener.stats,
                    received,
                    sent,
                )
            )
        return DaemonView(views, self.reload_successful, self.reload_success_time, self.alerts.counts())

    def status(self) -> str:
        """The one line C{systemctl status} shows."""
        if self._stopping:
            return stopping_line(self._open_connections())
        return status_line(
            [(listener.name, listener.counters()) for listener in self.listeners],
            sum(listener.bytes_sent() for listener in self.listeners),
            self.alerts.summaries(),
        )

    # -- reload -------------------------------------------------------------

    def reload(self) -> defer.Deferred:
        """
        Read the configuration file again and apply it, or keep the old one
        if it is bad. The Deferred fires once it is applied and systemd told
        so. A reload asked for meanwhile runs once this one is done, never
        alongside it: it would plan against listeners half stopped.
        """
        if self._stopping:
            self.log.info("SIGHUP ignored: stopping")
            return defer.succeed(None)
        if self._reloading is not None:
            self._reload_again = True
            return self._reloading
        self.notifier.reloading()
        self._reloading = reloading = defer.maybeDeferred(self._reload)
        reloading.addErrback(self._reload_failed)
        reloading.addBoth(self._reloaded)
        return reloading

    def _reload_failed(self, failure: Failure) -> None:
        # A bug, or a resource gone in a way _add does not expect: whatever
        # it was, systemd must hear READY=1, or it waits in "reloading".
        self.log.failure(
            "reload failed: {error}; listeners keep serving, but the new configuration may be only "
            "partly applied: fix the cause and reload again",
            failure,
            level=LogLevel.error,
            error=failure.value,
        )
        self.alerts.raise_("reload", None, f"reload failed ({failure.value}), see the log")
        self.reload_successful = False

    def _reloaded(self, _: object) -> None:
        try:
            status = self.status()
        except Exception:
            self.log.failure("status line failed", level=LogLevel.error)
            status = "reload failed, see the log"
        self.notifier.ready(status)
        self._reloading = None
        if self._reload_again:
            self._reload_again = False
            self.reload()

    @defer.inlineCallbacks
    def _reload(self) -> Generator[defer.Deferred, object, None]:
        self.log.info("reloading {path}", path=self.settings.path)
        try:
            new = load(self.settings.path, self.settings.instance)
        except ConfigError as e:
            for problem in e.problems:
                self.log.error("reload: {problem}", problem=problem)
            self.alerts.raise_(
                "reload",
                None,
                f"reload failed, previous configuration kept: {e.problems[0]}",
                log=f"reload failed, still serving the previous configuration: {e.problems[0]}",
            )
            self.reload_successful = False
            return
        self.alerts.clear("reload")
        yield self._apply(new)
        self.reload_successful = True
        self.reload_success_time = self._reactor.seconds()
        self.log.info("reloaded: serving {count} listener(s)", count=len(self.listeners))

    @defer.inlineCallbacks
    def _apply(self, new: Settings) -> Generator[defer.Deferred, object, None]:
        if self.daemon_log is not None:
            self.daemon_log.set_level(new.log_level)
        self._switch_access_log(new.access_log)
        yield self._reconciler.carry_out(
            plan([each.as_running() for each in self.listeners], new.listeners), new
        )
        self.settings = new
        self.context.log_connections = new.log_level == "debug"
        self._share_own_endpoints()

    def _switch_access_log(self, path: str | None) -> None:
        current = self.access_log.path if self.access_log is not None else None
        if path == current:
            return
        try:
            new = AccessLog(path, self._reactor) if path else None
        except OSError as e:
            self.alerts.raise_(
                "access_log",
                None,
                "new access_log cannot be opened, see the log",
                log=f"reload: cannot open access_log {path}: {e.strerror or e}; keeping {current or 'none'}",
            )
            return
        old, self.access_log = self.access_log, new
        if old is not None:
            old.close()
        self.alerts.clear("access_log")

    # -- stop ---------------------------------------------------------------

    def _factories(self) -> list[LimitedFactory]:
        # Once each: a moved listener's factory serves on, retired with its old port's connections.
        return list(
            dict.fromkeys(
                [listener.factory for listener in self.listeners if listener.factory is not None]
                + self._reconciler.retired
            )
        )

    def _open_connections(self) -> int:
        # Counted by factory, not by ListenerStats.active: a retired factory
        # shares its listener's stats, so summing those would count twice.
        return sum(len(factory.protocols) for factory in self._factories())

    def stopService(self) -> defer.Deferred:
        self._stopping = self._reconciler.stopping = True
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.notifier.stopping(self.status())
        self.unclaimed.stop()
        # Not MultiService's, which would stop the metrics endpoint with the listeners.
        Service.stopService(self)
        stopped = defer.DeferredList(
            [defer.maybeDeferred(each.stopService) for each in reversed(self.listeners)]
        )
        stopped.addCallback(lambda _: self._drain())
        # Served until the connections are drained: a scrape meanwhile sees them finish.
        stopped.addBoth(self._stop_metrics)
        stopped.addBoth(self._close_access_log)
        return stopped

    def _stop_metrics(self, result: object) -> defer.Deferred:
        self.shortage.flush()
        return self.metrics.stopService().addBoth(lambda _: result)

    def _close_access_log(self, result: object) -> object:
        if self.access_log is not None:
            self.access_log.close()
            self.access_log = None  # a late SIGUSR1 has nothing left to reopen
        return result

    def _drain(self) -> defer.Deferred | None:
        factories = self._factories()
        open_connections = self._open_connections()
        if not open_connections:
            return None
        grace = self.settings.shutdown_grace
        self.log.info(
            "stopped listening; waiting up to {grace} for {count} open connection(s) to finish",
            grace=format_duration(grace),
            count=open_connections,
        )
        # systemd's TimeoutStopSec= may be shorter than the grace: ask for
        # the grace and time to close and flush the access log after it.
        self.notifier.extend_timeout(grace + STOP_MARGIN)
        drained = defer.gatherResults([f.when_empty() for f in factories])
        timer = self._reactor.callLater(grace, self._abort_all, factories)
        drained.addBoth(lambda result: timer.cancel() if timer.active() else None)
        return drained

    def _abort_all(self, factories: list[LimitedFactory]) -> None:
        count = sum(f.abort_all() for f in factories)
        self.log.warn(
            "closed {count} connection(s) still open after shutdown_grace ({grace})",
            count=count,
            grace=format_duration(self.settings.shutdown_grace),
        )


def make_application(
    settings: Settings,
    reactor: IReactorCore | None = None,
    inherited: list[activation.InheritedSocket] | None = None,
) -> Application:
    """
    The twistd application for C{settings}: logging to stdout at the
    configured level, notifying systemd when it is there, serving on the
    sockets systemd passed where they match a listener.
    """
    if reactor is None:
        from twisted.internet import reactor
    tune_malloc()
    defer_early_signals()
    if inherited is None:
        inherited = activation.inherited_sockets()
    application = Application("echod")
    daemon_log = DaemonLog(settings.log_level)
    application.setComponent(ILogObserver, daemon_log.observer)
    EchodService(settings, reactor, daemon_log, Notifier(reactor), inherited).setServiceParent(application)
    return application
