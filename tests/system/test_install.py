"""
A fresh install: the package installs offline, starts at once, serves both
protocols, runs without privileges under the shipped hardening, and logs
with real severities. These tests only look, so they share one container.
"""

import re

from tests.system.container import Container
from tests.system.helpers import install, journal, main_pid, send, show, wait_for


def test_install_enables_and_starts_socket_and_service(container: Container):
    output = install(container)
    assert "Setting up echod" in output
    for unit in ("echod.service", "echod.socket"):
        assert container.run(["systemctl", "is-active", unit]).stdout.strip() == "active"
        assert container.run(["systemctl", "is-enabled", unit]).stdout.strip() == "enabled"
    listen = container.run(["systemctl", "show", "-P", "Listen", "echod.socket"]).stdout.split()
    assert listen == ["[::]:7", "(Stream)", "[::]:50007", "(Stream)"]


def test_both_protocols_answer_on_ipv4_and_ipv6(shared_installed: Container):
    c = shared_installed
    assert send(c, 7, "hello\n") == "hello\n"
    assert send(c, 7, "over v6", ipv6=True) == "over v6"
    assert send(c, 50007, "5 hello") == "hello"
    assert send(c, 50007, "5 helloEXTRA", ipv6=True) == "hello"


def test_status_shows_the_live_status_line(installed: Container):
    c = installed
    assert show(c, "echod.service", "StatusText").startswith("echo 0 open, 0 served, 0 refused; bytecount ")
    for _ in range(3):
        assert send(c, 7, "x") == "x"
    # The daemon refreshes its status every 5 seconds.
    wait_for(
        "echo 3 served in the status",
        lambda: "echo 0 open, 3 served" in show(c, "echod.service", "StatusText"),
        timeout=15,
    )
    status = c.run(["systemctl", "status", "--no-pager", "echod.service"]).stdout
    want = 'Status: "echo 0 open, 3 served, 0 refused; bytecount 0 open, 0 served, 0 refused; 3 B echoed"'
    assert want in status, status
    assert "Active: active (running)" in status


def test_runs_as_echod_without_any_capability(shared_installed: Container):
    c = shared_installed
    fields = dict(
        line.split(":\t", 1) for line in c.read(f"/proc/{main_pid(c)}/status").splitlines() if ":\t" in line
    )
    uid = c.run(["id", "-u", "echod"]).stdout.strip()
    gid = c.run(["id", "-g", "echod"]).stdout.strip()
    assert fields["Uid"].split() == [uid] * 4
    assert fields["Gid"].split() == [gid] * 4
    assert int(uid) < 1000, "echod is a system user"
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == 0, f"{cap} = {fields[cap]}"
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"
    account = c.run(["getent", "passwd", "echod"]).stdout.strip().split(":")
    assert account[5:] == ["/nonexistent", "/usr/sbin/nologin"]


def test_security_exposure_is_at_most_1_2(shared_installed: Container):
    out = shared_installed.run(["systemd-analyze", "security", "--no-pager", "echod.service"]).stdout
    score = float(re.search(r"Overall exposure level for echod.service: ([\d.]+)", out).group(1))
    assert score <= 1.2, out


def test_installed_units_verify_clean(shared_installed: Container):
    # With man installed, this also checks that Documentation= names real manual pages.
    done = shared_installed.run(["systemd-analyze", "verify", "echod.socket", "echod.service"], check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_manual_pages_are_installed(shared_installed: Container):
    for page in ("8 echod", "5 echod.conf", "1 echod-probe"):
        section, name = page.split()
        path = shared_installed.run(["man", "-w", section, name]).stdout.strip()
        assert path == f"/usr/share/man/man{section}/{name}.{section}.gz"
    # As a user types it, without the section.
    assert shared_installed.run(["man", "-w", "echod-probe"]).stdout.strip().endswith("echod-probe.1.gz")


def test_the_installed_probe_measures_the_installed_daemon(shared_installed: Container):
    for args in (["localhost"], ["--connect", "[::1]"], ["--bytecount", "127.0.0.1"]):
        done = shared_installed.run(["echod", "probe", "-q", "-c", "3", "-i", "0.05", *args])
        assert "3 probes sent, 3 answered intact in time, 0% loss" in done.stdout, done.stdout


def test_generator_wrote_the_socket_drop_in_from_the_config(shared_installed: Container):
    drop_in = shared_installed.read("/run/systemd/generator/echod.socket.d/50-echod-conf.conf")
    assert "ListenStream=[::]:7\n" in drop_in
    assert "ListenStream=[::]:50007\n" in drop_in


def test_memory_deny_write_execute_is_enforced_and_echod_runs_under_it(shared_installed: Container):
    c = shared_installed
    assert show(c, "echod.service", "MemoryDenyWriteExecute") == "yes"
    # The daemon got this far under it: serving, and no writable+executable mapping.
    assert send(c, 50007, "2 ok") == "ok"
    maps = c.read(f"/proc/{main_pid(c)}/maps").splitlines()
    assert not [m for m in maps if re.match(r"\S+ .wx", m)]
    # And the filter really works in this container: the same property refuses such a mapping.
    probe = (
        "import mmap\n"
        "try:\n"
        "    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "    print('allowed')\n"
        "except PermissionError:\n"
        "    print('refused')\n"
    )
    run = ["systemd-run", "--wait", "--pipe", "--quiet"]
    assert c.run([*run, "-p", "MemoryDenyWriteExecute=yes", "python3", "-c", probe]).stdout == "refused\n"
    assert c.run([*run, "python3", "-c", probe]).stdout == "allowed\n"


def test_journal_priority_filters_the_daemon_messages(shared_installed: Container):
    c = shared_installed
    # A bad bytecount header is a warning naming the peer.
    assert send(c, 50007, "-5 hello") == ""
    wait_for("the warning in the journal", lambda: "bad request" in journal(c, "-p", "warning"))
    warnings = journal(c, "-p", "warning")
    everything = journal(c)
    assert "bytecount: bad request from 127.0.0.1:" in warnings
    assert "echod serving 2 listener(s)" in everything
    assert "echod serving" not in warnings
    assert "<4>" not in everything and "<6>" not in everything, "sd-daemon prefixes must be parsed, not shown"


def test_command_line(shared_installed: Container):
    c = shared_installed
    # The release's own python3-twisted (22.4 on bookworm, 24.11 on trixie), nothing vendored.
    debian = c.run(["dpkg-query", "-W", "-f=${Version}", "python3-twisted"]).stdout
    upstream = debian.split(":")[-1].split("-")[0]
    assert re.fullmatch(
        rf"echod \S+ \(Twisted {re.escape(upstream)}\)\n", c.run(["echod", "--version"]).stdout
    )
    summary = c.run(["echod", "check-config"]).stdout
    assert summary.startswith("/etc/echod.conf: OK, log_level=info"), summary
    assert c.run(["python3", "-m", "echod", "check-config", "--quiet"]).stdout == ""


def test_starting_the_service_alone_works_with_the_socket_unit_disabled(installed: Container):
    c = installed
    c.run(["systemctl", "disable", "--now", "echod.socket"])
    assert show(c, "echod.service", "ActiveState") == "inactive"  # PartOf= the socket
    c.run(["systemctl", "start", "echod"])
    assert show(c, "echod.service", "ActiveState") == "active"
    assert show(c, "echod.socket", "ActiveState") == "active"  # Wants= brought it
    assert send(c, 7, "alone") == "alone"
    assert send(c, 50007, "5 alone") == "alone"
