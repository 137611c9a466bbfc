"""
More than one core: echod@N.socket instances bind the same ports with
ReusePort and the kernel spreads connections across their daemons.
"""

from tests.system.container import Container
from tests.system.helpers import send, show, wait_for


def served(c: Container, unit: str) -> int:
    status = show(c, unit, "StatusText")
    return int(status.split("echo ", 1)[1].split(" open, ", 1)[1].split(" served", 1)[0])


def test_two_instances_share_the_ports_and_both_serve(installed: Container):
    c = installed
    c.run(["systemctl", "disable", "--now", "echod.socket", "echod.service"])
    c.run(["systemctl", "enable", "--now", "echod@1.socket", "echod@2.socket"])
    for unit in ("echod@1.socket", "echod@2.socket"):
        assert show(c, unit, "ActiveState") == "active"
    for i in range(60):
        assert send(c, 7, f"hello {i}") == f"hello {i}"
    assert send(c, 50007, "5 hello") == "hello"
    for unit in ("echod@1.service", "echod@2.service"):
        assert show(c, unit, "ActiveState") == "active", unit
        assert show(c, unit, "User") == "echod"

    def counts() -> tuple[int, int] | None:
        both = (served(c, "echod@1.service"), served(c, "echod@2.service"))
        return both if sum(both) == 60 else None

    # The status line is refreshed every few seconds; both instances took connections.
    both = wait_for("the instances to report 60 served connections", counts, timeout=15)
    assert min(both) > 0, both
