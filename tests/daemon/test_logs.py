import io
import os

from twisted.logger import Logger, LogLevel

from echod.daemon.logs import DaemonLog, LineObserver, is_journal


def emit(daemon_log: DaemonLog, level: LogLevel, text: str) -> None:
    Logger(namespace="echod.test", observer=daemon_log.observer).emit(level, text)


def test_level_filters_and_can_be_changed_while_running():
    stream = io.StringIO()
    daemon_log = DaemonLog("warning", stream)
    emit(daemon_log, LogLevel.info, "hidden")
    emit(daemon_log, LogLevel.warn, "shown")
    daemon_log.set_level("debug")
    emit(daemon_log, LogLevel.debug, "now shown")
    lines = stream.getvalue().splitlines()
    assert [line.split(None, 3)[2:] for line in lines] == [["warn", "shown"], ["debug", "now shown"]]


def test_journal_lines_carry_sd_daemon_priorities_and_no_timestamp():
    stream = io.StringIO()
    observer = LineObserver(stream, journal=True)
    for level in (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical):
        observer({"log_level": level, "log_format": "m {n}", "n": 1, "log_time": 0})
    assert stream.getvalue().splitlines() == ["<7>m 1", "<6>m 1", "<4>m 1", "<3>m 1", "<2>m 1"]


def test_every_line_of_a_multi_line_event_keeps_its_priority():
    stream = io.StringIO()
    LineObserver(stream, journal=True)({"log_level": LogLevel.error, "log_format": "a\nb", "log_time": 0})
    assert stream.getvalue() == "<3>a\n<3>b\n"


def test_journal_is_recognised_by_the_device_and_inode_of_the_stream(tmp_path, monkeypatch):
    with open(tmp_path / "out", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert is_journal(stream)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not is_journal(stream)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not is_journal(stream)


def test_a_closed_stream_does_not_raise():
    stream = io.StringIO()
    stream.close()
    LineObserver(stream, journal=False)({"log_level": LogLevel.info, "log_format": "x", "log_time": 0})
