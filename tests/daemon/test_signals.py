"""
The signals echod handles once running, when they arrive before that: a
real process goes through twistd's start-up steps one by one, with a signal
sent in between.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: twistd's order: privilegedStartService (sockets, access log), then startService (handlers).
START_UP_WITH_A_ROTATION_IN_BETWEEN = textwrap.dedent(
    """
    import os, signal, sys
    from twisted.application.service import IService
    from twisted.internet import reactor
    from echod.config import parse
    from echod.daemon.service import make_application

    log = sys.argv[1]
    listener = "[listener:echo]\\nprotocol = echo\\naddress = 127.0.0.1\\nport = 0\\n"
    settings = parse(f"[echod]\\naccess_log = {log}\\n{listener}")
    service = list(IService(make_application(settings, reactor, inherited=[])))[0]
    service.privilegedStartService()  # opens the access log
    os.rename(log, log + ".1")  # logrotate moves it away ...
    os.kill(os.getpid(), signal.SIGUSR1)  # ... and asks for a reopen, before the handler is installed
    service.startService()

    def check():
        service.access_log.log_connection(0.0, "echo", "peer", 1, 1, 0.0, "client")
        service.access_log.flush()
        reactor.stop()

    reactor.callWhenRunning(check)
    reactor.run()
    """
)


def test_a_reopen_asked_for_while_starting_is_not_lost(tmp_path):
    log = tmp_path / "access.log"
    subprocess.run(
        [sys.executable, "-c", START_UP_WITH_A_ROTATION_IN_BETWEEN, str(log)],
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert (tmp_path / "access.log.1").read_text() == ""
    assert log.read_text().split()[1:3] == ["echo", "peer"]


def test_signals_before_the_service_handles_them_are_remembered_once():
    import signal

    from echod.daemon.signals import HANDLED_WHEN_RUNNING, defer_early_signals, take_pending

    previous = {signum: signal.getsignal(signum) for signum in HANDLED_WHEN_RUNNING}
    try:
        defer_early_signals()
        assert not take_pending(signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGHUP)  # would kill the process by default
        os.kill(os.getpid(), signal.SIGHUP)
        assert take_pending(signal.SIGHUP)
        assert not take_pending(signal.SIGHUP)  # twice asked for, done once
        assert not take_pending(signal.SIGUSR1)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
