"""The reload path of L{EchodService}, with a notifier that records what systemd would hear."""

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs

from echod.config import load
from echod.listeners import StreamListener
from echod.service import EchodService


class RecordingNotifier:
    """What L{echod.notify.Notifier} would send, as a list."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def reloading(self) -> None:
        self.sent.append("RELOADING=1")

    def ready(self, status: str) -> None:
        self.sent.append(f"READY=1 STATUS={status}")


def test_an_unexpected_error_in_a_reload_still_ends_it_with_ready(tmp_path, monkeypatch):
    path = tmp_path / "echod.conf"
    path.write_text("[listener:echo]\nprotocol = echo\naddress = 127.0.0.1\nport = 0\n")
    notifier = RecordingNotifier()
    service = EchodService(load(str(path)), MemoryReactorClock(), notifier=notifier)
    path.write_text(path.read_text() + "max_connections = 5\n")

    def bug(self, settings) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(StreamListener, "reconfigure", bug)
    with capturedLogs() as events:
        service.reload()
    assert notifier.sent == [
        "RELOADING=1",
        "READY=1 STATUS=WARNING: reload failed (a bug), see the log | "
        "echo 0 open, 0 served, 0 refused; 0 B echoed",
    ]
    (error,) = [e for e in events if e["log_level"] == LogLevel.error]
    assert error["log_format"].format(**error).startswith("reload failed: a bug; listeners keep serving")
    assert error["log_failure"].check(RuntimeError)
    assert [listener.name for listener in service.listeners] == ["echo"]
    assert service.settings.listeners[0].max_connections == 1024  # the configuration it had


def test_the_next_good_reload_clears_the_warning(tmp_path, monkeypatch):
    path = tmp_path / "echod.conf"
    path.write_text("[listener:echo]\nprotocol = echo\naddress = 127.0.0.1\nport = 0\n")
    notifier = RecordingNotifier()
    service = EchodService(load(str(path)), MemoryReactorClock(), notifier=notifier)
    with monkeypatch.context() as patch:
        patch.setattr(StreamListener, "reconfigure", lambda self, settings: 1 / 0)
        service.reload()
    service.reload()
    assert notifier.sent[-1] == "READY=1 STATUS=echo 0 open, 0 served, 0 refused; 0 B echoed"
