"""
The service watchdog: a daemon that stops answering is killed and restarted.

The shipped WatchdogSec is 30s; a runtime drop-in lowers it to 2s here so
that the test takes seconds.
"""

import time

from tests.system.container import Container
from tests.system.helpers import journal, main_pid, send, show, wait_for

WATCHDOG_SEC = 2


def test_a_stopped_daemon_is_restarted_by_the_watchdog(installed: Container):
    c = installed
    assert show(c, "echod.service", "WatchdogUSec") == "30s"
    c.run(["mkdir", "-p", "/run/systemd/system/echod.service.d"])
    c.write("/run/systemd/system/echod.service.d/watchdog.conf", f"[Service]\nWatchdogSec={WATCHDOG_SEC}s\n")
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "restart", "echod"])
    assert show(c, "echod.service", "WatchdogUSec") == f"{WATCHDOG_SEC}s"
    # Fed in time, it keeps running past several watchdog periods.
    pid = main_pid(c)
    time.sleep(2.5 * WATCHDOG_SEC)
    assert main_pid(c) == pid and show(c, "echod.service", "NRestarts") == "0"

    stopped = time.monotonic()
    c.run(["systemctl", "kill", "--kill-whom=main", "--signal=SIGSTOP", "echod"])
    wait_for(
        "a new echod process",
        lambda: main_pid(c) not in (0, pid) and show(c, "echod.service", "ActiveState") == "active",
        timeout=WATCHDOG_SEC + 10,
    )
    took = time.monotonic() - stopped
    assert took < WATCHDOG_SEC + 5, f"restarted {took:.1f}s after it stopped"
    assert show(c, "echod.service", "NRestarts") == "1"
    assert "Watchdog timeout" in journal(c)
    assert send(c, 7, "again") == "again"
    assert send(c, 50007, "5 again") == "again"
