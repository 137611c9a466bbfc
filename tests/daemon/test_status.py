"""The status line and its alerts, on their own."""

from twisted.logger import LogLevel, capturedLogs

from echod.accounting.alerts import Alerts
from echod.daemon.status import human_bytes, status_line, stopping_line


def test_raising_an_alert_logs_it_and_keeps_its_summary():
    alerts = Alerts()
    with capturedLogs() as events:
        alerts.raise_("bind", "echo", "reload: echo not added: the whole story", "echo could not listen")
    (event,) = events
    assert event["log_level"] == LogLevel.warn
    assert event["log_format"].format(**event) == "reload: echo not added: the whole story"
    assert alerts.summaries() == ["echo could not listen"]


def test_clearing_a_listeners_alert_leaves_those_of_names_it_is_a_prefix_of():
    alerts = Alerts()
    alerts.set("bind", "a", "a could not listen")
    alerts.set("bind", "ab", "ab could not listen")
    alerts.set("bind", "abc", "abc could not listen")
    alerts.clear("bind", "a")
    assert alerts.summaries() == ["ab could not listen", "abc could not listen"]
    alerts.clear("bind", "ab")
    assert alerts.summaries() == ["abc could not listen"]


def test_clearing_what_does_not_stand_changes_nothing():
    alerts = Alerts()
    alerts.set("reload", None, "reload failed")
    alerts.clear("bind", "echo")
    alerts.clear("reload", "echo")
    alerts.clear_family("bin")  # a prefix of a family is no family
    assert alerts.summaries() == ["reload failed"]


def test_a_family_is_cleared_whole_and_only_it():
    alerts = Alerts()
    alerts.set("moved", "a", "sockets differ")
    alerts.set("moved", "b", "sockets differ")
    alerts.set("movedx", "a", "another family")
    alerts.clear_family("moved")
    assert alerts.keys() == [("movedx", "a")]


def test_keep_only_drops_the_alerts_about_names_gone_and_no_other_family():
    alerts = Alerts()
    for name in ("a", "ab", "b"):
        alerts.set("bind", name, f"{name} could not listen")
    alerts.set("reload", None, "reload failed")
    alerts.keep_only("bind", ["ab"])
    assert alerts.keys() == [("bind", "ab"), ("reload", None)]


def test_the_same_summary_is_shown_once_in_the_order_first_raised():
    alerts = Alerts()
    alerts.set("unmatched", "fd 3", "systemd's sockets differ")
    alerts.set("access_log", None, "access log cannot be reopened")
    alerts.set("moved", "echo", "systemd's sockets differ")
    assert alerts.summaries() == ["systemd's sockets differ", "access log cannot be reopened"]


def test_status_line_lists_listeners_then_bytes_echoed():
    line = status_line([("echo", "0 open, 1 served, 0 refused"), ("u", "3 echoed, 0 dropped")], 3000)
    assert line == "echo 0 open, 1 served, 0 refused; u 3 echoed, 0 dropped; 2.9 KiB echoed"


def test_status_line_puts_the_alerts_first():
    line = status_line([("echo", "0 open")], 0, ["reload failed", "access log"])
    assert line == "WARNING: reload failed; access log | echo 0 open; 0 B echoed"


def test_status_line_without_a_listener_says_so():
    assert status_line([], 0) == "no listener; 0 B echoed"
    assert (
        status_line([], 5, ["b could not listen"]) == "WARNING: b could not listen | no listener; 5 B echoed"
    )


def test_stopping_line():
    assert stopping_line(2) == "stopping: 2 connection(s) still open"


def test_human_bytes_picks_the_largest_unit_reached():
    assert [human_bytes(n) for n in (0, 1023, 1024, 3 << 20, 5 << 30)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "3.0 MiB",
        "5.0 GiB",
    ]
