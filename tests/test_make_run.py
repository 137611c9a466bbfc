"""
`make run`'s configuration: the shipped file with the echo port moved, and
the UDP echo turned on as README says (`make run RUN_UDP=yes`).
"""

import shutil
import subprocess
from pathlib import Path

import pytest

from echod.config import load

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def run_config(directory: Path, *variables: str):
    """The configuration `make run` would serve with C{variables}, made in C{directory}."""
    subprocess.run(
        ["make", "-s", "-C", str(ROOT), f"RUN_DIR={directory}", *variables, f"{directory}/echod.conf"],
        check=True,
        capture_output=True,
    )
    return load(str(directory / "echod.conf"))


def listening(settings) -> list[tuple[str, str, int]]:
    return [(each.name, each.transport, each.port) for each in settings.listeners]


def test_make_run_serves_the_shipped_tcp_listeners_on_an_unprivileged_port(tmp_path):
    settings = run_config(tmp_path, "RUN_PORT=17007")
    assert listening(settings) == [("echo", "tcp", 17007), ("bytecount", "tcp", 50007)]
    assert settings.access_log == f"{tmp_path}/access.log"


def test_run_udp_yes_turns_the_shipped_udp_echo_on_and_changing_it_back_turns_it_off(tmp_path):
    udp = run_config(tmp_path, "RUN_PORT=17007", "RUN_UDP=yes")
    assert listening(udp) == [("echo", "tcp", 17007), ("bytecount", "tcp", 50007), ("udp-echo", "udp", 17007)]
    (listener,) = [each for each in udp.listeners if each.transport == "udp"]
    assert listener.datagram_rate_per_peer == 1000  # the shipped rates, uncommented as they are
    # The file is made again for other variables, though etc/echod.conf did not change.
    assert listening(run_config(tmp_path, "RUN_PORT=17007")) == listening(udp)[:2]


def test_edits_to_make_runs_file_last_while_nothing_it_is_made_from_changes(tmp_path):
    run_config(tmp_path, "RUN_PORT=17007")
    path = tmp_path / "echod.conf"
    path.write_text(path.read_text().replace("log_level = info", "log_level = debug"))
    assert run_config(tmp_path, "RUN_PORT=17007").log_level == "debug"
