"""The alerts standing in the status line: raised, told, cleared, counted."""

import pytest
from twisted.logger import LogLevel, capturedLogs

from echod.accounting.alerts import Alerts


def test_raising_an_alert_logs_it_and_keeps_its_summary():
    alerts = Alerts()
    with capturedLogs() as events:
        alerts.raise_("bind", "echo", "echo could not listen", log="reload: echo not added: the whole story")
    (event,) = events
    assert event["log_level"] == LogLevel.warn
    assert event["log_format"].format(**event) == "reload: echo not added: the whole story"
    assert alerts.summaries() == ["echo could not listen"]


def test_clearing_a_listeners_alert_leaves_those_of_names_it_is_a_prefix_of():
    alerts = Alerts()
    alerts.raise_("bind", "a", "a could not listen")
    alerts.raise_("bind", "ab", "ab could not listen")
    alerts.raise_("bind", "abc", "abc could not listen")
    alerts.clear("bind", "a")
    assert alerts.summaries() == ["ab could not listen", "abc could not listen"]
    alerts.clear("bind", "ab")
    assert alerts.summaries() == ["abc could not listen"]


def test_clearing_what_does_not_stand_changes_nothing():
    alerts = Alerts()
    alerts.raise_("reload", None, "reload failed")
    alerts.clear("bind", "echo")
    alerts.clear("reload", "echo")
    alerts.clear_family("bin")  # a prefix of a family is no family
    assert alerts.summaries() == ["reload failed"]


def test_a_family_is_cleared_whole_and_only_it():
    alerts = Alerts()
    alerts.raise_("moved", "a", "sockets differ")
    alerts.raise_("moved", "b", "sockets differ")
    alerts.raise_("movedx", "a", "another family")
    alerts.clear_family("moved")
    assert alerts.keys() == [("movedx", "a")]


def test_keep_only_drops_the_alerts_about_names_gone_and_no_other_family():
    alerts = Alerts()
    for name in ("a", "ab", "b"):
        alerts.raise_("bind", name, f"{name} could not listen")
    alerts.raise_("reload", None, "reload failed")
    alerts.keep_only("bind", ["ab"])
    assert alerts.keys() == [("bind", "ab"), ("reload", None)]


def test_the_same_summary_is_shown_once_in_the_order_first_raised():
    alerts = Alerts()
    alerts.raise_("unmatched", "fd 3", "systemd's sockets differ")
    alerts.raise_("access_log", None, "access log cannot be reopened")
    alerts.raise_("moved", "echo", "systemd's sockets differ")
    assert alerts.summaries() == ["systemd's sockets differ", "access log cannot be reopened"]


def test_an_alert_raised_without_a_log_line_logs_nothing():
    alerts = Alerts()
    with capturedLogs() as events:
        alerts.raise_("reload", None, "reload failed (boom), see the log")
    assert events == []
    assert alerts.summaries() == ["reload failed (boom), see the log"]


def test_raising_an_alert_again_replaces_its_summary_in_its_place():
    alerts = Alerts()
    alerts.raise_("bind", "a", "a could not listen")
    alerts.raise_("reload", None, "reload failed")
    alerts.raise_("bind", "a", "a could not listen on [::]:7")
    assert alerts.summaries() == ["a could not listen on [::]:7", "reload failed"]


def test_counts_keep_every_family_ever_raised_at_zero_once_cleared():
    alerts = Alerts()
    alerts.raise_("bind", "a", "a could not listen")
    alerts.raise_("bind", "b", "b could not listen")
    alerts.raise_("reload", None, "reload failed")
    assert alerts.counts() == {"bind": 2, "reload": 1}
    alerts.clear_family("bind")
    alerts.clear("reload")
    assert alerts.counts() == {"bind": 0, "reload": 0}


def test_the_log_line_is_a_keyword_so_that_the_old_four_argument_call_is_refused():
    alerts = Alerts()
    with pytest.raises(TypeError):
        alerts.raise_("bind", "echo", "the whole story", "echo could not listen")
    assert alerts.summaries() == []
