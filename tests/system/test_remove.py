"""apt remove stops everything and keeps the configuration; apt purge removes it and the logs."""

from tests.system.container import Container
from tests.system.helpers import apt, echod_processes, edit_config, install, refused, send, wait_for


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


#: What changes on any system whatever is installed: apt's and dpkg's own
#: records, caches, logs, runtime state. piuparts ignores the same.
IGNORED = (
    "/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/var/cache", "/var/lib/apt", "/var/lib/dpkg",
    "/var/log/journal", "/var/log/apt", "/var/log/dpkg.log", "/var/log/alternatives.log",
    "/var/lib/systemd/timers", "/var/lib/systemd/catalog",
)  # fmt: skip


def files(c: Container) -> set[str]:
    prune = " -o ".join(f"-path {path}" for path in IGNORED)
    out = c.sh(f"find / -xdev \\( {prune} \\) -prune -o -print").stdout
    return set(out.splitlines())


def test_install_remove_purge_reinstall_leaves_nothing_behind(container: Container):
    c = container
    before = files(c)
    install(c)
    assert send(c, 7, "first") == "first"
    apt(c, "remove", "echod")
    apt(c, "purge", "echod")
    after = files(c)
    # The system user is kept on purge, as Debian policy advises (its ids are never reused):
    # it lives in /etc/passwd and friends, which existed before.
    assert sorted(after - before) == [], "left behind after purge"
    assert sorted(before - after) == [], "removed though it was there before"
    assert c.run(["systemctl", "--failed", "--no-legend", "--plain"]).stdout.strip() == ""
    # And it installs again, as new, onto the user it kept.
    install(c)
    assert send(c, 7, "again") == "again"
    assert send(c, 50007, "5 again") == "again"
    assert c.run(["systemctl", "is-active", "echod.service"]).stdout.strip() == "active"
