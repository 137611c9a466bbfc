import os

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from echod.accounting.accesslog import FLUSH_INTERVAL, FLUSH_LINES, AccessLog, format_entry


def test_entry_names_time_listener_peer_bytes_duration_and_cause():
    line = format_entry(1764201600.25, "echo", "[::1]:4242", 10, 9, 1.5, "client")
    assert line == "2025-11-27T00:00:00.250Z echo [::1]:4242 in=10 out=9 duration=1.500s closed=client\n"


def entry(log: AccessLog, port: int) -> None:
    """Log a connection from 10.0.0.1:C{port}."""
    log.log_connection(1764201600.0, "l", IPv4Address("TCP", "10.0.0.1", port), 1, 1, 0.5, "client")


def ports(path) -> list[int]:
    return [int(line.split()[2].rsplit(":", 1)[1]) for line in path.read_text().splitlines()]


def test_lines_wait_for_the_timer(tmp_path):
    clock = Clock()
    log = AccessLog(str(tmp_path / "access.log"), clock)
    entry(log, 1)
    assert (tmp_path / "access.log").read_text() == ""
    clock.advance(FLUSH_INTERVAL)
    assert (tmp_path / "access.log").read_text() == (
        "2025-11-27T00:00:00.000Z l 10.0.0.1:1 in=1 out=1 duration=0.500s closed=client\n"
    )


def test_a_full_buffer_is_written_at_once(tmp_path):
    log = AccessLog(str(tmp_path / "access.log"), Clock())
    for port in range(FLUSH_LINES - 1):
        entry(log, port)
    assert ports(tmp_path / "access.log") == []
    entry(log, FLUSH_LINES - 1)
    assert ports(tmp_path / "access.log") == list(range(FLUSH_LINES))


def test_reopen_after_rename_puts_every_line_in_exactly_one_file(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), Clock())
    entry(log, 1)
    log.flush()
    entry(log, 2)  # queued when logrotate renames the file
    os.rename(path, tmp_path / "access.log.1")
    log.reopen()
    entry(log, 3)
    log.close()
    assert ports(tmp_path / "access.log.1") == [1, 2]
    assert ports(path) == [3]


def test_existing_file_is_appended_to(tmp_path):
    path = tmp_path / "access.log"
    path.write_text("old\n")
    log = AccessLog(str(path), Clock())
    entry(log, 7)
    log.close()
    lines = path.read_text().splitlines()
    assert lines[0] == "old"
    assert lines[1].split()[2] == "10.0.0.1:7"
    assert len(lines) == 2


def test_unopenable_path_raises_for_the_caller_to_report(tmp_path):
    with pytest.raises(OSError):
        AccessLog(str(tmp_path / "missing" / "access.log"), Clock())


def test_failed_reopen_keeps_the_old_file(tmp_path):
    directory = tmp_path / "logs"
    directory.mkdir()
    log = AccessLog(str(directory / "access.log"), Clock())
    os.rename(directory, tmp_path / "gone")
    with pytest.raises(OSError):
        log.reopen()
    entry(log, 9)
    log.close()
    assert ports(tmp_path / "gone" / "access.log") == [9]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_drops_lines_with_one_error_and_never_raises():
    log = AccessLog("/dev/full", Clock())
    with capturedLogs() as events:
        for port in range(3):
            entry(log, port)
            log.flush()
    errors = [e for e in events if e["log_level"] == LogLevel.error]
    assert len(errors) == 1
    assert "No space left on device" in errors[0]["log_format"].format(**errors[0])
