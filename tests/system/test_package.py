"""
The package file itself: lintian-clean, what it ships and depends on, and its
autopkgtest tests (debian/tests) run against it inside a booted container.
"""

import re
import subprocess
from pathlib import Path

import pytest

from tests.system.container import Container
from tests.system.helpers import ROOT, SOURCE


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], check=True, capture_output=True, text=True).stdout


def test_lintian_reports_no_error_and_no_warning(deb: Path):
    done = subprocess.run(
        ["lintian", "--fail-on", "error,warning", "--display-info", "--pedantic", str(deb)],
        capture_output=True,
        text=True,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert not re.search(r"^[EW]: ", output, re.MULTILINE), output


def test_version_is_the_python_package_version(deb: Path):
    version = re.search(r'__version__ = "([^"]+)"', (ROOT / "echod" / "__init__.py").read_text()).group(1)
    assert dpkg_deb("--field", str(deb), "Version").strip().split("+")[0] == version


def test_ships_the_daemon_units_generator_config_and_manual_pages(deb: Path):
    files = {line.split()[-1].lstrip(".") for line in dpkg_deb("--contents", str(deb)).splitlines()}
    for path in (
        "/usr/bin/echod",
        "/usr/lib/python3/dist-packages/echod/echod.tac",
        "/usr/lib/python3/dist-packages/echod/cli.py",
        "/etc/echod.conf",
        "/etc/logrotate.d/echod",
        "/lib/systemd/system/echod.service",
        "/lib/systemd/system/echod.socket",
        "/lib/systemd/system/echod@.service",
        "/lib/systemd/system/echod@.socket",
        "/lib/systemd/system-generators/echod-socket-generator",
        "/usr/lib/sysusers.d/echod.conf",
        "/usr/share/man/man8/echod.8.gz",
        "/usr/share/man/man5/echod.conf.5.gz",
    ):
        assert path in files, path
    assert not [f for f in files if "site-packages" in f or "/twisted/" in f], "no vendored dependencies"
    conffiles = dpkg_deb("--info", str(deb), "conffiles").split()
    assert sorted(conffiles) == ["/etc/echod.conf", "/etc/logrotate.d/echod"]


def test_depends_on_debian_twisted_and_sdnotify(deb: Path):
    assert dpkg_deb("--field", str(deb), "Architecture").strip() == "all"
    depends = dpkg_deb("--field", str(deb), "Depends")
    for name in ("python3-twisted", "python3-sdnotify", "python3:any", "procps"):
        assert re.search(rf"(^|, ){re.escape(name)}\b", depends), depends


def test_logrotate_config_signals_the_main_process_without_copytruncate():
    text = (ROOT / "debian" / "echod.logrotate").read_text()
    assert text.startswith("/var/log/echod/*.log {")
    assert "copytruncate" not in text
    assert "systemctl kill --kill-whom=main --signal=SIGUSR1 echod.service" in text


def autopkgtests() -> list[tuple[str, str]]:
    """(test name, restrictions) for each test of debian/tests/control."""
    tests = []
    for stanza in (ROOT / "debian" / "tests" / "control").read_text().split("\n\n"):
        fields = dict(re.findall(r"^(\S+):\s*(.*)$", stanza, re.MULTILINE))
        tests += [(name, fields.get("Restrictions", "")) for name in fields["Tests"].split()]
    return tests


@pytest.mark.parametrize(("name", "restrictions"), autopkgtests(), ids=[t[0] for t in autopkgtests()])
def test_autopkgtest(installed: Container, name: str, restrictions: str):
    c = installed
    script = f"cd /tmp && AUTOPKGTEST_TMP=$(mktemp -d) {SOURCE}/debian/tests/{name}"
    done = c.run(["sh", "-c", script], check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    if "allow-stderr" not in restrictions:
        assert done.stderr == "", output
