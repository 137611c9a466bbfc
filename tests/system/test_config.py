"""
Changing /etc/echod.conf on an installed system, the ways echod(8) documents:
`systemctl reload echod` for limits, `systemctl daemon-reload && systemctl
restart echod.socket` for ports; and what a broken file does to each.
"""

import time

from tests.system.container import Container
from tests.system.helpers import CLIENT, edit_config, journal, main_pid, refused, send, show, wait_for

APPLY_PORTS = "systemctl daemon-reload && systemctl restart echod.socket"
BREAK = r"s/^max_connections = 1024$/max_connections = lots/"


def serving(c: Container, port: int) -> bool:
    return show(c, "echod.service", "ActiveState") == "active" and not refused(c, port)


def test_port_and_limit_change_applied_the_documented_way(installed: Container):
    c = installed
    edit_config(c, "s/^port = 50007$/port = 50070/", "s/^max_message_size = 16M$/max_message_size = 1K/")
    c.sh(APPLY_PORTS)
    wait_for("echod to serve on the new port", lambda: serving(c, 50070))
    assert send(c, 50070, "5 hello") == "hello"
    assert refused(c, 50007)
    assert send(c, 7, "still") == "still"
    drop_in = c.read("/run/systemd/generator/echod.socket.d/50-echod-conf.conf")
    assert "ListenStream=[::]:50070\n" in drop_in and ":50007" not in drop_in
    # The new limit: 1K of payload is fine, one byte more is refused with a warning.
    assert send(c, 50070, "1024 " + "x" * 1024) == "x" * 1024
    assert send(c, 50070, "1025 " + "x" * 1025) == ""
    wait_for("the size warning", lambda: "max_message_size" in journal(c, "-p", "warning"))
    # The daemon serves the sockets systemd passed it, and says nothing is amiss.
    assert "socket from systemd" in journal(c, "--since", "-1min")
    assert "problem(s)" not in show(c, "echod.service", "StatusText")


def test_reload_applies_a_limit_without_restarting(installed: Container):
    c = installed
    pid = main_pid(c)
    edit_config(c, "s/^max_message_size = 16M$/max_message_size = 4/")
    c.run(["systemctl", "reload", "echod"])
    assert main_pid(c) == pid
    assert send(c, 50007, "4 four") == "four"
    assert send(c, 50007, "5 fives") == ""


def test_reload_with_a_broken_config_fails_and_keeps_serving(installed: Container):
    c = installed
    pid = main_pid(c)
    edit_config(c, BREAK)
    done = c.run(["systemctl", "reload", "echod"], check=False)
    assert done.returncode != 0
    assert "failed" in done.stderr
    assert show(c, "echod.service", "ActiveState") == "active"
    assert main_pid(c) == pid
    assert send(c, 7, "alive") == "alive"
    assert send(c, 50007, "5 alive") == "alive"
    errors = journal(c, "-p", "err")
    assert "configuration error: /etc/echod.conf:" in errors and "'lots' is not a whole number" in errors


def test_restart_with_a_broken_config_fails_fast_without_a_restart_loop(installed: Container):
    c = installed
    edit_config(c, BREAK)
    started = time.monotonic()
    done = c.run(["systemctl", "restart", "echod"], check=False)
    assert done.returncode != 0
    assert time.monotonic() - started < 10, "the configuration error must stop the start at once"
    assert show(c, "echod.service", "ActiveState") == "failed"
    assert show(c, "echod.service", "ExecMainStatus") == "78"
    assert "'lots' is not a whole number" in journal(c, "-p", "err")
    time.sleep(3)  # longer than RestartSec: a restart would have happened by now
    assert show(c, "echod.service", "NRestarts") == "0"
    assert show(c, "echod.service", "ActiveState") == "failed"
    # Fixed, it starts again.
    edit_config(c, "s/^max_connections = lots$/max_connections = 1024/")
    c.run(["systemctl", "restart", "echod"])
    assert send(c, 7, "back") == "back"


def test_clients_of_a_broken_config_cause_a_bounded_number_of_starts(installed: Container):
    c = installed
    edit_config(c, BREAK)
    assert c.run(["systemctl", "restart", "echod"], check=False).returncode != 0
    # A client connecting now makes the socket start the service again and
    # again, up to the service's start limit; then the socket gives up and
    # the port refuses connections instead of hanging them.
    started = time.monotonic()
    c.run(["python3", CLIENT, "send", "7", "x"], check=False, timeout=30)
    assert time.monotonic() - started < 10
    wait_for("the socket to give up", lambda: show(c, "echod.socket", "ActiveState") == "failed", timeout=10)
    assert show(c, "echod.socket", "Result") == "service-start-limit-hit"
    assert refused(c, 7)
    attempts = journal(c).count("[listener:echo] max_connections: 'lots'")
    assert attempts <= 1 + int(show(c, "echod.service", "StartLimitBurst"))
    # Fixed, echod(8)'s recovery brings both back.
    edit_config(c, "s/^max_connections = lots$/max_connections = 1024/")
    c.sh("systemctl reset-failed echod.service echod.socket && systemctl restart echod")
    assert show(c, "echod.socket", "ActiveState") == "active"
    assert send(c, 7, "back") == "back"
