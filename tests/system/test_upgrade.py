"""
Restarts and upgrades never refuse a connection: systemd keeps the sockets
open and queues connections while echod.service restarts, and the package
upgrade restarts the service but never the socket. An edited configuration
survives the upgrade.
"""

import subprocess
from pathlib import Path

import pytest

from tests.system.container import Container
from tests.system.helpers import (
    DEBS,
    ROOT,
    Traffic,
    assert_none_refused,
    edit_config,
    install,
    main_pid,
    show,
)


@pytest.fixture(scope="session")
def upgrade_deb(deb: Path, share: Path, workdir: Path) -> str:
    """The same source rebuilt with a higher version, as a container sees it."""
    version = subprocess.run(
        ["dpkg-deb", "--field", str(deb), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()
    log = workdir / "build-upgrade.log"
    with open(log, "w") as out:
        done = subprocess.run(
            [str(ROOT / "tools" / "build-deb"), str(share), f"{version}+systemtest1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        pytest.fail(f"building the upgrade failed; see {log}:\n{log.read_text()[-3000:]}")
    return f"{DEBS}/echod_{version}+systemtest1_all.deb"


def test_restart_refuses_no_connection(installed: Container):
    c = installed
    pid = main_pid(c)
    traffic = Traffic(c, 8)
    try:
        for _ in range(3):
            c.run(["systemctl", "restart", "echod"])
    finally:
        counts = traffic.result()
    assert main_pid(c) != pid
    assert_none_refused(counts)


def test_upgrade_refuses_no_connection_and_keeps_config_edits(installed: Container, upgrade_deb: str):
    c = installed
    edited = edit_config(
        c, "s/^log_level = info$/log_level = debug/", "s/^idle_timeout = 5m$/idle_timeout = 2m/"
    )
    c.run(["systemctl", "reload", "echod"])
    pid = main_pid(c)
    socket_since = show(c, "echod.socket", "ActiveEnterTimestampMonotonic")
    traffic = Traffic(c, 8)
    try:
        output = install(c, upgrade_deb)
    finally:
        counts = traffic.result()
    assert_none_refused(counts)
    assert "+systemtest1" in c.run(["dpkg-query", "-W", "-f=${Version}", "echod"]).stdout
    assert "conffile" not in output.lower(), output
    assert c.read("/etc/echod.conf") == edited
    # The daemon was restarted onto the new code; the socket was left alone.
    assert main_pid(c) != pid
    assert show(c, "echod.service", "ActiveState") == "active"
    assert show(c, "echod.socket", "ActiveEnterTimestampMonotonic") == socket_since
