import pytest

from tests.integration import netns
from tests.integration.daemon import Daemon, config_text


@pytest.fixture
def start_daemon(tmp_path):
    """Start echod with the given listeners; stop it (and check it stopped cleanly) afterwards."""
    started: list[Daemon] = []

    def start(general: dict[str, str] | None = None, **listeners: dict[str, str]) -> Daemon:
        path = tmp_path / f"echod-{len(started)}.conf"
        path.write_text(config_text(general, **listeners))
        daemon = Daemon(path)
        started.append(daemon)
        return daemon.start().wait_ready()

    yield start
    for daemon in started:
        daemon.kill()


@pytest.fixture
def network():
    """Test hosts in network namespaces of the test's own (netns.Network), or a skip saying why not."""
    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    with netns.Network() as net:
        yield net
