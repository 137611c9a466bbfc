"""
What echod has done, as Prometheus metrics: a collector that reads the
counters echod keeps anyway (L{ListenerStats}, each factory's open
connections, the alerts) when Prometheus scrapes, so that no event pays for
the metrics twice.

Every metric is named C{echod_...} and carries the label C{listener}. A
listener's counters are exported under its name for as long as it is
configured, and never go back: a listener renamed, moved or switched to
another protocol on reload keeps its counts (they move with it), and a
name that comes back after its listener was removed goes on from where it
stopped, as Prometheus expects of a counter. The bytes of open connections
are counted as they go (the access log's C{out=} is settled only when a
connection closes, and may then come out lower, for a connection the server
cut): the exported total never goes below what it once said.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import twisted
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from echod import __version__
from echod._twisted import EchodProcessCollector
from echod.accounting.stats import DROP_REASONS, DURATION_BUCKETS, ListenerStats

#: Refusal reasons and close causes exported as 0 before the first one, so that
#: rate() and alerts see them from the start; any other that happens is added.
REFUSAL_REASONS = ("max_connections", "max_connections_per_peer", "file_descriptors")
CLOSE_CAUSES = ("client", "server", "idle-timeout", "bad-request", "reset", "error", "shutdown")


@dataclass(frozen=True)
class ListenerView:
    """One listener as a scrape sees it."""

    name: str
    protocol: str
    transport: str
    address: str
    #: The port its socket is bound to (the one it got, for port 0).
    port: int
    stats: ListenerStats
    #: Bytes received and sent, the open connections' included.
    received: int
    sent: int


@dataclass(frozen=True)
class DaemonView:
    """The daemon as a scrape sees it."""

    listeners: Sequence[ListenerView]
    #: Whether the last reload applied (True until one fails), and when one last did (Unix time).
    reload_successful: bool
    reload_success_time: float
    #: Standing alerts by kind (bind, reload, file_descriptors, ...): 0 once a kind's are cleared.
    alerts: Mapping[str, int] = field(default_factory=dict)


class _Series:
    """
    The counters exported under one listener name: they go on from their
    last values when another listener's counts come under that name, and
    never go back.
    """

    __slots__ = ("base", "last", "source")

    def __init__(self) -> None:
        self.source: ListenerStats | None = None
        self.base: dict[object, float] = {}
        self.last: dict[object, float] = {}

    def follow(self, source: ListenerStats) -> None:
        """Count from C{source} now; if that is new under this name, on top of what was said so far."""
        if source is not self.source:
            self.source = source
            self.base = dict(self.last)

    def counter(self, key: object, raw: float) -> float:
        value = self.base.get(key, 0) + raw
        last = self.last.get(key, 0)
        if value < last:
            value = last
        self.last[key] = value
        return value


class EchodCollector(Collector):
    """
    The C{echod_*} metrics, from C{read()}, called once per scrape in the
    reactor's thread: a L{DaemonView} of the daemon as it is then.
    """

    def __init__(self, read: Callable[[], DaemonView]) -> None:
        self._read = read
        self._series: dict[str, _Series] = {}
        self._build = {
            "version": __version__,
            "twisted": twisted.__version__,
            "python": platform.python_version(),
        }

    def collect(self) -> Iterator[Metric]:
        daemon = self._read()
        yield from self._daemon(daemon)
        listeners = list(daemon.listeners)
        for view in listeners:
            self._series.setdefault(view.name, _Series()).follow(view.stats)
        yield from self._listeners(listeners)
        yield from self._connections([v for v in listeners if v.transport == "tcp"])
        yield from self._datagrams([v for v in listeners if v.transport == "udp"])

    def _daemon(self, daemon: DaemonView) -> Iterator[Metric]:
        yield InfoMetricFamily(
            "echod_build", "echod's version, and the Twisted and Python it runs on.", self._build
        )
        yield GaugeMetricFamily(
            "echod_config_last_reload_successful",
            "Whether the last configuration reload applied (1), or failed and the previous one is kept (0).",
            1 if daemon.reload_successful else 0,
        )
        yield GaugeMetricFamily(
            "echod_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded or reloaded successfully (Unix time).",
            daemon.reload_success_time,
        )
        alerts = GaugeMetricFamily(
            "echod_alerts",
            "Problems standing now that an admin must act on, by kind (as the status line shows them).",
            labels=["kind"],
        )
        for kind, count in sorted(daemon.alerts.items()):
            alerts.add_metric([kind], count)
        yield alerts

    def _listeners(self, listeners: list[ListenerView]) -> Iterator[Metric]:
        info = InfoMetricFamily(
            "echod_listener", "Each configured listener.", labels=["listener", "protocol", "transport"]
        )
        received = CounterMetricFamily(
            "echod_received_bytes", "Payload bytes received from clients.", labels=["listener"]
        )
        sent = CounterMetricFamily(
            "echod_sent_bytes",
            "Payload bytes echoed: handed to the kernel, or for a connection the server cut, "
            "taken by the client.",
            labels=["listener"],
        )
        for view in listeners:
            series = self._series[view.name]
            info.add_metric(
                [view.name, view.protocol, view.transport],
                {"address": view.address, "port": str(view.port)},
            )
            received.add_metric([view.name], series.counter("received", view.received))
            sent.add_metric([view.name], series.counter("sent", view.sent))
        yield from (info, received, sent)

    def _connections(self, listeners: list[ListenerView]) -> Iterator[Metric]:
        label = ["listener"]
        accepted = CounterMetricFamily(
            "echod_connections_accepted",
            "Connections accepted (with proxy_protocol, once their PROXY header let them in).",
            labels=label,
        )
        refused = CounterMetricFamily(
            "echod_connections_refused",
            "Connections refused, by reason: a cap reached, no file descriptor left to accept them with, "
            "or not from trusted_proxies.",
            labels=["listener", "reason"],
        )
        closed = CounterMetricFamily(
            "echod_connections_closed",
            "Connections closed, by cause (the access log's closed=).",
            labels=["listener", "cause"],
        )
        open_now = GaugeMetricFamily("echod_connections_open", "Connections open now.", labels=label)
        timeouts = CounterMetricFamily(
            "echod_idle_timeouts", "Connections closed after idle_timeout without progress.", labels=label
        )
        bad = CounterMetricFamily(
            "echod_bad_requests", "Requests rejected as malformed (bytecount headers).", labels=label
        )
        durations = HistogramMetricFamily(
            "echod_connection_duration_seconds",
            "How long accepted connections lasted, observed as they close.",
            labels=label,
        )
        for view in listeners:
            stats, series = view.stats, self._series[view.name]
            name = view.name
            accepted.add_metric([name], series.counter("accepted", stats.accepted))
            refusals = dict(stats.refused_by)
            if stats.untrusted_proxies:
                # Closed as they came: not from a balancer listed in trusted_proxies.
                refusals["trusted_proxies"] = stats.untrusted_proxies
            for reason, count in _with_zeros(REFUSAL_REASONS, refusals):
                refused.add_metric([name, reason], series.counter(("refused", reason), count))
            for cause, count in _with_zeros(CLOSE_CAUSES, stats.closed):
                closed.add_metric([name, cause], series.counter(("closed", cause), count))
            open_now.add_metric([name], stats.active)
            timeouts.add_metric([name], series.counter("timeouts", stats.timed_out))
            bad.add_metric([name], series.counter("bad", stats.protocol_errors))
            buckets, total = [], 0
            for bound, count in zip((*DURATION_BUCKETS, float("inf")), stats.durations, strict=True):
                total += count
                buckets.append((_bound(bound), series.counter(("le", bound), total)))
            durations.add_metric([name], buckets, series.counter("duration_sum", stats.duration_sum))
        yield from (accepted, refused, closed, open_now, timeouts, bad, durations)

    def _datagrams(self, listeners: list[ListenerView]) -> Iterator[Metric]:
        echoed = CounterMetricFamily("echod_datagrams_echoed", "UDP datagrams echoed.", labels=["listener"])
        dropped = CounterMetricFamily(
            "echod_datagrams_dropped",
            "UDP datagrams not echoed, by reason: their source, a rate limit, a full send or receive buffer.",
            labels=["listener", "reason"],
        )
        buffer = GaugeMetricFamily(
            "echod_receive_buffer_bytes",
            "The receive buffer of a UDP listener's socket, as the kernel reports it (SO_RCVBUF).",
            labels=["listener"],
        )
        for view in listeners:
            stats, series = view.stats, self._series[view.name]
            echoed.add_metric([view.name], series.counter("datagrams", stats.datagrams))
            for reason, attribute in DROP_REASONS:
                dropped.add_metric(
                    [view.name, reason], series.counter(("dropped", reason), getattr(stats, attribute))
                )
            buffer.add_metric([view.name], stats.receive_buffer)
        yield from (echoed, dropped, buffer)


def _with_zeros(known: Iterable[str], counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """C{counts}, with 0 for each of C{known} it lacks: the known ones first, in their order."""
    return [(key, counts.get(key, 0)) for key in known] + [
        (key, count) for key, count in counts.items() if key not in known
    ]


def _bound(bound: float) -> str:
    """A bucket's upper bound as Prometheus writes it: C{0.005}, C{1.0}, C{+Inf}."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


def make_registry(read: Callable[[], DaemonView], proc: str = "/proc") -> CollectorRegistry:
    """A registry of echod's own (never the library's global one) with echod's and the process metrics."""
    registry = CollectorRegistry()
    registry.register(EchodCollector(read))
    EchodProcessCollector(proc=proc, registry=registry)
    return registry
