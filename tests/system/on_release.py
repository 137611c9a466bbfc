"""
Run the unit and integration suite on a Debian release's own interpreter and
packages (Debian 13: Python 3.13, python3-twisted 24.11), inside that
release's cached root filesystem, without booting it:

    python3 -m tests.system.on_release RELEASE DEB [PYTEST ARGS...]

The root filesystem is the one the booted package tests use, with DEB's
runtime dependencies, pytest and hypothesis; the source tree is seen through
a throw-away overlay, so nothing written there (bytecode, hypothesis' data)
reaches the checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.system.container import RELEASES, package_dependencies, rootfs, run_unbooted

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in RELEASES:
        sys.stderr.write(f"usage: on_release.py {{{','.join(RELEASES)}}} DEB [PYTEST ARGS...]\n")
        return 2
    release, deb, pytest_args = argv[0], Path(argv[1]), argv[2:]
    log = Path(f"/tmp/echod-rootfs-{release}.log")
    base = rootfs(release, package_dependencies(deb), log)
    command = ["python3", "-m", "pytest", "-p", "no:cacheprovider", "--ignore=tests/system", *pytest_args]
    print(f"on {release}: {' '.join(command)}", flush=True)
    return run_unbooted(base, command, ROOT, {"PYTHONPATH": "/srv/source", "LC_ALL": "C.UTF-8"})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
