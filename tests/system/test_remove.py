"""apt remove stops everything and keeps the configuration; apt purge removes it and the logs."""

from tests.system.container import Container
from tests.system.helpers import edit_config, refused, send, wait_for


def echod_processes(c: Container) -> list[str]:
    uid = c.run(["id", "-u", "echod"]).stdout.strip()
    script = f"grep -l '^Uid:[[:space:]]*{uid}[[:space:]]' /proc/[0-9]*/status || true"
    return c.run(["sh", "-c", script]).stdout.split()


def apt(c: Container, *args: str) -> str:
    done = c.run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q", *args])
    return done.stdout + done.stderr


def test_remove_then_purge(installed: Container):
    c = installed
    edited = edit_config(c, "s/^log_level = info$/log_level = warning/")
    c.run(["systemctl", "restart", "echod"])
    assert send(c, 7, "hi") == "hi"
    c.run(["sh", "-c", "echo old line > /var/log/echod/old.log"])
    assert echod_processes(c)

    output = apt(c, "remove", "echod")
    assert "can still be activated" not in output, output
    for unit in ("echod.service", "echod.socket"):
        assert c.run(["systemctl", "is-active", unit], check=False).stdout.strip() == "inactive"
        assert c.run(["systemctl", "show", "-P", "LoadState", unit]).stdout.strip() == "not-found"
    wait_for("no echod process", lambda: not echod_processes(c), timeout=5)
    assert refused(c, 7) and refused(c, 50007)
    assert c.read("/etc/echod.conf") == edited
    assert c.run(["test", "-e", "/run/systemd/generator/echod.socket.d"], check=False).returncode != 0
    assert c.run(["dpkg-query", "-W", "-f=${db:Status-Status}", "echod"]).stdout == "config-files"

    apt(c, "purge", "echod")
    for path in ("/etc/echod.conf", "/etc/logrotate.d/echod", "/var/log/echod"):
        assert c.run(["test", "-e", path], check=False).returncode != 0, f"{path} is left after purge"
    links = c.run(["find", "/etc/systemd/system", "-name", "echod*"]).stdout
    assert links == ""
    status = c.run(["dpkg-query", "-W", "-f=${db:Status-Status}", "echod"], check=False).stdout
    assert status in ("", "not-installed")
    assert not echod_processes(c)
    assert c.run(["systemctl", "--failed", "--no-legend", "--plain"]).stdout.strip() == ""
