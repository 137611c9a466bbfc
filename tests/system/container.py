"""
Booted Debian containers for the package tests, one release or another.

A root filesystem per release, with systemd and the package's runtime
dependencies, is built once with mmdebstrap and cached outside the source
tree (a tarball and its extracted copy, named by the release and a hash of
the recipe, so that a changed list builds a new one). Each container boots that tree with systemd-nspawn
--volatile=overlay, so every change made inside is thrown away at stop and
the cached tree stays pristine. The containers have no network of their own:
everything the tests install must already be in the tree.

Commands run inside through nsenter on the container's PID 1, which needs no
systemd on the host.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

#: The Debian releases the package is proven on: Debian 12 and Debian 13.
RELEASES = ("bookworm", "trixie")


def mirrors(release: str) -> tuple[str, ...]:
    """The archive, its updates and its security updates for C{release}."""
    return (
        f"deb http://deb.debian.org/debian {release} main",
        f"deb http://deb.debian.org/debian {release}-updates main",
        f"deb http://deb.debian.org/debian-security {release}-security main",
    )


#: What every container has besides the package's own dependencies: an init,
#: the bus systemctl talks to, logrotate for the rotation test, man for the
#: Documentation= check of systemd-analyze verify; pytest and hypothesis to run
#: the unit and integration suite on the release's own interpreter; the
#: release's own autopkgtest and lintian, as the archive runs them; the
#: release's Prometheus server, which scrapes echod, and its promtool; haproxy,
#: whose own `haproxy -c` checks the shipped HAProxy example (autopkgtest) and
#: which, with iproute2's `ip netns`, the suite runs echod behind on hosts in
#: network namespaces (tests/integration/test_haproxy.py); socat, an echo
#: server the suite probes (tests/integration/test_probe.py); scapy, whose
#: STAMP codec echod's is tested against, and adjtimex(8), which the clock
#: state echod reads is compared with (tests/stamp).
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "logrotate",
    "man-db",
    "python3-pytest",
    "python3-hypothesis",
    "python3-scapy",
    "adjtimex",
    "socat",
    "autopkgtest",
    "lintian",
    "prometheus",
    "haproxy",
    "iproute2",
)

CACHE = Path(os.environ.get("ECHOD_TEST_CACHE", "/var/cache/echod-tests"))

#: The PATH and environment of commands run inside.
INSIDE_ENV = ("env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_COLORS=0", "LC_ALL=C.UTF-8")

_counter = itertools.count()


def package_dependencies(deb: Path) -> list[str]:
    """The packages named in C{deb}'s Depends and Pre-Depends (first alternative of each)."""
    names = []
    for field in ("Pre-Depends", "Depends"):
        text = subprocess.run(
            ["dpkg-deb", "--field", str(deb), field], check=True, capture_output=True, text=True
        ).stdout
        for clause in filter(None, (c.strip() for c in text.replace("\n", " ").split(","))):
            first = clause.split("|")[0].strip()
            names.append(re.split(r"[\s(:]", first, maxsplit=1)[0])
    return names


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _in_use(path: Path) -> bool:
    """Whether a running process names C{path} on its command line (a container booted from it)."""
    needle = str(path).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    return True
            except OSError:
                continue
    return False


def rootfs(release: str, packages: Sequence[str], log: Path) -> Path:
    """
    The extracted root filesystem of C{release} with C{packages}, built and
    cached on first use; older caches of that release that no container uses
    any more are removed.
    """
    wanted = sorted(set(BASE_PACKAGES) | set(packages))
    recipe = {"suite": release, "variant": "minbase", "mirrors": mirrors(release), "packages": wanted}
    key = release + "-" + hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    tarball = CACHE / f"rootfs-{key}.tar.zst"
    base = CACHE / f"base-{key}"
    done = CACHE / f"base-{key}.ok"
    with _locked(CACHE / f".lock-{release}"):
        if not done.exists():
            if not tarball.exists():
                partial = tarball.with_suffix(".partial.zst")
                partial.unlink(missing_ok=True)
                with open(log, "ab") as out:
                    subprocess.run(
                        [
                            "mmdebstrap",
                            "--variant=minbase",
                            "--include=" + ",".join(wanted),
                            release,
                            str(partial),
                            *mirrors(release),
                        ],
                        check=True,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                partial.rename(tarball)
                (CACHE / f"rootfs-{key}.json").write_text(json.dumps(recipe, indent=2) + "\n")
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir()
            subprocess.run(["tar", "--zstd", "-xf", str(tarball), "-C", str(base)], check=True)
            done.touch()
        # Caches of this release only: the other release's may be in use by a parallel run.
        for old in CACHE.glob(f"base-{release}-*"):
            if old.is_dir() and old != base and not _in_use(old):
                Path(f"{old}.ok").unlink(missing_ok=True)
                shutil.rmtree(old, ignore_errors=True)
        for old in CACHE.glob(f"rootfs-{release}-*"):
            if not old.name.startswith(f"rootfs-{key}"):
                old.unlink(missing_ok=True)
        _remove_unnamed_caches()
    return base


def _remove_unnamed_caches() -> None:
    """Caches from before they were named by release (bookworm only, unused since)."""
    for old in CACHE.glob("*-*"):
        kind, _, rest = old.name.partition("-")
        if kind in ("base", "rootfs") and not rest.startswith(RELEASES) and not _in_use(old):
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)


def _hierarchies() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    if (root / "cgroup.controllers").exists():  # the unified hierarchy alone
        return [root]
    return [root / name for name in ("systemd", "unified") if (root / name / "cgroup.procs").exists()]


def init_arguments(release: str) -> tuple[str, ...]:
    """
    What the container's systemd needs on its command line to boot here.

    systemd 256 and newer (trixie has 257) refuse to boot on the legacy
    cgroup hierarchy unless forced; this host mounts cgroup v1 (hybrid).
    Older ones (bookworm's 252) need nothing.
    """
    unified = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    if release == "bookworm" or unified:
        return ()
    return ("SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1", "systemd.unified_cgroup_hierarchy=0")


class _OwnCgroups:
    """Cgroups of one nspawn's own, which --keep-unit makes it use; removed with what is left in them."""

    def __init__(self, name: str) -> None:
        self.paths = [h / name for h in _hierarchies()]

    def create(self) -> None:
        for cgroup in self.paths:
            cgroup.mkdir()

    def enter(self) -> None:
        """In the child between fork and exec."""
        for cgroup in self.paths:
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

    def processes(self) -> list[int]:
        pids = set()
        for cgroup in self.paths:
            for procs in cgroup.rglob("cgroup.procs") if cgroup.exists() else ():
                with contextlib.suppress(OSError):
                    pids.update(int(p) for p in procs.read_text().split())
        return sorted(pids)

    def remove(self) -> None:
        for _ in range(50):
            left = self.processes()
            if not left:
                break
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        for cgroup in self.paths:
            if cgroup.exists():
                for directory in sorted(cgroup.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                    if directory.is_dir():
                        with contextlib.suppress(OSError):
                            directory.rmdir()
                with contextlib.suppress(OSError):
                    cgroup.rmdir()


def run_unbooted(base: Path, argv: Sequence[str], source: Path, env: dict[str, str]) -> int:
    """
    Run C{argv} in C{base} without booting it, with C{source} at /srv/source
    (writable through a throw-away overlay) as the working directory; return
    its exit status. Its output goes where ours goes.
    """
    name = f"echod-run-{os.getpid()}-{next(_counter)}"
    cgroups = _OwnCgroups(name)
    cgroups.create()
    command = [
        "systemd-nspawn",
        "--quiet",
        f"--directory={base}",
        "--as-pid2",
        "--console=pipe",
        "--register=no",
        "--keep-unit",
        "--private-network",
        "--volatile=overlay",
        f"--machine={name}",
        f"--overlay={source}::/srv/source",
        "--chdir=/srv/source",
        *(f"--setenv={key}={value}" for key, value in env.items()),
        "--",
        *argv,
    ]
    try:
        return subprocess.run(command, stdin=subprocess.DEVNULL, preexec_fn=cgroups.enter).returncode
    finally:
        cgroups.remove()
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{name}", ignore_errors=True)


class Container:
    """
    One booted container. Use as a context manager: it boots on entry and is
    stopped, and its cgroup removed, on exit, whatever happened inside.
    """

    def __init__(self, base: Path, binds: dict[str, Path], log: Path, release: str = "bookworm") -> None:
        self.base = base
        self.binds = binds
        self.log = log
        self.release = release
        self.name = f"echod-test-{os.getpid()}-{next(_counter)}"
        self.cgroups = _OwnCgroups(self.name)
        self.nspawn: subprocess.Popen | None = None
        self.pid1: int | None = None

    # -- lifecycle ----------------------------------------------------------

    def __enter__(self) -> Container:
        try:
            self.boot()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def boot(self, timeout: float = 60) -> None:
        self.cgroups.create()

        command = [
            "systemd-nspawn",
            "--quiet",
            f"--directory={self.base}",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--private-network",
            "--console=passive",
            "--volatile=overlay",
            f"--machine={self.name}",
        ]
        command += [f"--bind-ro={host}:{inside}" for inside, host in self.binds.items()]
        command += init_arguments(self.release)
        with open(self.log, "ab") as out:
            self.nspawn = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=self.cgroups.enter,
            )
        deadline = time.monotonic() + timeout
        self.pid1 = self._wait_for_pid1(deadline)
        state = ""
        while time.monotonic() < deadline:
            state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"container {self.name} did not finish booting (state {state!r}); see {self.log}")

    def _wait_for_pid1(self, deadline: float) -> int:
        # nspawn's child whose command is systemd; a short-lived helper comes first.
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.nspawn.returncode}; see {self.log}")
            children = Path(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children")
            with contextlib.suppress(OSError):
                for pid in children.read_text().split():
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return int(pid)
            time.sleep(0.05)
        raise RuntimeError(f"no systemd started in container {self.name}; see {self.log}")

    def stop(self) -> None:
        """Halt the container, or kill whatever is left of it, and remove its cgroups."""
        if self.nspawn is not None and self.nspawn.poll() is None:
            self.nspawn.send_signal(signal.SIGTERM)  # nspawn asks the container to halt
            try:
                self.nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait()
        self.cgroups.remove()
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}", ignore_errors=True)

    # -- running commands inside ---------------------------------------------

    def command(self, argv: Sequence[str]) -> list[str]:
        """The host command line that runs C{argv} inside the container."""
        return ["nsenter", "-t", str(self.pid1), "-m", "-u", "-i", "-n", "-p", "-C", "--", *INSIDE_ENV, *argv]

    def run(
        self, argv: Sequence[str], check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """Run C{argv} inside; with C{check}, fail with its output when it fails."""
        stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        done = subprocess.run(
            self.command(argv), capture_output=True, text=True, timeout=timeout, check=False, **stdin
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited with {done.returncode}\n"
                f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )
        return done

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a shell script inside."""
        return self.run(["sh", "-ec", script], check=check, timeout=timeout)

    def popen(self, argv: Sequence[str]) -> subprocess.Popen:
        """Start C{argv} inside without waiting; its stdout is a text pipe."""
        return subprocess.Popen(
            self.command(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def read(self, path: str) -> str:
        return self.run(["cat", path]).stdout

    def write(self, path: str, text: str) -> None:
        self.run(["sh", "-c", 'cat > "$1"', "sh", path], input=text)
