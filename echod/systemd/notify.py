"""
sd_notify(3): readiness, status, reload, stop and watchdog messages to systemd.

Messages go through the sdnotify package, which does nothing when there is no
C{NOTIFY_SOCKET}, so none of this needs to know whether systemd is there.
sdnotify has no watchdog or reload helpers; the strings are written here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

import sdnotify
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """
    How often to ping the watchdog, in seconds: half of C{WATCHDOG_USEC}, as
    sd_watchdog_enabled(3) advises; C{None} when the watchdog is off or meant
    for another process (C{WATCHDOG_PID}).
    """
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd wants it with RELOADING=1."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """
    Talks to the service manager. Status text is sent when it changes, and
    the watchdog is pinged from a reactor timer: a thread would keep pinging
    while the reactor hangs, which is what the watchdog is there to catch.
    """

    def __init__(self, clock: IReactorTime, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self._systemd = sdnotify.SystemdNotifier()
        self._clock = clock
        self._watchdog_interval = watchdog_interval(environ)
        self._status: str | None = None

    def send(self, *assignments: str) -> None:
        """Send one notification made of C{KEY=VALUE} lines."""
        self._systemd.notify("\n".join(assignments))

    def ready(self, status: str) -> None:
        """Startup or reload is complete."""
        self._status = status
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        """A reload has begun; L{ready} ends it."""
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self, status: str) -> None:
        """Shutdown has begun."""
        self._status = status
        self.send("STOPPING=1", f"STATUS={status}")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for C{seconds} more from now before systemd's start/stop/reload timeout kills us."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def status(self, status: str) -> None:
        """Set the status line C{systemctl status} shows, if it changed."""
        if status != self._status:
            self._status = status
            self.send(f"STATUS={status}")

    def start(self, status: Callable[[], str], every: float = 5.0) -> None:
        """Refresh the status from C{status()} every C{every} seconds, and feed the watchdog."""
        self._repeat(lambda: self.status(status()), every)
        if self._watchdog_interval is not None:
            self._repeat(lambda: self.send("WATCHDOG=1"), self._watchdog_interval)

    def _repeat(self, action: Callable[[], None], every: float) -> None:
        loop = LoopingCall(action)
        loop.clock = self._clock
        # Keeps running while connections drain at stop: the watchdog is fed
        # and the status shows progress until the reactor itself stops.
        loop.start(every, now=True)
