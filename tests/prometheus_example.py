"""The shipped Prometheus configuration (examples/prometheus.yml), as an admin edits it."""

from __future__ import annotations

import re
from pathlib import Path

PATH = Path(__file__).resolve().parent.parent / "examples" / "prometheus.yml"


def for_instances(text: str) -> str:
    """
    The example changed as its comments say for the echod@1 and echod@2
    instances: the single service's target taken out, the instances' put in.
    """
    single = '      - targets: ["127.0.0.1:9207"]\n        labels: {unit: echod.service}\n'
    assert single in text, "the example's echod.service target changed: change this too"
    text = text.replace(single, "")
    instances = re.sub(r"(?m)^      # (- targets|  labels)", r"      \1", text)
    assert instances.count("- targets") == 2, instances
    return instances
