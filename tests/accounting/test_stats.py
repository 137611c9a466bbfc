"""
A listener's counters: refusals by reason, closes by cause and duration,
datagrams dropped by reason, and the status line's words for them.
"""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import CollectorRegistry, Histogram

from echod.accounting.stats import DROP_REASONS, DURATION_BUCKETS, ListenerStats


def test_refusals_count_in_all_and_by_reason():
    stats = ListenerStats()
    for reason in ("max_connections", "max_connections_per_peer", "max_connections", "file_descriptors"):
        stats.refuse(reason)
    assert stats.refused == 4
    assert stats.refused_by == {"max_connections": 2, "max_connections_per_peer": 1, "file_descriptors": 1}


def test_closes_count_by_cause_and_their_durations_add_up():
    stats = ListenerStats()
    stats.close("client", 0.5)
    stats.close("idle-timeout", 300.0)
    stats.close("client", 0.25)
    assert stats.closed == {"client": 2, "idle-timeout": 1}
    assert sum(stats.durations) == 3
    assert stats.duration_sum == pytest.approx(300.75)


def test_the_duration_buckets_are_prometheus_buckets_with_le_bounds():
    # A second implementation: prometheus_client's own histogram, fed the same durations;
    # its buckets are cumulative, ours a count each, the last one past the last bound.
    durations = [0, 0.001, 0.0010001, 0.3, 1.0, 59.99, 60.0, 3600.0, 3600.5, 86400.0]
    stats = ListenerStats()
    reference = Histogram("d", "", buckets=DURATION_BUCKETS, registry=CollectorRegistry())
    for seconds in durations:
        stats.close("client", seconds)
        reference.observe(seconds)
    cumulative = [
        sample.value
        for sample in reference.collect()[0].samples
        if sample.name == "d_bucket"  # one a bound, then +Inf
    ]
    ours = [sum(stats.durations[: i + 1]) for i in range(len(stats.durations))]
    assert ours == cumulative
    assert len(stats.durations) == len(DURATION_BUCKETS) + 1
    assert stats.duration_sum == pytest.approx(sum(durations))


def test_every_drop_reason_names_a_counter_and_the_sums_cover_them_all():
    fields = {field.name for field in dataclasses.fields(ListenerStats)}
    assert {counter for _, counter in DROP_REASONS} <= fields
    stats = ListenerStats(**{counter: 1 << i for i, (_, counter) in enumerate(DROP_REASONS)})
    assert stats.dropped_source == stats.dropped_port + stats.dropped_address == 0b11
    assert stats.dropped_rate == 0b1111000
    # Each of echod's own drops in exactly one of the three the status line adds: source, own, rate;
    # the kernel's (the last reason) it tells apart.
    echods = len(DROP_REASONS) - 1
    assert DROP_REASONS[-1] == ("receive_buffer_full", "dropped_kernel")
    assert stats.dropped_source + stats.dropped_own + stats.dropped_rate == (1 << echods) - 1


def test_a_udp_listeners_status_tells_the_kernels_drops_and_the_buffer_apart():
    stats = ListenerStats(datagrams=5, dropped_port=1)
    assert stats.datagram_summary() == "5 echoed, 1 dropped"  # before it has a socket
    stats.receive_buffer = 425984
    assert stats.datagram_summary() == "5 echoed, 1 dropped, receive buffer 416K"
    stats.dropped_kernel = 7
    assert (
        stats.datagram_summary() == "5 echoed, 1 dropped, 7 dropped by the kernel (receive buffer 416K full)"
    )


def test_a_tcp_listeners_status_names_only_what_happened():
    stats = ListenerStats(active=2, accepted=10)
    stats.refuse("max_connections")
    assert stats.stream_summary() == "2 open, 10 served, 1 refused"
    stats.timed_out, stats.protocol_errors, stats.untrusted_proxies, stats.bad_proxy_headers = 3, 4, 5, 6
    assert stats.stream_summary() == (
        "2 open, 10 served, 1 refused, 3 timed out, 4 bad, 5 from untrusted proxies, 6 bad PROXY headers"
    )


def test_a_udp_listeners_status_adds_every_drop():
    stats = ListenerStats(datagrams=7)
    assert stats.datagram_summary() == "7 echoed, 0 dropped"
    for _, counter in DROP_REASONS:
        setattr(stats, counter, getattr(stats, counter) + 1)
    # echod's own drops, and the kernel's apart.
    assert stats.datagram_summary() == f"7 echoed, {len(DROP_REASONS) - 1} dropped, 1 dropped by the kernel"


def test_each_listener_has_counters_of_its_own():
    first, second = ListenerStats(), ListenerStats()
    first.refuse("max_connections")
    first.close("client", 1.0)
    assert (second.refused_by, second.closed, sum(second.durations)) == ({}, {}, 0)
