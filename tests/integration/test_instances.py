"""
echod@N instances, as their units run them but without systemd: several
echod processes reading one file, sharing its echo port (reuse_port), each
told its instance in $ECHOD_INSTANCE as echod@.service does. Every one
serves its own metrics at the configured port plus its number, across
reloads; a scrape of each counts exactly the connections that instance
served, and together all that were made.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error

import pytest

from echod.config import EX_CONFIG
from tests.integration.clients import echo
from tests.integration.daemon import Daemon, environment
from tests.integration.metrics import SERVING, fetch, scrape, total
from tests.integration.systemd import free_port

#: What systemd/echod@.service sets to the instance's name (%i).
INSTANCE_ENV = "ECHOD_INSTANCE"


def free_run(length: int) -> int:
    """A port P such that P to P + C{length} - 1 are all free now, on 127.0.0.1."""
    for _ in range(100):
        base = free_port()
        try:
            for port in range(base, base + length):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError(f"no {length} free ports in a row")


def config(metrics: int, echo_port: int) -> str:
    return (
        f"[echod]\nmetrics = 127.0.0.1:{metrics}\n"
        f"[listener:echo]\nprotocol = echo\naddress = 127.0.0.1\nport = {echo_port}\nreuse_port = yes\n"
    )


@pytest.fixture
def instances(tmp_path):
    """Start echod as the given instances of one configuration; killed afterwards."""
    started: list[Daemon] = []

    def start(text: str, *names: str | None) -> list[Daemon]:
        path = tmp_path / "echod.conf"
        path.write_text(text)
        daemons = []
        for name in names:
            env = environment(**({INSTANCE_ENV: name} if name is not None else {}))
            daemon = Daemon(path, env=env)
            started.append(daemon)
            daemons.append(daemon.start())
        return [daemon.wait_ready() for daemon in daemons]

    yield start
    for daemon in started:
        daemon.kill()


def serving_at(daemon: Daemon, nth: int = 1) -> str:
    return daemon.wait_for(SERVING, nth=nth).group(1)


def accepted(url: str) -> float:
    return total(scrape(url), "echod_connections_accepted_total", listener="echo")


def test_two_instances_each_serve_their_own_metrics_at_the_port_plus_their_number(instances):
    base, port = free_run(3), free_port()
    single, first, second = instances(config(base, port), None, "1", "2")
    urls = [serving_at(daemon) for daemon in (single, first, second)]
    assert urls == [f"http://127.0.0.1:{base + n}/metrics" for n in range(3)]
    single.stop()  # echod.service and the instances do not run together: this one only showed the base
    for i in range(40):
        assert echo(port, b"hello %d" % i) == b"hello %d" % i
    # Each scrape is its own process's: the kernel spread the connections, and
    # the two counts add up to every connection made (the same process scraped
    # twice would count them all twice).
    counts = [accepted(url) for url in urls[1:]]
    assert sum(counts) == 40 and min(counts) > 0, counts
    first.stop()
    with pytest.raises(urllib.error.URLError):
        fetch(urls[1], timeout=5)
    assert accepted(urls[2]) == counts[1]  # the other instance serves on


def test_a_reload_moves_each_instances_metrics_by_the_same_rule(instances):
    base, moved, port = free_run(3), free_run(3), free_port()
    daemons = instances(config(base, port), "1", "2")
    for daemon in daemons:
        serving_at(daemon)
    (daemons[0].config_path).write_text(config(moved, port))
    for daemon in daemons:
        daemon.send_signal(signal.SIGHUP)
    for n, daemon in enumerate(daemons, start=1):
        assert serving_at(daemon, nth=2) == f"http://127.0.0.1:{moved + n}/metrics"
        assert accepted(f"http://127.0.0.1:{moved + n}/metrics") == 0
        deadline = time.monotonic() + 10
        while True:  # the old port is closed in a later turn of the loop
            try:
                fetch(f"http://127.0.0.1:{base + n}/metrics", timeout=2)
            except urllib.error.URLError:
                break
            assert time.monotonic() < deadline, "the old metrics port still answers"
            time.sleep(0.05)  # polling for the close


def test_with_metrics_on_an_instance_that_is_no_number_does_not_start_and_says_why(tmp_path):
    path = tmp_path / "echod.conf"
    path.write_text(config(9207, free_port()))
    daemon = Daemon(path, env=environment(**{INSTANCE_ENV: "web"})).start()
    assert daemon.process.wait(30) == EX_CONFIG
    daemon.wait_for_end()
    assert "echod@web cannot serve metrics: an instance serves them at the port of metrics" in daemon.output


def test_check_config_as_an_instances_unit_runs_it_shows_that_instances_metrics(tmp_path):
    path = tmp_path / "echod.conf"
    path.write_text(config(9207, 7007))
    command = [sys.executable, "-m", "echod", "check-config", "-c", str(path)]
    single = subprocess.run(command, env=environment(), capture_output=True, text=True, check=True)
    assert (
        "metrics=http://127.0.0.1:9207/metrics (echod@N: port 9207 + N, e.g. 127.0.0.1:9208 for echod@1)"
        in (single.stdout)
    )
    second = subprocess.run(command, env=environment(**{INSTANCE_ENV: "2"}), capture_output=True, text=True)
    assert "metrics=http://127.0.0.1:9209/metrics (echod@2)" in second.stdout, second.stdout + second.stderr
    web = subprocess.run(command, env=environment(**{INSTANCE_ENV: "web"}), capture_output=True, text=True)
    assert web.returncode == EX_CONFIG
    assert "[echod] metrics: echod@web cannot serve metrics" in web.stderr
