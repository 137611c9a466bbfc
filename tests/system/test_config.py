"""
Changing /etc/echod.conf on an installed system, the ways echod(8) documents:
`systemctl reload echod` for limits, `systemctl daemon-reload && systemctl
restart echod.socket` for ports; and what a broken file does to each.
"""

import time

from tests.system.container import Container
from tests.system.helpers import CLIENT, edit_config, journal, main_pid, refused, reset, send, show, wait_for

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
    # Each start is a Python start-up (about a second on Python 3.13).
    assert time.monotonic() - started < 20
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


def test_an_invalid_config_never_opens_a_port_the_admin_closed(installed: Container):
    c = installed
    # The admin closes port 7 by deleting its listener, and makes a typo elsewhere.
    edit_config(c, "/^\\[listener:echo\\]$/,/^idle_timeout/d", BREAK)
    assert "[listener:echo]" not in c.read("/etc/echod.conf")
    done = c.sh(APPLY_PORTS, check=False)
    assert done.returncode != 0
    # Closed: neither the port the admin removed nor the one of the broken file.
    assert refused(c, 7) and refused(c, 50007)
    assert show(c, "echod.socket", "ActiveState") == "failed"
    # Visibly: the socket's status and journal say why and what to run.
    assert "is invalid (see: echod check-config)" in show(c, "echod.socket", "Description")
    socket_log = c.run(["journalctl", "--no-pager", "-o", "cat", "-u", "echod.socket"]).stdout
    assert "'lots' is not a whole number" in socket_log, socket_log
    # A reboot would do the same: the generator wrote no network address.
    drop_in = c.read("/run/systemd/generator/echod.socket.d/50-echod-conf.conf")
    assert [line for line in drop_in.splitlines() if line.startswith("Listen")] == [
        "ListenStream=",
        "ListenDatagram=",
        "ListenStream=/run/%n.config-invalid",
    ]
    # Fixed, the documented command opens exactly what the file asks for.
    edit_config(c, "s/^max_connections = lots$/max_connections = 1024/")
    c.sh(f"systemctl reset-failed echod.socket echod.service; {APPLY_PORTS}")
    wait_for("echod to serve bytecount", lambda: serving(c, 50007))
    assert send(c, 50007, "2 ok") == "ok"
    assert refused(c, 7)


def test_a_port_moved_then_a_plain_restart_resets_clients_of_the_old_port(installed: Container):
    c = installed
    edit_config(c, "s/^port = 50007$/port = 50008/")
    c.run(["systemctl", "restart", "echod"])  # the natural command, without daemon-reload
    # echod binds 50008 itself (unprivileged); systemd still listens on 50007 for it.
    wait_for("bytecount on 50008", lambda: not refused(c, 50008))
    assert send(c, 50008, "3 new") == "new"
    # Clients of the old port fail at once instead of hanging in a backlog nobody reads.
    started = time.monotonic()
    assert reset(c, 50007)
    assert time.monotonic() - started < 5
    # The status line and the journal give the exact command.
    assert f"run '{APPLY_PORTS}'" in show(c, "echod.service", "StatusText")
    wait_for("the reset warning", lambda: f"run: {APPLY_PORTS}" in journal(c, "-p", "warning"))
    c.sh(APPLY_PORTS)
    wait_for("echod to serve on 50008 from systemd's socket", lambda: serving(c, 50008))
    assert refused(c, 50007)
    assert "problem(s)" not in show(c, "echod.service", "StatusText")


def test_a_privileged_port_moved_then_a_plain_restart_fails_once_and_says_what_to_run(installed: Container):
    c = installed
    edit_config(c, "s/^port = 7$/port = 13/")
    assert c.run(["systemctl", "restart", "echod"], check=False).returncode != 0
    assert show(c, "echod.service", "ExecMainStatus") == "77"
    assert f"systemd's sockets do not include it; to make them follow the configuration: {APPLY_PORTS}" in (
        journal(c, "-p", "err")
    )
    # No restart storm: the error is not retried ("failed", not "activating
    # (auto-restart)"), and the socket stays.
    assert (show(c, "echod.service", "ActiveState"), show(c, "echod.service", "SubState")) == (
        "failed",
        "failed",
    )
    assert show(c, "echod.service", "NRestarts") == "0"
    assert show(c, "echod.socket", "ActiveState") == "active"
    c.sh(APPLY_PORTS)
    assert send(c, 13, "thirteen") == "thirteen"  # the connection starts the service
    assert show(c, "echod.service", "ActiveState") == "active"
    assert refused(c, 7)
