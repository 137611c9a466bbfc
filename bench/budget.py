"""
CPU budgets for the multi-core figure.

On a 2-core machine the load generator needs part of a core, so two echod workers cannot both have a
whole one, and "2 workers / 1 worker" measured flat out says more about the machine than about echod:
one worker already fills a core, the load generator half of the other. So the multi-core scenarios give
every serving process the same CPU quota, in a cgroup of its own (cgroup v1 `cpu.cfs_quota_us`, v2
`cpu.max`), small enough that the workers and the load generator together fit in the machine. Then
2 workers / 1 worker shows what echod does with a second core's worth of CPU: whether the kernel
spreads the connections over the processes and whether the work gets dearer when it is spread.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

#: A short period, so that a worker that has used its quota is held back for a few milliseconds at a
#: time rather than for tens: the clients then see a steady server, not one that stalls.
PERIOD_US = 10_000
NAME = "echod-bench"


def cpu_hierarchy() -> tuple[Path, int]:
    """Where the cpu controller is mounted, and the cgroup version; OSError when there is none."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount, kind = fields[4], fields[fields.index("-") + 1]
            options = fields[-1].split(",")
            if kind == "cgroup" and "cpu" in options:
                return Path(mount), 1
            if kind == "cgroup2" and "cpu" in (Path(mount) / "cgroup.controllers").read_text().split():
                return Path(mount), 2
    raise OSError("no cgroup hierarchy with the cpu controller is mounted")


class Budgets:
    """Cgroups with the same CPU quota each, one per serving process; removed on `close`."""

    def __init__(self, count: int, share: float) -> None:
        self.root, self.version = cpu_hierarchy()
        self.groups: list[Path] = []
        try:
            self._make(count, int(share * PERIOD_US))
        except BaseException:
            self.close()
            raise
        self.workers = self.groups[1:] if self.version == 2 else self.groups

    def _make(self, count: int, quota: int) -> None:
        parent = self.root
        if self.version == 2:
            # v2 hands a controller down only through every ancestor's subtree_control. The root's
            # is left as found or with cpu added: under systemd it has cpu already.
            parent = self.root / NAME
            parent.mkdir(exist_ok=True)
            self.groups.append(parent)
            for holder in (self.root, parent):
                if "cpu" not in (holder / "cgroup.subtree_control").read_text().split():
                    (holder / "cgroup.subtree_control").write_text("+cpu")
        for i in range(count):
            group = parent / f"{NAME}-{i}" if self.version == 1 else parent / f"worker-{i}"
            group.mkdir(exist_ok=True)
            self.groups.append(group)
            if self.version == 1:
                (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (group / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")

    def admit(self, pids: Iterable[int]) -> None:
        """One process (and all its threads) into each group."""
        pids = list(pids)
        if len(pids) > len(self.workers):
            raise ValueError(f"{len(pids)} processes for {len(self.workers)} budgets")
        for pid, group in zip(pids, self.workers, strict=False):
            (group / "cgroup.procs").write_text(str(pid))

    def close(self) -> None:
        """
        Remove the groups, killing what is left in them first (a cgroup with members cannot go). A
        group that will not go is reported, not raised: the figures measured so far are kept.
        """
        for group in reversed(self.groups):
            try:
                _empty(group)
                os.rmdir(group)
            except FileNotFoundError:
                pass
            except OSError as error:
                print(f"bench: could not remove {group}: {error}", file=sys.stderr, flush=True)


def _empty(group: Path, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while pids := (group / "cgroup.procs").read_text().split():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        if time.monotonic() > deadline:
            raise OSError(f"processes {', '.join(pids)} are still in it")
        time.sleep(0.05)  # polling: a cgroup v1 has no event for "now empty"


@contextlib.contextmanager
def budgets(count: int, share: float) -> Iterator[Budgets]:
    held = Budgets(count, share)
    try:
        yield held
    finally:
        held.close()


def unavailable(share: float) -> str | None:
    """Why budgets of C{share} cannot be set here (not root, no cpu controller), or None when they can."""
    try:
        with budgets(1, share):
            return None
    except OSError as error:
        return str(error)
