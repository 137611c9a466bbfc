"""
logrotate during traffic: the shipped /etc/logrotate.d/echod renames the
access log and sends SIGUSR1 to the daemon, which reopens it; no line is lost
and the daemon keeps running.
"""

from tests.system.container import Container
from tests.system.helpers import Traffic, assert_none_refused, edit_config, main_pid, send, show, wait_for

LOG = "/var/log/echod/access.log"


def lines(c: Container, path: str) -> int:
    done = c.run(["sh", "-c", f'if [ -e "{path}" ]; then zcat -f "{path}"; fi'])
    return len(done.stdout.splitlines())


def test_logrotate_loses_no_access_log_line(installed: Container):
    c = installed
    edit_config(c, f"s|^access_log =.*|access_log = {LOG}|")
    c.run(["systemctl", "restart", "echod"])
    pid = main_pid(c)
    traffic = Traffic(c, 6, ("echo:7",))
    try:
        # Rotate once the log has lines: the traffic is flowing and being logged.
        wait_for("lines in the access log", lambda: lines(c, LOG) > 0, timeout=10)
        rotated = c.run(["logrotate", "-v", "-f", "/etc/logrotate.d/echod"])
    finally:
        counts = traffic.result()
    assert_none_refused(counts)
    assert "running postrotate script" in rotated.stderr + rotated.stdout
    assert c.run(["test", "-s", f"{LOG}.1"], check=False).returncode == 0, "nothing was rotated"
    # Reopened on SIGUSR1: connections after the rotation went to a new access.log.
    wait_for("lines in the new access.log", lambda: lines(c, LOG) > 0, timeout=5)
    # Every connection is in one of the two files once it has closed.
    wait_for(
        f"{counts['ok']} lines in access.log and access.log.1",
        lambda: lines(c, LOG) + lines(c, f"{LOG}.1") >= counts["ok"],
        timeout=10,
    )
    assert lines(c, LOG) + lines(c, f"{LOG}.1") == counts["ok"]
    # SIGUSR1 reopened the log; it did not kill or restart the daemon.
    assert main_pid(c) == pid
    assert show(c, "echod.service", "NRestarts") == "0"


def test_logrotate_with_only_instances_running_signals_exactly_them(installed: Container):
    c = installed
    edit_config(c, f"s|^access_log =.*|access_log = {LOG}|")
    c.run(["systemctl", "disable", "--now", "echod.socket", "echod.service"])
    c.run(["systemctl", "enable", "--now", "echod@1.socket", "echod@2.socket"])
    for i in range(20):
        assert send(c, 7, f"before {i}") == f"before {i}"
    wait_for("20 lines in the access log", lambda: lines(c, LOG) >= 20, timeout=10)
    rotated = c.run(["logrotate", "-v", "-f", "/etc/logrotate.d/echod"])
    output = rotated.stdout + rotated.stderr
    assert "error" not in output.lower(), output
    # Rotated as the daemon's user, in the daemon's directory.
    owner = c.run(["stat", "-c", "%U:%G", f"{LOG}.1"]).stdout.strip()
    assert owner == "echod:echod"
    # Both instances reopened: every connection after the rotation is in the new file.
    for i in range(20):
        assert send(c, 7, f"after {i}") == f"after {i}"
    wait_for("20 lines in the new access.log", lambda: lines(c, LOG) >= 20, timeout=10)
    assert lines(c, LOG) == 20 and lines(c, f"{LOG}.1") == 20
    for unit in ("echod@1.service", "echod@2.service"):
        assert show(c, unit, "NRestarts") == "0"
