import os

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from echod.accesslog import FLUSH_INTERVAL, FLUSH_SIZE, AccessLog, format_entry


def test_entry_names_time_listener_peer_bytes_duration_and_cause():
    line = format_entry(1764201600.25, "echo", "[::1]:4242", 10, 9, 1.5, "client")
    assert line == "2025-11-27T00:00:00.250Z echo [::1]:4242 in=10 out=9 duration=1.500s closed=client\n"


def test_lines_wait_for_the_timer(tmp_path):
    clock = Clock()
    log = AccessLog(str(tmp_path / "access.log"), clock)
    log.write("one\n")
    assert (tmp_path / "access.log").read_text() == ""
    clock.advance(FLUSH_INTERVAL)
    assert (tmp_path / "access.log").read_text() == "one\n"


def test_a_full_buffer_is_written_at_once(tmp_path):
    log = AccessLog(str(tmp_path / "access.log"), Clock())
    line = "x" * 99 + "\n"
    for _ in range(FLUSH_SIZE // len(line) + 1):
        log.write(line)
    assert len((tmp_path / "access.log").read_text()) >= FLUSH_SIZE


def test_reopen_after_rename_puts_every_line_in_exactly_one_file(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), Clock())
    log.write("before 1\n")
    log.flush()
    log.write("before 2\n")  # queued when logrotate renames the file
    os.rename(path, tmp_path / "access.log.1")
    log.reopen()
    log.write("after\n")
    log.close()
    assert (tmp_path / "access.log.1").read_text() == "before 1\nbefore 2\n"
    assert path.read_text() == "after\n"


def test_existing_file_is_appended_to(tmp_path):
    path = tmp_path / "access.log"
    path.write_text("old\n")
    log = AccessLog(str(path), Clock())
    log.write("new\n")
    log.close()
    assert path.read_text() == "old\nnew\n"


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
    log.write("still written\n")
    log.close()
    assert (tmp_path / "gone" / "access.log").read_text() == "still written\n"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_drops_lines_with_one_error_and_never_raises():
    log = AccessLog("/dev/full", Clock())
    with capturedLogs() as events:
        for _ in range(3):
            log.write("line\n")
            log.flush()
    errors = [e for e in events if e["log_level"] == LogLevel.error]
    assert len(errors) == 1
    assert "No space left on device" in errors[0]["log_format"].format(**errors[0])
