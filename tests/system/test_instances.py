"""
More than one core: echod@N.socket instances bind the same ports with
ReusePort and the kernel spreads connections across their daemons. The
package looks after them as it does after echod.service: upgrades restart
them onto the new code, removal stops them, purge forgets them.
"""

import json

from tests.prometheus_example import for_instances
from tests.system.container import Container
from tests.system.helpers import (
    CLIENT,
    Traffic,
    apt,
    assert_none_refused,
    echod_processes,
    edit_config,
    install,
    refused,
    send,
    show,
    wait_for,
)
from tests.system.test_prometheus import get, query, value

INSTANCES = ("echod@1.service", "echod@2.service")
#: Where each instance serves its metrics for the shipped file's line, 127.0.0.1:9207: the port plus N.
INSTANCE_METRICS = {"echod@1.service": "127.0.0.1:9208", "echod@2.service": "127.0.0.1:9209"}


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


def accepted(c: Container, target: str) -> float:
    """echod_connections_accepted_total of the echo listener, scraped straight from C{target}."""
    done = c.run(["python3", CLIENT, "get", f"http://{target}/metrics"])
    (line,) = [
        line
        for line in done.stdout.splitlines()
        if line.startswith('echod_connections_accepted_total{listener="echo"}')
    ]
    return float(line.rsplit(" ", 1)[1])


def test_each_instance_serves_its_own_metrics_and_prometheus_scrapes_both(installed: Container):
    c = installed
    # The shipped line, uncommented: echod.service's port, 9207; the instances' are 9208 and 9209.
    edit_config(c, r"s|^#metrics = 127.0.0.1:9207$|metrics = 127.0.0.1:9207|")
    switch_to_instances(c)
    pids(c)
    for target in INSTANCE_METRICS.values():
        wait_for(f"metrics at {target}", lambda target=target: get(c, f"http://{target}/metrics"))
    # The shipped example, edited as its comments say for two instances.
    example = c.read("/usr/share/doc/echod/examples/prometheus.yml")
    c.write("/etc/prometheus/prometheus.yml", for_instances(example).replace("interval: 15s", "interval: 1s"))
    c.run(["cp", "/usr/share/doc/echod/examples/prometheus-alerts.yml", "/etc/prometheus/echod-alerts.yml"])
    checked = c.run(["promtool", "check", "config", "/etc/prometheus/prometheus.yml"])
    assert "SUCCESS" in checked.stdout + checked.stderr
    c.run(["systemctl", "restart", "prometheus"])
    for unit, target in INSTANCE_METRICS.items():
        wait_for(
            f"Prometheus to scrape {unit}",
            lambda unit=unit: value(c, f'up{{job="echod", unit="{unit}"}}') == 1,
            timeout=60,
        )
        (up,) = query(c, f'up{{job="echod", unit="{unit}"}}')
        assert up["metric"]["instance"] == target

    before = sum(accepted(c, target) for target in INSTANCE_METRICS.values())
    for i in range(30):
        assert send(c, 7, f"hello {i}") == f"hello {i}"
    # A reload of an instance (its ExecReload checks the file as that instance) keeps its metrics.
    c.run(["systemctl", "reload", "echod@1.service"])
    assert show(c, "echod@1.service", "ActiveState") == "active"
    assert get(c, f"http://{INSTANCE_METRICS['echod@1.service']}/metrics") is not None
    direct = {unit: accepted(c, target) for unit, target in INSTANCE_METRICS.items()}
    assert sum(direct.values()) == before + 30, direct
    for unit, count in direct.items():
        wait_for(
            f"{unit}'s own count in Prometheus",
            lambda unit=unit, count=count: (
                value(c, f'echod_connections_accepted_total{{job="echod", unit="{unit}", listener="echo"}}')
                == count
            ),
            timeout=60,
        )
    assert value(c, 'echod_config_last_reload_successful{job="echod", unit="echod@1.service"}') == 1
    rules = json.loads(get(c, "http://127.0.0.1:9090/api/v1/rules"))["data"]["groups"]
    assert {rule["health"] for group in rules for rule in group["rules"]} == {"ok"}
    assert query(c, 'ALERTS{alertstate="firing"}') == []
