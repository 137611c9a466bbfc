"""
The package file itself: lintian-clean by each release's own lintian, what it
ships and depends on, and its autopkgtest tests (debian/tests) run by each
release's own autopkgtest inside a booted container, as the archive runs them.
"""

import re
import subprocess
from pathlib import Path

from tests.system.container import Container
from tests.system.helpers import DEBS, ROOT, SOURCE


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], check=True, capture_output=True, text=True).stdout


def test_lintian_reports_no_error_and_no_warning(container: Container):
    done = container.run(
        ["lintian", "--fail-on", "error,warning", "--display-info", "--pedantic", f"{DEBS}/echod.deb"],
        check=False,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert not re.search(r"^[EW]: ", output, re.MULTILINE), output


def test_version_is_the_python_package_version(deb: Path):
    version = re.search(r'__version__ = "([^"]+)"', (ROOT / "echod" / "__init__.py").read_text()).group(1)
    assert dpkg_deb("--field", str(deb), "Version").strip().split("+")[0] == version


def test_ships_the_daemon_units_generator_config_manual_pages_and_examples(deb: Path):
    files = {line.split()[-1].lstrip(".") for line in dpkg_deb("--contents", str(deb)).splitlines()}
    for path in (
        "/usr/bin/echod",
        "/usr/lib/python3/dist-packages/echod/echod.tac",
        "/usr/lib/python3/dist-packages/echod/cli.py",
        "/etc/echod.conf",
        "/etc/logrotate.d/echod",
        "/usr/lib/systemd/system/echod.service",
        "/usr/lib/systemd/system/echod.socket",
        "/usr/lib/systemd/system/echod@.service",
        "/usr/lib/systemd/system/echod@.socket",
        "/usr/lib/systemd/system-generators/echod-socket-generator",
        "/usr/lib/sysusers.d/echod.conf",
        "/usr/share/man/man8/echod.8.gz",
        "/usr/share/man/man5/echod.conf.5.gz",
        "/usr/share/doc/echod/examples/prometheus-alerts.yml",
        "/usr/share/doc/echod/examples/prometheus.yml",
        "/usr/share/doc/echod/examples/haproxy.cfg",
        "/usr/share/man/man1/echod-probe.1.gz",
        # One module a subpackage: setup.cfg finds them all.
        "/usr/lib/python3/dist-packages/echod/accounting/stats.py",
        "/usr/lib/python3/dist-packages/echod/protocols/echo.py",
        "/usr/lib/python3/dist-packages/echod/systemd/activation.py",
        "/usr/lib/python3/dist-packages/echod/metrics/endpoint.py",
        "/usr/lib/python3/dist-packages/echod/daemon/service.py",
        "/usr/lib/python3/dist-packages/echod/probe/run.py",
    ):
        assert path in files, path
    assert not [f for f in files if "site-packages" in f or "/twisted/" in f], "no vendored dependencies"
    # DEP17: nothing under the aliased /lib, /bin or /sbin (merged /usr).
    assert not [f for f in files if f.split("/")[1] in ("lib", "bin", "sbin", "lib64")], sorted(files)
    conffiles = dpkg_deb("--info", str(deb), "conffiles").split()
    assert sorted(conffiles) == ["/etc/echod.conf", "/etc/logrotate.d/echod"]


def test_depends_on_debian_twisted_sdnotify_and_prometheus_client(deb: Path):
    assert dpkg_deb("--field", str(deb), "Architecture").strip() == "all"
    depends = dpkg_deb("--field", str(deb), "Depends")
    for name in ("python3-twisted", "python3-sdnotify", "python3-prometheus-client", "python3:any", "procps"):
        assert re.search(rf"(^|, ){re.escape(name)}\b", depends), depends


def test_logrotate_config_rotates_as_the_daemon_user_and_signals_without_copytruncate():
    text = (ROOT / "debian" / "echod.logrotate").read_text()
    assert text.startswith("/var/log/echod/*.log {\n\tsu echod echod\n")
    assert "copytruncate" not in text
    assert "systemctl kill --kill-whom=main --signal=SIGUSR1 $units" in text
    assert "|| true" not in text, "a failure to signal must be reported"


def autopkgtests() -> list[tuple[str, str]]:
    """(test name, restrictions) for each test of debian/tests/control."""
    tests = []
    for stanza in (ROOT / "debian" / "tests" / "control").read_text().split("\n\n"):
        fields = dict(re.findall(r"^(\S+):\s*(.*)$", stanza, re.MULTILINE))
        tests += [(name, fields.get("Restrictions", "")) for name in fields["Tests"].split()]
    return tests


def test_autopkgtest_runs_every_test_and_all_pass(container: Container):
    # autopkgtest itself, on the release's own version, with the null
    # virtualisation server: the tests run in this booted container, under
    # its systemd. isolation-container is what the container already is.
    # -B: test the .deb given, built once on bookworm, instead of building.
    done = container.run(
        [
            "autopkgtest",
            "--ignore-restrictions=isolation-container",
            "-B",
            f"{DEBS}/echod.deb",
            SOURCE,
            "--",
            "null",
        ],
        check=False,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    summary = output.split("@@@@@@@@@@@@@@@@@@@@ summary", 1)[1]
    results = dict(re.findall(r"^(\S+)\s+(PASS|FAIL|SKIP|FLAKY)\b", summary, re.MULTILINE))
    assert results == {name: "PASS" for name, _ in autopkgtests()}, output
