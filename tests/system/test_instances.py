"""
More than one core: echod@N.socket instances bind the same ports with
ReusePort and the kernel spreads connections across their daemons. The
package looks after them as it does after echod.service: upgrades restart
them onto the new code, removal stops them, purge forgets them.
"""

from tests.system.container import Container
from tests.system.helpers import (
    Traffic,
    apt,
    assert_none_refused,
    echod_processes,
    install,
    refused,
    send,
    show,
    wait_for,
)

INSTANCES = ("echod@1.service", "echod@2.service")


def served(c: Container, unit: str) -> int:
    status = show(c, unit, "StatusText")
    return int(status.split("echo ", 1)[1].split(" open, ", 1)[1].split(" served", 1)[0])


def switch_to_instances(c: Container) -> None:
    """What README and echod(8) tell an admin to run."""
    c.run(["systemctl", "disable", "--now", "echod.socket", "echod.service"])
    c.run(["systemctl", "enable", "--now", "echod@1.socket", "echod@2.socket"])
    for unit in ("echod@1.socket", "echod@2.socket"):
        assert show(c, unit, "ActiveState") == "active"


def pids(c: Container) -> list[int]:
    """Start both instances' daemons (each on its first connection) and return their PIDs."""

    def both() -> list[int] | None:
        send(c, 7, "wake")
        found = [int(show(c, unit, "MainPID")) for unit in INSTANCES]
        return found if all(found) else None

    return wait_for("both instances to run", both, timeout=20)


def test_two_instances_share_the_ports_and_both_serve(installed: Container):
    c = installed
    switch_to_instances(c)
    for i in range(60):
        assert send(c, 7, f"hello {i}") == f"hello {i}"
    assert send(c, 50007, "5 hello") == "hello"
    for unit in INSTANCES:
        assert show(c, unit, "ActiveState") == "active", unit
        assert show(c, unit, "User") == "echod"

    def counts() -> tuple[int, int] | None:
        both = (served(c, INSTANCES[0]), served(c, INSTANCES[1]))
        return both if sum(both) == 60 else None

    # The status line is refreshed every few seconds; both instances took connections.
    both = wait_for("the instances to report 60 served connections", counts, timeout=15)
    assert min(both) > 0, both


def test_upgrade_restarts_the_instances_onto_the_new_code_refusing_nobody(
    installed: Container, upgrade_deb: str
):
    c = installed
    switch_to_instances(c)
    before = pids(c)
    sockets_since = [show(c, f"echod@{i}.socket", "ActiveEnterTimestampMonotonic") for i in (1, 2)]
    traffic = Traffic(c, 6)
    try:
        install(c, upgrade_deb)
    finally:
        counts = traffic.result()
    assert_none_refused(counts)
    after = [int(show(c, unit, "MainPID")) for unit in INSTANCES]
    assert all(after) and not set(after) & set(before), (before, after)
    assert [show(c, f"echod@{i}.socket", "ActiveEnterTimestampMonotonic") for i in (1, 2)] == sockets_since


def test_remove_stops_the_instances_and_purge_forgets_them(installed: Container):
    c = installed
    switch_to_instances(c)
    pids(c)
    apt(c, "remove", "echod")
    wait_for("no echod process", lambda: not echod_processes(c), timeout=10)
    assert refused(c, 7) and refused(c, 50007)
    active = c.run(["systemctl", "list-units", "--no-legend", "--plain", "--state=active", "echod*"])
    assert active.stdout.strip() == ""
    apt(c, "purge", "echod")
    links = c.run(["find", "/etc/systemd/system", "-name", "echod*"]).stdout
    assert links == ""
    assert c.run(["systemctl", "--failed", "--no-legend", "--plain"]).stdout.strip() == ""
