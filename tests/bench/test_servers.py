"""
The echod the benchmark's UDP scenarios run (bench/servers.py): the shipped configuration with its
UDP listener served, as `make run RUN_UDP=yes` serves it, and nothing changed but what the benchmark
must change: the rates raised out of the way, and a free port on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from echod.config import load
from tests.test_make_run import run_config

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def servers(tmp_path, monkeypatch):
    """bench/servers.py, writing its configurations into C{tmp_path}."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # the benchmark's modules import each other by name
    module = importlib.import_module("servers")
    monkeypatch.setattr(module, "BUILD", tmp_path)
    return module


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_the_udp_echod_is_the_shipped_udp_listener_with_only_its_rates_raised(servers, tmp_path):
    bench = load(str(servers.echod_config(name="udp.conf", udp=True)))
    shipped = run_config(tmp_path / "run", "RUN_UDP=yes")
    (ours,) = [each for each in bench.listeners if each.transport == "udp"]
    (theirs,) = [each for each in shipped.listeners if each.transport == "udp"]
    assert (ours.address, ours.port) == ("127.0.0.1", 0)
    rates = ("datagram_rate_per_peer", "datagram_rate", "byte_rate")
    assert [getattr(ours, key) for key in rates] == [10_000_000, 10_000_000, 1 << 40]
    unchanged = {key: getattr(theirs, key) for key in ("address", "port", *rates)}
    assert dataclasses.replace(ours, **unchanged) == theirs
    assert theirs.blocked_source_ports == ((0, 1023),)  # a protection the benchmark keeps on
    tcp = load(str(servers.echod_config(name="tcp.conf")))
    assert tuple(each for each in bench.listeners if each.transport == "tcp") == tcp.listeners


def test_a_udp_listener_already_served_is_kept_as_it_is_with_its_rates_raised_once(servers):
    served = servers.with_udp_listener((ROOT / "etc" / "echod.conf").read_text())
    assert "\n[listener:udp-echo]\n" in served
    assert servers.with_udp_listener(served) == served
    for key, value in servers.UDP_RATES.items():
        assert served.count(f"\n{key} = ") == 1 and f"\n{key} = {value}\n" in served


def test_echod_from_another_tree_runs_that_trees_code_not_the_checkouts(servers, tmp_path):
    # As "echod at REF" runs: its tree on PYTHONPATH, the checkout the working directory.
    tree = tmp_path / "baseline"
    shutil.copytree(ROOT / "echod", tree / "echod", ignore=shutil.ignore_patterns("__pycache__"))
    init = tree / "echod" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "0.0.0+baseline-'))
    kind = servers.echod_kind("echod-base", "echod at REF", tmp_path / "unused.conf", pythonpath=str(tree))
    argv = [*kind.argv[: kind.argv.index("run")], "--version"]
    env = {**os.environ, "PYTHONPATH": kind.pythonpath}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert done.stdout.startswith("echod 0.0.0+baseline-"), done.stdout
