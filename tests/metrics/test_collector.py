"""The metrics collector against known counters, read back with the client library's own parser."""

from __future__ import annotations

import platform
import time

import twisted
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from echod import __version__
from echod.accounting.stats import ListenerStats
from echod.metrics.collector import DaemonView, ListenerView, make_registry


def samples(registry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value, parsed from the text format."""
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


class Daemon:
    """A daemon's view that a test changes between scrapes."""

    def __init__(self, *listeners: ListenerView) -> None:
        self.listeners = list(listeners)
        self.reload_successful = True
        self.reload_success_time = 1_700_000_000.0
        self.alerts: dict[str, int] = {}

    def view(self) -> DaemonView:
        return DaemonView(self.listeners, self.reload_successful, self.reload_success_time, self.alerts)


def tcp(name: str, stats: ListenerStats, received: int | None = None, sent: int | None = None, **kw):
    settings = {"protocol": "echo", "transport": "tcp", "address": "::", "port": 7, **kw}
    return ListenerView(
        name,
        stats=stats,
        received=stats.bytes_received if received is None else received,
        sent=stats.bytes_sent if sent is None else sent,
        **settings,
    )


def test_each_counter_is_exported_as_it_stands():
    stats = ListenerStats(accepted=5, active=1, timed_out=1, protocol_errors=2, bytes_received=700)
    stats.refuse("max_connections")
    stats.refuse("max_connections_per_peer")
    stats.refuse("max_connections_per_peer")
    stats.refuse("file_descriptors")
    for cause, seconds in (("client", 0.0005), ("client", 0.003), ("idle-timeout", 301.0), ("reset", 7200.0)):
        stats.close(cause, seconds)
    daemon = Daemon(tcp("bc", stats, received=800, sent=650, protocol="bytecount", port=50007))
    found = samples(make_registry(daemon.view))
    assert value(found, "echod_connections_accepted_total", listener="bc") == 5
    assert value(found, "echod_connections_open", listener="bc") == 1
    assert value(found, "echod_connections_refused_total", listener="bc", reason="max_connections") == 1
    assert (
        value(found, "echod_connections_refused_total", listener="bc", reason="max_connections_per_peer") == 2
    )
    assert value(found, "echod_connections_refused_total", listener="bc", reason="file_descriptors") == 1
    assert value(found, "echod_connections_closed_total", listener="bc", cause="client") == 2
    assert value(found, "echod_connections_closed_total", listener="bc", cause="idle-timeout") == 1
    assert value(found, "echod_connections_closed_total", listener="bc", cause="shutdown") == 0
    assert value(found, "echod_idle_timeouts_total", listener="bc") == 1
    assert value(found, "echod_bad_requests_total", listener="bc") == 2
    assert value(found, "echod_received_bytes_total", listener="bc") == 800
    assert value(found, "echod_sent_bytes_total", listener="bc") == 650
    buckets = {
        labels: count
        for (name, labels), count in found.items()
        if name == "echod_connection_duration_seconds_bucket"
    }
    le = {dict(labels)["le"]: count for labels, count in buckets.items()}
    assert (le["0.001"], le["0.0025"], le["0.005"], le["300.0"], le["900.0"], le["3600.0"], le["+Inf"]) == (
        1,
        1,
        2,
        2,
        3,
        3,
        4,
    )
    assert value(found, "echod_connection_duration_seconds_count", listener="bc") == 4
    assert value(found, "echod_connection_duration_seconds_sum", listener="bc") == 0.0035 + 301 + 7200
    assert value(
        found,
        "echod_listener_info",
        listener="bc",
        protocol="bytecount",
        transport="tcp",
        address="::",
        port="50007",
    )


def test_a_cause_or_reason_not_known_beforehand_is_exported_too():
    stats = ListenerStats()
    stats.close("untrusted-proxy", 0.01)
    stats.refuse("some-new-reason")
    stats.untrusted_proxies = 2
    found = samples(make_registry(Daemon(tcp("echo", stats)).view))
    assert value(found, "echod_connections_refused_total", listener="echo", reason="trusted_proxies") == 2
    assert value(found, "echod_connections_closed_total", listener="echo", cause="untrusted-proxy") == 1
    assert value(found, "echod_connections_refused_total", listener="echo", reason="some-new-reason") == 1


def test_udp_listeners_export_datagrams_by_reason_and_no_connections():
    stats = ListenerStats(
        datagrams=10,
        bytes_received=2000,
        bytes_sent=1000,
        dropped_port=1,
        dropped_address=2,
        dropped_own=3,
        dropped_peer_rate=4,
        dropped_datagram_rate=5,
        dropped_byte_rate=6,
        dropped_send_buffer=7,
    )
    found = samples(make_registry(Daemon(tcp("u", stats, transport="udp")).view))
    assert value(found, "echod_datagrams_echoed_total", listener="u") == 10
    dropped = {
        reason: value(found, "echod_datagrams_dropped_total", listener="u", reason=reason)
        for reason in (
            "blocked_source_ports",
            "unanswerable_source",
            "own_listener",
            "datagram_rate_per_peer",
            "datagram_rate",
            "byte_rate",
            "send_buffer_full",
        )
    }
    assert list(dropped.values()) == [1, 2, 3, 4, 5, 6, 7]
    assert value(found, "echod_received_bytes_total", listener="u") == 2000
    assert not [key for key in found if key[0].startswith("echod_connection")]


def test_daemon_wide_metrics():
    daemon = Daemon()
    daemon.alerts = {"bind": 2, "reload": 0}
    daemon.reload_successful = False
    found = samples(make_registry(daemon.view))
    build = {"version": __version__, "twisted": twisted.__version__, "python": platform.python_version()}
    assert value(found, "echod_build_info", **build) == 1
    assert value(found, "echod_config_last_reload_successful") == 0
    assert value(found, "echod_config_last_reload_success_timestamp_seconds") == 1_700_000_000
    assert value(found, "echod_alerts", kind="bind") == 2
    assert value(found, "echod_alerts", kind="reload") == 0


def test_process_metrics_come_from_the_client_library():
    found = samples(make_registry(Daemon().view))
    assert value(found, "process_open_fds") >= 3
    assert value(found, "process_resident_memory_bytes") > 1 << 20
    assert abs(value(found, "process_start_time_seconds") - time.time()) < 86400 * 365


def test_counters_under_a_name_never_go_back_when_another_listener_takes_it():
    first = ListenerStats(accepted=10)
    first.close("client", 1.0)
    daemon = Daemon(tcp("echo", first))
    registry = make_registry(daemon.view)
    assert value(samples(registry), "echod_connections_accepted_total", listener="echo") == 10
    # The listener is removed: its series go.
    daemon.listeners = []
    assert not [key for key in samples(registry) if dict(key[1]).get("listener") == "echo"]
    # A new listener of that name, counting from zero, goes on from where the name stopped.
    second = ListenerStats(accepted=3)
    second.close("client", 1.0)
    daemon.listeners = [tcp("echo", second)]
    found = samples(registry)
    assert value(found, "echod_connections_accepted_total", listener="echo") == 13
    assert value(found, "echod_connections_closed_total", listener="echo", cause="client") == 2
    assert value(found, "echod_connection_duration_seconds_count", listener="echo") == 2


def test_a_renamed_listener_takes_its_counts_to_its_new_name():
    stats = ListenerStats(accepted=4)
    daemon = Daemon(tcp("old", stats))
    registry = make_registry(daemon.view)
    samples(registry)
    daemon.listeners = [tcp("new", stats)]
    found = samples(registry)
    assert value(found, "echod_connections_accepted_total", listener="new") == 4
    assert ("echod_connections_accepted_total", (("listener", "old"),)) not in found


def test_bytes_never_go_back_when_an_open_connections_count_is_settled_lower():
    # An open connection's 1,000 bytes sent are counted as they go; the server then cuts it and only
    # 600 were taken, which is what its close settles on.
    stats = ListenerStats()
    daemon = Daemon(tcp("echo", stats, received=1000, sent=1000))
    registry = make_registry(daemon.view)
    assert value(samples(registry), "echod_sent_bytes_total", listener="echo") == 1000
    stats.bytes_sent = 600
    daemon.listeners = [tcp("echo", stats)]
    assert value(samples(registry), "echod_sent_bytes_total", listener="echo") == 1000
    stats.bytes_sent = 1600
    daemon.listeners = [tcp("echo", stats)]
    assert value(samples(registry), "echod_sent_bytes_total", listener="echo") == 1600


def test_openmetrics_exposition_parses_too():
    stats = ListenerStats(accepted=2)
    stats.close("client", 0.002)
    registry = make_registry(Daemon(tcp("echo", stats)).view)
    families = {family.name: family for family in parse_openmetrics(generate_openmetrics(registry).decode())}
    assert families["echod_build"].type == "info"
    assert families["echod_connections_accepted"].samples[0].value == 2
    assert families["echod_connection_duration_seconds"].type == "histogram"
