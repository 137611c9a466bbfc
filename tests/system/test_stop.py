"""
A graceful stop longer than systemd's stop timeout: echod asks systemd for
its shutdown_grace (EXTEND_TIMEOUT_USEC) instead of being killed mid-drain,
and the access log keeps every line.
"""

import time

from tests.system.container import Container
from tests.system.helpers import edit_config, show, wait_for

LOG = "/var/log/echod/access.log"
GRACE = 8
STOP_TIMEOUT = 3


def test_a_grace_longer_than_the_stop_timeout_is_honoured(installed: Container):
    c = installed
    edit_config(c, f"s/^shutdown_grace = .*/shutdown_grace = {GRACE}s/")
    c.run(["mkdir", "-p", "/run/systemd/system/echod.service.d"])
    c.write("/run/systemd/system/echod.service.d/stop.conf", f"[Service]\nTimeoutStopSec={STOP_TIMEOUT}s\n")
    c.sh("systemctl daemon-reload && systemctl restart echod")
    # A client that keeps its connection open, without closing, through the stop.
    holder = c.popen(["python3", "-c", HOLD, "7"])
    assert holder.stdout.readline() == "connected\n", holder.stderr.read()
    wait_for("the connection to be open", lambda: "echo 1 open" in show(c, "echod.service", "StatusText"))
    started = time.monotonic()
    c.run(["systemctl", "stop", "echod.service"], timeout=60)
    took = time.monotonic() - started
    holder.communicate(timeout=30)
    assert show(c, "echod.service", "Result") == "success"  # not "timeout"
    assert took >= GRACE - 1, f"stopped after {took:.1f}s, before the grace of {GRACE}s ran out"
    # The connection cut at the end of the grace has its line.
    assert "closed=shutdown" in c.read(LOG)
    said = c.run(["journalctl", "--no-pager", "-o", "cat", "-u", "echod.service"]).stdout
    assert "closed 1 connection(s) still open after shutdown_grace" in said
    assert "timed out" not in said.lower() and "SIGKILL" not in said


# Connects to 127.0.0.1:PORT, says so, then reads until the server closes.
HOLD = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"hold")
assert s.recv(4) == b"hold"
print("connected", flush=True)
while s.recv(65536):
    pass
"""
