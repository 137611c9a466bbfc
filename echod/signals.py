"""
The signals echod handles itself once running, and what they do before that.
"""

import signal

#: Reload (SIGHUP) and reopen the access log (SIGUSR1): handled by the service once it runs.
HANDLED_WHEN_RUNNING = (signal.SIGHUP, signal.SIGUSR1)


def ignore_early_signals() -> None:
    """
    Ignore L{HANDLED_WHEN_RUNNING} until the service installs its handlers.

    Their default action kills the process, and a reload or a log reopen may
    arrive while echod starts (logrotate cannot know it is restarting).
    """
    for signum in HANDLED_WHEN_RUNNING:
        signal.signal(signum, signal.SIG_IGN)
