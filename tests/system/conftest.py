"""
Acceptance tests of the Debian package inside a booted systemd.

They need root (systemd-nspawn, cgroups, nsenter), mmdebstrap and
systemd-nspawn on the host, and a built package named by $ECHOD_DEB:
`make test-package` provides all three. Anywhere else they are skipped,
each with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.system.container import Container, package_dependencies, rootfs
from tests.system.helpers import DEBS, ROOT, SOURCE, dump_journal, install

HERE = Path(__file__).resolve().parent

HOST_TOOLS = ("mmdebstrap", "systemd-nspawn", "nsenter", "dpkg-deb", "zstd")


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: boots systemd in containers with systemd-nspawn (run `make test-package` as root)"
    if not os.environ.get("ECHOD_DEB"):
        return "no package to test: `make test-package` builds echod.deb and runs these with ECHOD_DEB set"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    if reason is None:
        return
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False) for when in ("setup", "call")
    )


@pytest.fixture(scope="session")
def deb() -> Path:
    path = Path(os.environ["ECHOD_DEB"]).resolve()
    if not path.is_file():
        pytest.fail(f"ECHOD_DEB={path} does not exist; build it with `make deb`")
    missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing on the host: {' '.join(missing)} (`make test-package` installs them)")
    return path


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("system")


@pytest.fixture(scope="session")
def share(deb: Path, workdir: Path) -> Path:
    """The directory the containers see as /srv/debs; it holds echod.deb."""
    share = workdir / "debs"
    share.mkdir()
    shutil.copy(deb, share / "echod.deb")
    return share


@pytest.fixture(scope="session")
def base(deb: Path, workdir: Path) -> Path:
    """The cached root filesystem, with every runtime dependency of the package."""
    log = workdir / "mmdebstrap.log"
    try:
        return rootfs(package_dependencies(deb), log)
    except subprocess.CalledProcessError as e:
        pytest.fail(f"building the root filesystem failed ({e}); see {log}:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def booted(base: Path, share: Path, workdir: Path) -> Iterator[Container]:
    container = Container(base, {DEBS: share, SOURCE: ROOT}, log=workdir / "nspawn.log")
    with container:
        yield container


@pytest.fixture
def container(request: pytest.FixtureRequest, base: Path, share: Path, workdir: Path) -> Iterator[Container]:
    """A freshly booted container, without echod."""
    with booted(base, share, workdir) as c:
        yield c
        if _failed(request):
            dump_journal(c)


@pytest.fixture
def installed(container: Container) -> Container:
    """A freshly booted container with echod.deb installed."""
    install(container)
    return container


@pytest.fixture(scope="module")
def shared_installed(base: Path, share: Path, workdir: Path) -> Iterator[Container]:
    """One container with echod.deb installed, for a module of tests that only look."""
    with booted(base, share, workdir) as c:
        install(c)
        yield c
