"""
Connections Twisted drops for want of file descriptors: the events its TCP
port logs (as tcp.Port.doRead words them, 22.4 to 26.10), counted and told once.
The real exhaustion of a real daemon is in tests/integration/test_metrics.py.
"""

from __future__ import annotations

import resource

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from echod.accounting.alerts import Alerts
from echod.accounting.descriptors import ALERT, DescriptorShortage
from echod.accounting.stats import ListenerStats
from echod.accounting.throttle import INTERVAL


class Owner:
    def __init__(self, name: str = "echo") -> None:
        self.name = name
        self.stats = ListenerStats()
        self.access_log = Log()


class Log:
    def __init__(self) -> None:
        self.lines: list[tuple] = []

    def log_connection(self, *entry) -> None:
        self.lines.append(entry)


def dropped(host: str = "127.0.0.1", port: int = 40000) -> dict:
    return {"log_format": "EMFILE recovery: Closed socket from {address}", "address": (host, port)}


RECOVERY = [
    {"log_format": "EMFILE encountered; releasing reserved file descriptor."},
    {"log_format": "Re-reserving EMFILE recovery file descriptor."},
]


def warnings(events) -> list[str]:
    return [e["log_format"].format(**e) for e in events if e["log_level"] == LogLevel.warn]


def test_each_dropped_connection_is_a_refusal_and_only_the_first_is_told():
    clock, alerts, owner = Clock(), Alerts(), Owner()
    shortage = DescriptorShortage(clock, alerts)
    forwarded: list[dict] = []
    observe = shortage.observer(owner, forwarded.append)
    with capturedLogs() as events:
        for n in range(137):
            for event in [RECOVERY[0], dropped(port=40000 + n), RECOVERY[1]]:
                observe(event)
    assert owner.stats.refused == owner.stats.refused_by["file_descriptors"] == 137
    assert [entry[-1] for entry in owner.access_log.lines] == ["refused-file_descriptors"] * 137
    assert forwarded == []  # none of Twisted's 3 x 137 lines
    (warning,) = warnings(events)
    assert warning.startswith("echo: out of file descriptors (limit ")
    assert "dropping new connections; raise LimitNOFILE=" in warning
    assert alerts.summaries() == [ALERT]
    assert shortage.ongoing


def test_what_follows_is_summed_up_and_a_quiet_interval_ends_the_shortage():
    clock, alerts, owner = Clock(), Alerts(), Owner()
    shortage = DescriptorShortage(clock, alerts)
    observe = shortage.observer(owner, lambda event: None)
    with capturedLogs() as events:
        for _ in range(5):
            observe(dropped())
        clock.advance(INTERVAL)
        assert warnings(events)[-1] == (
            "... and 4 more connections dropped or not accepted for want of file descriptors "
            f"from 127.0.0.1 in the last {INTERVAL:.3g}s"
        )
        assert shortage.ongoing and alerts.summaries() == [ALERT]
        clock.advance(INTERVAL)
    assert not shortage.ongoing
    assert alerts.summaries() == []
    assert alerts.counts() == {"file_descriptors": 0}
    assert events[-1]["log_format"].startswith("file descriptors available again")
    with capturedLogs() as events:
        observe(dropped())
    assert len(warnings(events)) == 1  # a new shortage is told again


def test_a_connection_left_waiting_for_want_of_descriptors_is_told_not_counted():
    clock, owner = Clock(), Owner()
    shortage = DescriptorShortage(clock, Alerts())
    observe = shortage.observer(owner, lambda event: None)
    with capturedLogs() as events:
        for _ in range(1000):  # Twisted logs it on every turn of the loop while it waits
            observe(
                {"log_format": "Could not accept new connection ({acceptError})", "acceptError": "ENFILE"}
            )
    assert owner.stats.refused == 0
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert warnings(events) == [
        f"echo: out of file descriptors (limit {limit}): cannot accept new connections (ENFILE); "
        "raise LimitNOFILE= (or ulimit -n) or lower max_connections"
    ]


def test_other_events_of_the_port_are_passed_on_as_they_were():
    forwarded: list[dict] = []
    observe = DescriptorShortage(Clock()).observer(Owner(), forwarded.append)
    aborted = {"log_format": "Could not accept new connection ({acceptError})", "acceptError": "ECONNABORTED"}
    other = {"log_format": "something else {x}", "x": 1}
    observe(aborted)
    observe(other)
    assert forwarded == [aborted, other]


def test_the_owner_is_read_at_each_drop_so_a_rename_and_a_new_access_log_apply():
    owner = Owner("before")
    observe = DescriptorShortage(Clock()).observer(owner, lambda event: None)
    observe(dropped())
    owner.name, owner.access_log = "after", Log()
    observe(dropped("::1", 5))
    (entry,) = owner.access_log.lines
    assert entry[1] == "after"
    assert (entry[2].host, entry[2].port, entry[2].type) == ("::1", 5, "TCP")


def test_installed_on_a_twisted_port_its_events_go_through_the_shortage():
    from twisted.internet import tcp

    port = tcp.Port(0, None)
    before = port._logger
    owner = Owner()
    DescriptorShortage(Clock()).install(port, owner)
    assert port._logger.namespace == before.namespace
    port._logger.info("EMFILE recovery: Closed socket from {address}", address=("127.0.0.1", 1))
    assert owner.stats.refused_by == {"file_descriptors": 1}
