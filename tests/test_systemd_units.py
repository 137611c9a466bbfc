"""
The unit files as systemd itself judges them: `systemd-analyze verify` and
the offline `systemd-analyze security` exposure score.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from echod.config import EX_CONFIG
from echod.daemon.service import EX_CANTCREAT, EX_NOPERM

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")


def unit_lines(name: str) -> list[str]:
    return [line.strip() for line in (UNITS / name).read_text().splitlines()]


@pytest.fixture
def installed_units(tmp_path):
    """The units with /usr/bin/echod pointing at this checkout's echod, as verify checks that it exists."""
    launcher = tmp_path / "echod"
    launcher.write_text(f'#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m echod "$@"\n')
    launcher.chmod(0o755)
    for name in ("echod.service", "echod.socket", "echod@.service", "echod@.socket"):
        text = (UNITS / name).read_text().replace("/usr/bin/echod", str(launcher))
        (tmp_path / name.replace("@", "@1")).write_text(text)
    return tmp_path


#: The units echod ships, under the names the test verifies them as.
VERIFIED = ("echod.socket", "echod.service", "echod@1.socket", "echod@1.service")
#: A line of systemd-analyze's output about one of them, by unit name or file path.
ABOUT_ECHOD = re.compile(r"(?<![\w@.-])echod(@1)?\.(service|socket)\b")


@pytest.fixture
def noisy_neighbour(tmp_path_factory):
    """
    Another package's unit with a warning of its own, enabled where verify
    looks (as Debian's irtt is, whose User=nobody verify warns about): the
    host's units are none of echod's business.
    """
    directory = tmp_path_factory.mktemp("neighbour")
    (directory / "neighbour.service").write_text(
        "[Unit]\nDescription=another package's daemon\n[Service]\nUser=nobody\nExecStart=/bin/true\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    wants = directory / "multi-user.target.wants"
    wants.mkdir()
    (wants / "neighbour.service").symlink_to("../neighbour.service")
    # The trailing colon keeps systemd's own search path after this directory.
    return {"SYSTEMD_UNIT_PATH": f"{directory}:"}


def verify(directory: Path, env: dict[str, str] | None = None) -> tuple[int, str, list[str]]:
    """systemd-analyze verify of echod's units: its status, its output, and the lines about echod's units."""
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *VERIFIED],
        cwd=directory,
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", **(env or {})},
    )
    output = result.stdout + result.stderr
    return result.returncode, output, [line for line in output.splitlines() if ABOUT_ECHOD.search(line)]


def test_units_verify_clean_whatever_the_hosts_other_units_say(installed_units, noisy_neighbour):
    status, output, ours = verify(installed_units, noisy_neighbour)
    assert "neighbour.service" in output  # the neighbour was loaded, and warned
    assert status == 0, output
    assert ours == [], output


def test_verify_still_reports_a_warning_in_echods_own_units(installed_units):
    for name in ("echod.service", "echod@1.service"):
        path = installed_units / name
        path.write_text(path.read_text().replace("User=echod", "User=nobody"))
    _, output, ours = verify(installed_units)
    assert [line.split(":", 2)[0].rsplit("/", 1)[-1] for line in ours] == ["echod.service", "echod@1.service"]
    assert all("Special user nobody configured" in line for line in ours), output


@pytest.mark.parametrize("unit", ["echod.service", "echod@.service"])
def test_service_exposure_is_at_most_1_2(unit):
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNITS / unit)],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for echod\S*\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 1.2, result.stdout


def test_service_holds_no_capability_and_needs_none_when_activated():
    lines = unit_lines("echod.service")
    assert "CapabilityBoundingSet=" in lines
    assert "AmbientCapabilities=" in lines
    assert "NoNewPrivileges=yes" in lines
    assert "Wants=echod.socket" in lines


def test_service_is_a_notify_service_that_does_not_retry_what_a_restart_cannot_cure():
    lines = unit_lines("echod.service")
    for expected in (
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        f"RestartPreventExitStatus={EX_CONFIG} {EX_CANTCREAT} {EX_NOPERM}",
        "RestartSec=2s",
        "SystemCallErrorNumber=EPERM",
        "ExecReload=/usr/bin/echod check-config --quiet",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert expected in lines
    assert any(line.startswith("WatchdogSec=") for line in lines)
    assert any(line.startswith("Documentation=") for line in lines)


#: What echod@.service has that echod.service has not: the instance's name, for its metrics port.
INSTANCE_LINES = [
    "# The instance's name: echod@N serves its metrics at the metrics port + N (echod.conf(5)).",
    "Environment=ECHOD_INSTANCE=%i",
]


def test_instances_run_exactly_like_the_single_service():
    """
    echod@.service is echod.service per instance: only the names of its
    socket and itself differ, and it tells the daemon which instance it is.
    """
    single = unit_lines("echod.service")
    template = [line.replace("echod@%i.socket", "echod.socket") for line in unit_lines("echod@.service")]
    at = template.index(INSTANCE_LINES[0])
    assert template[at : at + 2] == INSTANCE_LINES
    assert template[at - 1] == "Environment=ECHOD_CONFIG=/etc/echod.conf"
    del template[at : at + 2]
    differences = [(a, b) for a, b in zip(single, template, strict=True) if a != b]
    assert differences == [(single[1], template[1])]
    assert template[1] == single[1] + ", instance %i"


def test_instance_sockets_share_the_ports():
    lines = unit_lines("echod@.socket")
    assert "ReusePort=yes" in lines
    assert "Service=echod@%i.service" in lines
    assert [line for line in lines if line.startswith("Listen")] == [
        line for line in unit_lines("echod.socket") if line.startswith("Listen")
    ]


def test_sockets_refuse_to_open_any_port_while_the_config_is_invalid():
    for unit in ("echod.socket", "echod@.socket"):
        assert "ExecStartPre=/usr/bin/echod check-config --quiet" in unit_lines(unit)
