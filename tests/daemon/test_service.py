"""The reload path of L{EchodService}, with a notifier that records what systemd would hear."""

import socket

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs

from echod.config import load
from echod.daemon.listeners import StreamListener
from echod.daemon.service import EchodService


class RecordingNotifier:
    """What L{echod.systemd.notify.Notifier} would send, as a list."""

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


def test_a_listener_added_leaves_the_alert_of_one_whose_name_it_begins(tmp_path):
    path = tmp_path / "echod.conf"
    first = "[listener:x]\nprotocol = echo\naddress = 127.0.0.1\nport = 0\n"
    path.write_text(first)
    notifier = RecordingNotifier()
    service = EchodService(load(str(path)), MemoryReactorClock(), notifier=notifier)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        # ab fails to bind; a, added after it, must not clear ab's alert.
        path.write_text(
            first + first.replace(":x", ":ab").replace("= 0", f"= {taken}") + first.replace(":x", ":a")
        )
        service.reload()
    status = notifier.sent[-1]
    assert status.startswith(
        f"READY=1 STATUS=WARNING: ab could not listen on tcp 127.0.0.1:{taken}, see the log | "
    )
    assert [listener.name for listener in service.listeners] == ["x", "a"]
    service.getServiceNamed("a").socket.close()


def test_without_a_listener_the_status_line_says_so(tmp_path):
    path = tmp_path / "echod.conf"
    path.write_text("[listener:x]\nprotocol = echo\naddress = 127.0.0.1\nport = 0\n")
    service = EchodService(load(str(path)), MemoryReactorClock(), notifier=RecordingNotifier())
    service.removeService(service.getServiceNamed("x"))
    assert service.status() == "no listener; 0 B echoed"


def test_a_reload_asked_for_during_one_runs_after_it_and_each_ends_with_ready(tmp_path, monkeypatch):
    path = tmp_path / "echod.conf"
    section = "[listener:{}]\nprotocol = echo\naddress = 127.0.0.1\nport = 0\n"
    path.write_text(section.format("a") + section.format("b"))
    notifier = RecordingNotifier()
    service = EchodService(load(str(path)), MemoryReactorClock(), notifier=notifier)
    service.running = True  # so that removing a listener stops it
    closing = defer.Deferred()
    monkeypatch.setattr(StreamListener, "stopService", lambda self: closing)  # a's socket closes later
    path.write_text(section.format("b"))
    first = service.reload()
    assert notifier.sent == ["RELOADING=1"]  # not READY while a's socket is still open
    service.reload()
    service.reload()
    assert notifier.sent == ["RELOADING=1"]
    path.write_text(section.format("b") + section.format("c").replace("echo", "bytecount"))
    closing.callback(None)
    assert first.called
    assert notifier.sent == [
        "RELOADING=1",
        "READY=1 STATUS=b 0 open, 0 served, 0 refused; 0 B echoed",
        "RELOADING=1",  # the two asked for meanwhile: one more, after it
        "READY=1 STATUS=b 0 open, 0 served, 0 refused; c 0 open, 0 served, 0 refused; 0 B echoed",
    ]
    service.getServiceNamed("c").socket.close()


def test_the_metrics_endpoint_is_a_child_service_beside_a_listener_named_metrics(tmp_path):
    path = tmp_path / "echod.conf"
    path.write_text(
        "[echod]\nmetrics = 127.0.0.1:0\n[listener:metrics]\nprotocol = echo\naddress = 127.0.0.1\nport = 0\n"
    )
    service = EchodService(load(str(path)), MemoryReactorClock(), notifier=RecordingNotifier())
    assert service.metrics.parent is service and service.metrics in list(service)
    assert [listener.name for listener in service.listeners] == ["metrics"]
    assert service.getServiceNamed("metrics") is service.listeners[0]
