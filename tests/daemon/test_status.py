"""The status line, on its own (its alerts: tests/accounting/test_alerts.py)."""

from echod.daemon.status import human_bytes, status_line, stopping_line


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
