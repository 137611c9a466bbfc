"""
The sandbox on each release: what the unit refuses stays refused, and a
refused system call is reported in the journal instead of killing echod
with SIGSYS and no word (as happened on Debian 13, where Python 3.13's pdb
pulled in readline, whose terminal set-up calls setfsuid()).
"""

from tests.system.container import Container
from tests.system.helpers import journal, send, show

DROP_IN = "/etc/systemd/system/echod.service.d/refuse.conf"


def test_the_daemon_never_loads_readline(shared_installed: Container):
    c = shared_installed
    assert send(c, 7, "up") == "up"
    pid = show(c, "echod.service", "MainPID")
    maps = c.read(f"/proc/{pid}/maps")
    assert "readline" not in maps and "libncurses" not in maps and "libtinfo" not in maps, maps


def test_a_refused_system_call_is_reported_not_fatal(installed: Container):
    c = installed
    # Force one: the call that creates echod's event loop.
    c.run(["mkdir", "-p", DROP_IN.rsplit("/", 1)[0]])
    c.write(DROP_IN, "[Service]\nSystemCallFilter=~epoll_create epoll_create1\n")
    c.run(["systemctl", "daemon-reload"])
    assert c.run(["systemctl", "restart", "echod.service"], check=False).returncode != 0
    assert show(c, "echod.service", "Result") == "exit-code"  # not "signal"
    assert show(c, "echod.service", "ExecMainCode") == "1"  # CLD_EXITED, not killed
    said = journal(c)
    assert "PermissionError: [Errno 1] Operation not permitted" in said, said
    assert "epoll" in said, said
    assert "status=31/SYS" not in said
    c.run(["rm", DROP_IN])
    c.sh("systemctl daemon-reload && systemctl reset-failed echod.service && systemctl restart echod")
    assert send(c, 7, "back") == "back"
