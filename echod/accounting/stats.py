"""
Counters kept per listener, read by the log, the status line and the metrics.

They are plain attributes bumped where things happen, never read on the data
path: whoever reports (the status line, a Prometheus scrape) reads them when
it reports.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from echod.units import format_size

#: The upper bounds (seconds) of the connection duration histogram's buckets:
#: from a one-reply echo on loopback (about a millisecond) to connections held
#: for the longest test runs; 5m is the default idle timeout.
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)


#: The reasons a datagram is dropped, named for the configuration key that
#: says so where there is one (the metrics' label, the warnings' words), and
#: the L{ListenerStats} counter of each.
DROP_REASONS = (
    ("blocked_source_ports", "dropped_port"),
    ("unanswerable_source", "dropped_address"),
    ("own_listener", "dropped_own"),
    ("datagram_rate_per_peer", "dropped_peer_rate"),
    ("datagram_rate", "dropped_datagram_rate"),
    ("byte_rate", "dropped_byte_rate"),
    ("send_buffer_full", "dropped_send_buffer"),
    ("receive_buffer_full", "dropped_kernel"),
)


@dataclass(slots=True)
class ListenerStats:
    """What one listener has done since the daemon started (or since it was first configured)."""

    active: int = 0
    accepted: int = 0
    #: Connections refused, in all and by reason (max_connections, file_descriptors, ...).
    refused: int = 0
    refused_by: dict[str, int] = field(default_factory=dict)
    #: Connections closed, by the access log's cause (client, idle-timeout, ...): every one Twisted
    #: handed over, also those a PROXY header never let in (bad-proxy-header, refused-...).
    closed: dict[str, int] = field(default_factory=dict)
    #: Closed connections by duration: a count per L{DURATION_BUCKETS} bucket (not cumulative),
    #: the last one for longer than the last bound; and their sum in seconds.
    durations: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    timed_out: int = 0
    protocol_errors: int = 0
    #: Connections closed at once, coming from outside trusted_proxies, and
    #: those closed for a bad or late PROXY header.
    untrusted_proxies: int = 0
    bad_proxy_headers: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    datagrams: int = 0
    #: Datagrams dropped, by reason: a blocked source port, a source no echo may go to
    #: (broadcast, multicast, unspecified), one of echod's own listeners ...
    dropped_port: int = 0
    dropped_address: int = 0
    dropped_own: int = 0
    #: ... over the per-peer, total datagram or byte rates, or the socket's send buffer full.
    dropped_peer_rate: int = 0
    dropped_datagram_rate: int = 0
    dropped_byte_rate: int = 0
    dropped_send_buffer: int = 0
    #: ... by the kernel, before echod saw them: the socket's receive buffer was full (SO_RXQ_OVFL).
    dropped_kernel: int = 0
    #: The receive buffer of the listener's socket, in bytes, as the kernel reports it (SO_RCVBUF).
    receive_buffer: int = 0

    def refuse(self, reason: str) -> None:
        """
        Count a connection refused for C{reason}: the limit that kept it out,
        named for its configuration key (max_connections, file_descriptors, ...).

        A reason, not a cause, on purpose: a refused connection was never
        served, so it has no close cause (client, idle-timeout, ... in
        L{close}); its reason is the metrics' C{reason} label, as the reason
        a datagram is dropped is (L{DROP_REASONS}), and the access log writes
        it as the cause C{refused-REASON}.
        """
        self.refused += 1
        self.refused_by[reason] = self.refused_by.get(reason, 0) + 1

    def close(self, cause: str, seconds: float) -> None:
        """Count an accepted connection that closed for C{cause} after C{seconds}."""
        closed = self.closed
        closed[cause] = closed.get(cause, 0) + 1
        self.durations[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.duration_sum += seconds

    @property
    def dropped_source(self) -> int:
        """Datagrams dropped for their source: a blocked port, or an address no echo may go to."""
        return self.dropped_port + self.dropped_address

    @property
    def dropped_rate(self) -> int:
        """Datagrams dropped over a rate limit, or because the send buffer was full."""
        return (
            self.dropped_peer_rate
            + self.dropped_datagram_rate
            + self.dropped_byte_rate
            + self.dropped_send_buffer
        )

    def stream_summary(self) -> str:
        """The counters of a TCP listener, for the status line."""
        text = f"{self.active} open, {self.accepted} served, {self.refused} refused"
        if self.timed_out:
            text += f", {self.timed_out} timed out"
        if self.protocol_errors:
            text += f", {self.protocol_errors} bad"
        if self.untrusted_proxies:
            text += f", {self.untrusted_proxies} from untrusted proxies"
        if self.bad_proxy_headers:
            text += f", {self.bad_proxy_headers} bad PROXY headers"
        return text

    def datagram_summary(self) -> str:
        """The counters of a UDP listener, for the status line."""
        dropped = self.dropped_source + self.dropped_own + self.dropped_rate
        text = f"{self.datagrams} echoed, {dropped} dropped"
        buffer = format_size(self.receive_buffer) if self.receive_buffer else None  # None: no socket yet
        if self.dropped_kernel:
            text += f", {self.dropped_kernel} dropped by the kernel"
            return f"{text} (receive buffer {buffer} full)" if buffer else text
        return f"{text}, receive buffer {buffer}" if buffer else text
