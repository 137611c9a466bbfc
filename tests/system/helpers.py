"""Helpers for the package tests: talking to echod and systemd inside a container."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.system.container import Container

#: The source tree.
ROOT = Path(__file__).resolve().parents[2]

#: Where the host's directories appear inside the containers.
DEBS = "/srv/debs"
SOURCE = "/srv/source"
CLIENT = f"{SOURCE}/tests/system/client.py"


def install(container: Container, path: str = f"{DEBS}/echod.deb") -> str:
    """apt install a package file inside, with no network; return apt's output."""
    done = container.run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q", path])
    return done.stdout + done.stderr


def apt(container: Container, *args: str) -> str:
    """apt-get ARGS inside, non-interactive; return its output."""
    done = container.run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q", *args])
    return done.stdout + done.stderr


def echod_processes(container: Container) -> list[str]:
    """The /proc status files of every process running as the echod user."""
    uid = container.run(["id", "-u", "echod"]).stdout.strip()
    script = f"grep -l '^Uid:[[:space:]]*{uid}[[:space:]]' /proc/[0-9]*/status || true"
    return container.run(["sh", "-c", script]).stdout.split()


def dump_journal(container: Container) -> None:
    """Show what systemd logged in this container, for the report of a failed test."""
    with contextlib.suppress(Exception):
        print(container.run(["journalctl", "-b", "--no-pager", "-n", "300"], check=False).stdout)


def send(container: Container, port: int, data: str, ipv6: bool = False) -> str:
    """What echod sends back for C{data} on C{port} (sent, then half-closed)."""
    return container.run(["python3", CLIENT, "send6" if ipv6 else "send", str(port), data]).stdout


def refused(container: Container, port: int) -> bool:
    return container.run(["python3", CLIENT, "refused", str(port)], check=False).returncode == 0


def show(container: Container, unit: str, prop: str) -> str:
    return container.run(["systemctl", "show", "-P", prop, unit]).stdout.strip()


def main_pid(container: Container) -> int:
    return int(show(container, "echod.service", "MainPID"))


def wait_for(what: str, check: Callable[[], object], timeout: float = 20, every: float = 0.1) -> object:
    """Poll C{check} until it returns something true; fail saying C{what} after C{timeout}."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def edit_config(container: Container, *sed: str) -> str:
    """Apply sed expressions to /etc/echod.conf and return the new text."""
    args = ["sed", "-i"]
    for expression in sed:
        args += ["-e", expression]
    container.run([*args, "/etc/echod.conf"])
    return container.read("/etc/echod.conf")


def journal(container: Container, *args: str) -> str:
    return container.run(["journalctl", "--no-pager", "-o", "cat", "-u", "echod.service", *args]).stdout


class Traffic:
    """A client connecting in a loop inside the container while something else happens."""

    def __init__(
        self, c: Container, seconds: float, listeners: tuple[str, ...] = ("echo:7", "bytecount:50007")
    ) -> None:
        self.process = c.popen(["python3", CLIENT, "loop", str(seconds), *listeners])
        ready = self.process.stdout.readline()
        assert ready == "ready\n", ready + self.process.stderr.read()

    def result(self) -> dict:
        out, err = self.process.communicate(timeout=120)
        assert self.process.returncode == 0, err
        return json.loads(out)


def assert_none_refused(counts: dict) -> None:
    assert counts["ok"] > 0
    assert (counts["refused"], counts["wrong"], counts["errors"]) == (0, 0, 0), counts["problems"]


def reset(container: Container, port: int) -> bool:
    """Whether a connection to C{port} is reset at once (not refused, not left hanging)."""
    return container.run(["python3", CLIENT, "reset", str(port)], check=False).returncode == 0
