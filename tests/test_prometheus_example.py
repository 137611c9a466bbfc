"""
examples/prometheus.yml: Prometheus accepts it (promtool), for the single
service and, edited as its comments say, for echod@N instances; its targets
are where echod serves the metrics of the shipped file's commented-out line.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from echod.config import parse
from tests.prometheus_example import PATH, for_instances

ROOT = Path(__file__).resolve().parent.parent
PROMTOOL = shutil.which("promtool")


def shipped_metrics() -> str:
    (line,) = re.findall(r"(?m)^#(metrics = .*)$", (ROOT / "etc" / "echod.conf").read_text())
    return line


def targets(text: str) -> list[tuple[str, str]]:
    return re.findall(r'(?m)^ +- targets: \["([^"]+)"\]\n +labels: \{unit: ([^}]+)\}', text)


def test_the_example_scrapes_where_the_service_and_each_instance_serve():
    text = PATH.read_text()
    metrics = f"[echod]\n{shipped_metrics()}\n[listener:echo]\nprotocol = echo\nport = 7\n"
    for unit_targets in (targets(text), targets(for_instances(text))):
        for target, unit in unit_targets:
            instance = unit.removeprefix("echod@").removesuffix(".service") if "@" in unit else None
            address, port = parse(metrics, instance=instance).metrics
            assert target == f"{address}:{port}", unit
    assert [unit for _, unit in targets(for_instances(text))] == ["echod@1.service", "echod@2.service"]


@pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is missing: apt install prometheus (make system-packages does)"
)
@pytest.mark.parametrize("variant", ["echod.service", "echod@N"])
def test_promtool_accepts_the_example(tmp_path, variant):
    rules = tmp_path / "echod-alerts.yml"
    shutil.copy(ROOT / "examples" / "prometheus-alerts.yml", rules)
    text = PATH.read_text().replace("/etc/prometheus/echod-alerts.yml", str(rules))
    config = tmp_path / "prometheus.yml"
    config.write_text(for_instances(text) if variant == "echod@N" else text)
    checked = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout + checked.stderr
