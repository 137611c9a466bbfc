import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import ctypes, sys
from echod.daemon.memory import tune_malloc
print(tune_malloc())
"""


def run_probe(**env: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT), **env},
    ).stdout.strip()


@pytest.mark.skipif(ctypes.util.find_library("c") is None, reason="no C library to tune")
def test_thresholds_are_set_on_glibc():
    assert run_probe() == "True"


def test_the_environment_wins():
    assert run_probe(MALLOC_TRIM_THRESHOLD_="131072") == "False"
    assert run_probe(MALLOC_MMAP_THRESHOLD_="131072") == "False"
