"""
A real echod process for tests: started through twistd with a temporary
configuration, its output read line by line as it happens.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
TAC = ROOT / "echod" / "echod.tac"
LISTENING = re.compile(
    r"(?P<name>[\w.-]+): (?P<proto>\w+)/tcp listening on (?P<address>\S+):(?P<port>\d+)"
    r"( \(socket from systemd\))?$"
)

#: The configuration of a listener that tests start from.
BASE_LISTENER = {
    "address": "127.0.0.1",
    "port": "0",
    "max_connections": "1024",
    "max_connections_per_peer": "1024",
    "idle_timeout": "5m",
}


def config_text(general: dict[str, str] | None = None, **listeners: dict[str, str]) -> str:
    """INI text with an [echod] section and a [listener:NAME] per keyword."""
    lines = ["[echod]"] + [f"{k} = {v}" for k, v in (general or {}).items()]
    for name, keys in listeners.items():
        lines.append(f"[listener:{name}]")
        lines += [f"{k} = {v}" for k, v in {**BASE_LISTENER, **keys}.items()]
    return "\n".join(lines) + "\n"


def without_bind_privilege(command: list[str]) -> list[str]:
    """C{command} run without the capability to bind ports below 1024 (as root too)."""
    if os.geteuid() != 0:
        return command
    tool = shutil.which("setpriv")
    if tool is None:
        raise RuntimeError("setpriv (util-linux) is needed to drop CAP_NET_BIND_SERVICE as root")
    drop = "-net_bind_service"
    return [tool, f"--inh-caps={drop}", f"--bounding-set={drop}", "--", *command]


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Daemon:
    """One echod process and everything it printed."""

    def __init__(
        self,
        config_path: Path,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        journal: bool = False,
        preexec=None,
    ):
        self.config_path = config_path
        self.command = command or [sys.executable, "-m", "echod", "run", "-c", str(config_path)]
        self.env = env or environment()
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}
        self._changed = threading.Condition()
        self.process: subprocess.Popen | None = None
        self.journal = journal
        #: Run in the child before echod starts (e.g. to lower its limits).
        self.preexec = preexec

    def start(self) -> Daemon:
        read_end, write_end = os.pipe()
        env = self.env
        if self.journal:
            # What systemd does when stdout is the journal: name the stream's device and inode.
            st = os.fstat(write_end)
            env = {**env, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        self.process = subprocess.Popen(
            self.command,
            stdout=write_end,
            stderr=write_end,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=self.preexec,
        )
        os.close(write_end)
        output = open(read_end, encoding="utf-8", errors="replace")
        threading.Thread(target=self._read, args=(output,), daemon=True).start()
        return self

    def _read(self, output) -> None:
        for line in output:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                match = LISTENING.search(line.rstrip("\n"))
                if match:
                    self.ports[match["name"]] = int(match["port"])
                self._changed.notify_all()
        with self._changed:
            self.lines.append(None)  # end of output
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30, nth: int = 1) -> re.Match:
        """Wait until the C{nth} line matching C{pattern} is printed; return its match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        found = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    if line is None:
                        raise AssertionError(f"echod exited before printing {pattern!r}:\n{self.output}")
                    match = regex.search(line)
                    if match:
                        found += 1
                        if found == nth:
                            return match
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"echod did not print {pattern!r} in {timeout}s:\n{self.output}")
                self._changed.wait(left)

    def wait_ready(self) -> Daemon:
        """Wait until the daemon says it serves all its listeners."""
        self.wait_for(r"echod serving \d+ listener")
        return self

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(line for line in self.lines if line is not None)

    def port(self, name: str, timeout: float = 30) -> int:
        """The port listener C{name} last said it listens on; waits for it to say so first."""
        if name not in self.ports:
            self.wait_for(rf"(?<![\w.-]){re.escape(name)}: \w+/tcp listening on ", timeout)
        return self.ports[name]

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout)
        self.wait_for_end()
        return code

    def wait_for_end(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self.lines or self.lines[-1] is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("echod's output did not end")
                self._changed.wait(left)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def rss_kib(self, field: str = "VmRSS") -> int:
        """The daemon's resident memory (or C{VmHWM}, its peak) in KiB."""
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"no {field} for pid {self.process.pid}")
