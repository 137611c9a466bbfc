"""
The signals echod handles itself once running, and what they do before that.
"""

import signal

#: Reload (SIGHUP) and reopen the access log (SIGUSR1): handled by the service once it runs.
HANDLED_WHEN_RUNNING = (signal.SIGHUP, signal.SIGUSR1)

#: Those of L{HANDLED_WHEN_RUNNING} that arrived before the service handled them.
_pending: set[int] = set()


def _remember(signum: int, frame: object) -> None:
    _pending.add(signum)


def defer_early_signals() -> None:
    """
    Until the service installs its handlers, remember L{HANDLED_WHEN_RUNNING}
    signals for it (L{take_pending}) instead of dying of them.

    Their default action kills the process, and a reload or a log reopen may
    arrive while echod starts (logrotate cannot know it is restarting).
    Ignoring them instead lost a reopen that came after the access log was
    opened: the daemon went on writing to the rotated file.
    """
    for signum in HANDLED_WHEN_RUNNING:
        signal.signal(signum, _remember)


def take_pending(signum: int) -> bool:
    """Whether C{signum} arrived while deferred; it is forgotten once asked for."""
    if signum in _pending:
        _pending.discard(signum)
        return True
    return False
