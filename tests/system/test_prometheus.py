"""
echod's metrics in a booted system, scraped by the release's own Prometheus
server (Debian's prometheus package) through a scrape configuration, and
read back through Prometheus' HTTP API after known traffic.
"""

from __future__ import annotations

import json
import urllib.parse

from tests.system.container import Container
from tests.system.helpers import CLIENT, edit_config, send, wait_for

METRICS = "127.0.0.1:9207"
PROMETHEUS_CONFIG = f"""\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - /etc/prometheus/echod-alerts.yml
scrape_configs:
  - job_name: echod
    static_configs:
      - targets: ["{METRICS}"]
"""


def get(c: Container, url: str) -> str | None:
    done = c.run(["python3", CLIENT, "get", url], check=False)
    return done.stdout if done.returncode == 0 else None


def query(c: Container, expression: str) -> list[dict]:
    """The result of an instant query of Prometheus' HTTP API (empty while it has no answer)."""
    body = get(c, "http://127.0.0.1:9090/api/v1/query?query=" + urllib.parse.quote(expression))
    if body is None:
        return []
    answer = json.loads(body)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def value(c: Container, expression: str) -> float | None:
    result = query(c, expression)
    return float(result[0]["value"][1]) if len(result) == 1 else None


def test_prometheus_scrapes_echod_and_its_api_gives_back_the_traffic(installed: Container):
    c = installed
    # Turned on by a reload: echod binds the port itself, no socket unit restarted.
    text = edit_config(c, rf"s|^#metrics = .*|metrics = {METRICS}|")
    assert f"\nmetrics = {METRICS}\n" in text
    c.run(["systemctl", "reload", "echod"])
    wait_for("echod's metrics", lambda: get(c, f"http://{METRICS}/metrics"))
    c.write("/etc/prometheus/prometheus.yml", PROMETHEUS_CONFIG)
    c.run(["cp", "/usr/share/doc/echod/examples/prometheus-alerts.yml", "/etc/prometheus/echod-alerts.yml"])
    checked = c.run(["promtool", "check", "config", "/etc/prometheus/prometheus.yml"])
    assert "SUCCESS" in checked.stdout + checked.stderr
    c.run(["systemctl", "restart", "prometheus"])
    wait_for("Prometheus to scrape echod", lambda: value(c, 'up{job="echod"}') == 1, timeout=60)

    for n in range(7):
        assert send(c, 7, f"hello {n}") == f"hello {n}"
    assert send(c, 50007, "5 world") == "world"
    assert send(c, 50007, "x") == ""

    def accepted() -> float | None:
        return value(c, 'echod_connections_accepted_total{job="echod", listener="echo"}')

    wait_for("7 echo connections in Prometheus", lambda: accepted() == 7, timeout=60)
    assert value(c, 'echod_received_bytes_total{job="echod", listener="echo"}') == sum(
        len(f"hello {n}") for n in range(7)
    )
    wait_for(
        "a bad request in Prometheus",
        lambda: value(c, 'echod_bad_requests_total{job="echod", listener="bytecount"}') == 1,
        timeout=60,
    )
    assert value(c, 'sum(echod_connections_closed_total{job="echod", listener="echo"})') == 7
    assert value(c, 'echod_config_last_reload_successful{job="echod"}') == 1
    # The process metrics, though the unit hides /proc/stat (ProcSubset=pid).
    started = value(c, 'process_start_time_seconds{job="echod"}')
    assert started is not None and started > 1.6e9
    (info,) = query(c, 'echod_build_info{job="echod"}')
    assert info["metric"]["version"]
    # The shipped alerting rules are loaded and healthy, and none fires.
    rules = json.loads(get(c, "http://127.0.0.1:9090/api/v1/rules"))["data"]["groups"]
    assert [rule["name"] for group in rules for rule in group["rules"]] == [
        "EchodDown",
        "EchodReloadFailed",
        "EchodProblemStanding",
        "EchodRefusalsRising",
        "EchodOutOfFileDescriptors",
    ]
    assert {rule["health"] for group in rules for rule in group["rules"]} == {"ok"}
    assert query(c, 'ALERTS{alertstate="firing"}') == []
