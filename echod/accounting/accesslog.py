"""
The access log: one line per connection, written in batches, reopened on
request so that logrotate can move the file away without losing or
repeating a line.

twistd's own log file cannot serve here: it rotates by itself, its SIGUSR1
renames the file rather than reopening it, and it does not append (see
twisted#3363), so external rotation either fights it or leaves holes.
"""

from __future__ import annotations

import os
import time
from functools import lru_cache

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from echod.addresses import format_peer

#: Lines are written at least this often (seconds) ...
FLUSH_INTERVAL = 1.0
#: ... or as soon as this many are waiting (some 50 KiB).
FLUSH_LINES = 512


@lru_cache(maxsize=4)
def _second(second: int) -> str:
    # Many connections end within the same second: format it once.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def format_entry(
    when: float,
    listener: str,
    peer: str,
    received: int,
    sent: int,
    duration: float,
    reason: str,
    via: str | None = None,
) -> str:
    """
    One access log line: UTC time, listener, peer, bytes each way, duration,
    why it closed, and, when a PROXY header named the peer, the proxy it came
    through (last, so that lines without it parse the same).
    """
    stamp = f"{_second(int(when))}.{int(when % 1 * 1000):03d}Z"
    line = f"{stamp} {listener} {peer} in={received} out={sent} duration={duration:.3f}s closed={reason}"
    return f"{line} via={via}\n" if via else line + "\n"


class AccessLog:
    """
    A buffered, append-only log file that can be reopened.

    Entries wait in memory, unformatted, for at most L{FLUSH_INTERVAL}
    seconds or L{FLUSH_LINES} entries, and are formatted together when
    written: formatting each as its connection closed cost a tenth of the
    connection rate, far more than the same work done in one batch (measured).
    L{reopen} first writes what is waiting to the file as it was opened (by
    then renamed by logrotate), then opens the path anew, so each line lands
    in exactly one file.
    """

    log = Logger()

    def __init__(self, path: str, clock: IReactorTime) -> None:
        """
        Open C{path} for appending.

        @raise OSError: if it cannot be opened.
        """
        self.path = path
        self._failing = False
        self._fd = self._open()
        self._pending: list[tuple] = []
        self._flusher = LoopingCall(self.flush)
        self._flusher.clock = clock
        self._flusher.start(FLUSH_INTERVAL, now=False)

    def _open(self) -> int:
        # O_APPEND, and each batch in one write(2): instances sharing the file
        # (echod@.service) never interleave inside a line.
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def log_connection(
        self,
        when: float,
        listener: str,
        peer: IAddress,
        received: int,
        sent: int,
        duration: float,
        cause: str,
        via: IAddress | None = None,
    ) -> None:
        """Queue the line of one connection; see L{format_entry}."""
        self._pending.append((when, listener, peer, received, sent, duration, cause, via))
        if len(self._pending) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        """Write every queued line to the file."""
        if not self._pending:
            return
        lines = len(self._pending)
        text = "".join(
            format_entry(
                when, listener, format_peer(peer), received, sent, duration, cause, via and format_peer(via)
            )
            for when, listener, peer, received, sent, duration, cause, via in self._pending
        )
        self._pending.clear()
        data = memoryview(text.encode("utf-8", "replace"))
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as e:
            # Dropped, not kept: a full disk must not also fill the memory.
            if not self._failing:
                self.log.error(
                    "access log {path}: {error}; dropping lines until it works again",
                    path=self.path,
                    error=e.strerror or e,
                )
            self._failing = True
            return
        if self._failing:
            self._failing = False
            self.log.info("access log {path} written again ({lines} lines)", path=self.path, lines=lines)

    def reopen(self) -> None:
        """
        Finish with the current file and open the path again.

        @raise OSError: if the path cannot be opened; the old file stays in use.
        """
        self.flush()
        new = self._open()
        old, self._fd = self._fd, new
        os.close(old)

    def close(self) -> None:
        """Write what is queued and close the file."""
        if self._flusher.running:
            self._flusher.stop()
        self.flush()
        os.close(self._fd)
