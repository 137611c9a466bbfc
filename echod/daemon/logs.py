"""
Where the daemon's own log events go, and how they look there.

On a terminal: a timestamp and the level. Under systemd, when stdout is the
journal (C{JOURNAL_STREAM}, see systemd.exec(5)): the sd-daemon(3) C{<N>}
priority prefix and no timestamp, so that C{journalctl -p warning} filters by
the real severity instead of reading everything as "info".
"""

from __future__ import annotations

import os
import sys
from typing import IO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    formatTime,
)
from zope.interface import implementer

#: sd-daemon(3) priorities for Twisted's log levels.
PRIORITIES = {
    LogLevel.debug: 7,
    LogLevel.info: 6,
    LogLevel.warn: 4,
    LogLevel.error: 3,
    LogLevel.critical: 2,
}

#: The configuration's names for the levels.
LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
}


def is_journal(stream: IO[str]) -> bool:
    """Whether C{stream} is the journal stream systemd connected us to."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in expected.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


@implementer(ILogObserver)
class LineObserver:
    """
    Writes each event as one line (tracebacks indented beneath it) to a text
    stream, flushing as it goes so that lines arrive as they happen.
    """

    def __init__(self, stream: IO[str], journal: bool) -> None:
        self._stream = stream
        self._journal = journal

    def __call__(self, event: dict) -> None:
        level = event.get("log_level", LogLevel.info)
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text = f"{text}\n{failure.getTraceback()}".rstrip()
        if self._journal:
            prefix = f"<{PRIORITIES.get(level, 6)}>"
            line = "\n".join(prefix + part for part in text.splitlines() or [""])
        else:
            stamp = formatTime(event.get("log_time"), timeFormat="%Y-%m-%d %H:%M:%S%z")
            line = f"{stamp} {level.name:<8} {text}"
        try:
            self._stream.write(line + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken stdout must not take the daemon down


class DaemonLog:
    """
    The daemon's log observer with its level filter, kept as one object so
    that the level can be changed while running.
    """

    def __init__(self, level: str, stream: IO[str] | None = None) -> None:
        stream = stream if stream is not None else sys.stdout
        self._predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
        self.observer = FilteringLogObserver(LineObserver(stream, is_journal(stream)), [self._predicate])

    def set_level(self, level: str) -> None:
        """Show events of C{level} and above from now on."""
        self._predicate.setLogLevelForNamespace("", LEVELS[level])
