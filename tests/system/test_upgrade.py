"""
Restarts and upgrades never refuse a connection: systemd keeps the sockets
open and queues connections while echod.service restarts, and the package
upgrade restarts the service but never the socket. An edited configuration
survives the upgrade.
"""

from tests.system.container import Container
from tests.system.helpers import (
    Traffic,
    assert_none_refused,
    edit_config,
    install,
    main_pid,
    send,
    show,
)


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


def test_upgrade_from_units_under_lib_keeps_them_under_usr_lib(container: Container, lib_layout_deb: str):
    # DEP17: releases before this one shipped /lib/systemd/...; with merged
    # /usr that is the same directory, and dpkg must not delete the units it
    # just unpacked when it removes the old package's paths.
    c = container
    install(c, lib_layout_deb)
    assert c.run(["dpkg", "-S", "/lib/systemd/system/echod.service"]).stdout.startswith("echod:")
    assert send(c, 7, "old") == "old"
    install(c, "/srv/debs/echod.deb")
    for unit in ("echod.service", "echod.socket", "echod@.service", "echod@.socket"):
        assert c.run(["test", "-s", f"/usr/lib/systemd/system/{unit}"], check=False).returncode == 0, unit
    generator = "/usr/lib/systemd/system-generators/echod-socket-generator"
    assert c.run(["test", "-x", generator], check=False).returncode == 0
    assert c.run(["dpkg", "-S", "/usr/lib/systemd/system/echod.service"]).stdout.startswith("echod:")
    c.run(["systemctl", "daemon-reload"])
    assert show(c, "echod.service", "FragmentPath").endswith("/systemd/system/echod.service")
    assert show(c, "echod.service", "LoadState") == "loaded"
    c.run(["systemctl", "restart", "echod.socket"])
    assert send(c, 7, "new") == "new"
    assert send(c, 50007, "3 new") == "new"
