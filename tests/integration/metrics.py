"""Scraping a real echod's metrics over HTTP, as Prometheus does."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.daemon import Daemon

#: The line echod logs once its metrics port listens.
SERVING = r"metrics: serving Prometheus metrics at (http://\S+/metrics)"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def metrics_url(daemon: Daemon, after: int = 0) -> str:
    """Where C{daemon} says it serves its metrics (the last time it says so, from line C{after} on)."""
    daemon.wait_for(SERVING)
    lines = [line for line in daemon.output.splitlines()[after:] if "metrics: serving" in line]
    return lines[-1].rsplit(" at ", 1)[1]


def fetch(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def parse(text: str) -> Samples:
    """Every sample: (name, sorted labels) -> value."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def scrape(url: str) -> Samples:
    return parse(fetch(url))


def get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of C{name} over every sample having C{labels} (and any others)."""
    return sum(
        value
        for (sample, found), value in samples.items()
        if sample == name and labels.items() <= dict(found).items()
    )


def listener_info(samples: Samples, listener: str) -> list[dict[str, str]]:
    """The labels but C{listener} of each C{echod_listener_info} sample of C{listener} that says 1."""
    return [
        {key: value for key, value in labels if key != "listener"}
        for (name, labels), value in samples.items()
        if name == "echod_listener_info" and ("listener", listener) in labels and value == 1
    ]


def until(url: str, check: Callable[[Samples], object], timeout: float = 20) -> Samples:
    """
    Scrape C{url} until C{check} holds of the samples (a scrape that fails is
    tried again); fail with the last ones after C{timeout}.
    """
    deadline = time.monotonic() + timeout
    samples: Samples | OSError = {}
    while True:
        try:
            samples = scrape(url)
        except OSError as e:  # a failed scrape (echod out of file descriptors, say): try again
            samples = e
        else:
            if check(samples):
                return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"no scrape of {url} satisfied the check in {timeout}s; last: {samples}")
        time.sleep(0.1)  # the next scrape: a poll interval, not a synchronisation


def refused(url: str) -> bool:
    """Whether nothing listens at C{url} any more."""
    try:
        fetch(url, timeout=5)
    except urllib.error.URLError as e:
        return isinstance(e.reason, ConnectionRefusedError)
    return False
