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

from tests.system.container import RELEASES, Container, package_dependencies, rootfs
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


def selected_releases() -> list[str]:
    """The releases to test on: $ECHOD_RELEASES (space-separated), else all of them."""
    wanted = os.environ.get("ECHOD_RELEASES", "").split() or list(RELEASES)
    unknown = sorted(set(wanted) - set(RELEASES))
    if unknown:
        raise pytest.UsageError(f"ECHOD_RELEASES: unknown release(s) {unknown}; known: {list(RELEASES)}")
    return wanted


@pytest.fixture(scope="session", params=selected_releases())
def release(request: pytest.FixtureRequest) -> str:
    """Each test that boots a container runs once per Debian release, on the very same .deb."""
    return request.param


@pytest.fixture(scope="session")
def base(release: str, deb: Path, workdir: Path) -> Path:
    """The cached root filesystem of the release, with every runtime dependency of the package."""
    log = workdir / f"mmdebstrap-{release}.log"
    try:
        return rootfs(release, package_dependencies(deb), log)
    except subprocess.CalledProcessError as e:
        pytest.fail(
            f"building the {release} root filesystem failed ({e}); see {log}:\n{log.read_text()[-3000:]}"
        )


@contextlib.contextmanager
def booted(release: str, base: Path, share: Path, workdir: Path) -> Iterator[Container]:
    container = Container(
        base, {DEBS: share, SOURCE: ROOT}, log=workdir / f"nspawn-{release}.log", release=release
    )
    with container:
        yield container


@pytest.fixture
def container(
    request: pytest.FixtureRequest, release: str, base: Path, share: Path, workdir: Path
) -> Iterator[Container]:
    """A freshly booted container, without echod."""
    with booted(release, base, share, workdir) as c:
        yield c
        if _failed(request):
            dump_journal(c)


@pytest.fixture
def installed(container: Container) -> Container:
    """A freshly booted container with echod.deb installed."""
    install(container)
    return container


@pytest.fixture(scope="module")
def shared_installed(release: str, base: Path, share: Path, workdir: Path) -> Iterator[Container]:
    """One container with echod.deb installed, for a module of tests that only look."""
    with booted(release, base, share, workdir) as c:
        install(c)
        yield c


def _version(deb: Path) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", str(deb), "Version"], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture(scope="session")
def upgrade_deb(deb: Path, share: Path, workdir: Path) -> str:
    """
    The same source rebuilt with a higher version, as a container sees it:
    $ECHOD_UPGRADE_DEB if `make test-package` built it once for every
    release, else built now.
    """
    version = _version(deb)
    built = os.environ.get("ECHOD_UPGRADE_DEB")
    if built:
        assert _version(Path(built)) == f"{version}+systemtest1", built
        shutil.copy(built, share / Path(built).name)
        return f"{DEBS}/{Path(built).name}"
    log = workdir / "build-upgrade.log"
    with open(log, "w") as out:
        done = subprocess.run(
            [str(ROOT / "tools" / "build-deb"), str(share), f"{version}+systemtest1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if done.returncode != 0:
        pytest.fail(f"building the upgrade failed; see {log}:\n{log.read_text()[-3000:]}")
    return f"{DEBS}/echod_{version}+systemtest1_all.deb"


@pytest.fixture(scope="session")
def lib_layout_deb(deb: Path, share: Path, workdir: Path) -> str:
    """
    echod.deb as releases before DEP17 shipped it: units and generator under
    /lib, and a lower version, so that installing echod.deb upgrades from it.
    """
    tree = workdir / "lib-layout"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    (tree / "lib").mkdir()
    shutil.move(tree / "usr" / "lib" / "systemd", tree / "lib" / "systemd")
    for name, old, new in (
        ("control", f"Version: {_version(deb)}\n", "Version: 0.0.1\n"),
        ("md5sums", "  usr/lib/systemd/", "  lib/systemd/"),
    ):
        path = tree / "DEBIAN" / name
        path.write_text(path.read_text().replace(old, new))
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(tree), str(share / "echod-lib-layout.deb")],
        check=True,
        capture_output=True,
    )
    return f"{DEBS}/echod-lib-layout.deb"
