import io
import json
import re

import pytest

from echod.probe.options import Thresholds, make_options
from echod.probe.output import (
    CRITICAL,
    OK,
    STATUS_WORDS,
    UNKNOWN,
    WARNING,
    JsonReporter,
    LinesReporter,
    MonitoringReporter,
    answer_line,
    header,
    json_report,
    milliseconds,
    monitoring,
    reporter,
    summary,
    timeout_line,
)
from echod.probe.packets import PacketOptions
from echod.probe.tally import Tally, Verdict

# -- the Monitoring Plugins Development Guidelines' plugin output, strictly -------------------
# A status line "SERVICE STATUS - text", then "|" and space-separated performance data:
# 'label'=value[UOM];[warn];[crit];[min];[max], value a number or "U", UOM one of the
# guidelines' units, warn and crit ranges ([@][start:]end), min and max numbers.
NUMBER = r"-?\d+(?:\.\d+)?"
RANGE = rf"@?(?:(?:{NUMBER}|~):)?(?:{NUMBER})?"
PERFDATA = re.compile(
    rf"(?P<label>'[^'=]+'|[^'= ]+)=(?P<value>{NUMBER}|U)(?P<uom>us|ms|s|%|B|KB|MB|TB|c)?"
    rf"(?:;(?P<warn>{RANGE})(?:;(?P<crit>{RANGE})(?:;(?P<min>{NUMBER})?(?:;(?P<max>{NUMBER})?)?)?)?)?"
)
STATUS_LINE = re.compile(r"(?P<service>[A-Z]+) (?P<status>OK|WARNING|CRITICAL|UNKNOWN) - (?P<text>[^|]+)")
STATUS_CODES = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def parse_plugin_output(output: str) -> dict:
    """A plugin's output as the guidelines define it, or an AssertionError saying where it is not."""
    lines = output.splitlines()
    assert len(lines) == 1, f"one line expected: {output!r}"
    text, bar, perf = lines[0].partition("|")
    match = STATUS_LINE.fullmatch(text.rstrip())
    assert match, f"not 'SERVICE STATUS - text': {text!r}"
    data = {}
    if bar:
        for item in perf.split():
            m = PERFDATA.fullmatch(item)
            assert m, f"not label=value[UOM];warn;crit;min;max: {item!r}"
            data[m["label"].strip("'")] = m.groupdict()
    return {"service": match["service"], "status": match["status"], "text": match["text"], "perfdata": data}


def tally(rtts_ms=(), **counts: int) -> Tally:
    t = Tally()
    for name, value in counts.items():
        setattr(t, name, value)
    for rtt in rtts_ms:
        t.rtt.add(rtt / 1000)
    return t


OPTIONS = make_options("echo.example", warning=Thresholds(100, 20), critical=Thresholds(500, 60))
OPTIONS_H = make_options("h", warning=Thresholds(100, 20))


@pytest.mark.parametrize(
    ("counts", "rtts", "error", "status"),
    [
        ({"sent": 5, "received": 5}, [1, 2, 3, 4, 5], None, OK),
        ({"sent": 5, "received": 5}, [99, 100, 100, 100, 100], None, OK),  # just below the threshold
        ({"sent": 5, "received": 5}, [100, 100, 100, 100, 100], None, WARNING),  # at it, as check_ping
        ({"sent": 6, "received": 5, "lost": 1}, [1, 1, 1, 1, 1], None, OK),  # 16.7%
        ({"sent": 5, "received": 4, "lost": 1}, [1, 1, 1, 1], None, WARNING),  # 20%: at the threshold
        ({"sent": 5, "received": 5}, [600] * 5, None, CRITICAL),
        ({"sent": 5, "received": 1, "late": 4}, [1], None, CRITICAL),  # late counts as loss: 80%
        ({"sent": 5, "received": 4, "corrupted": 1}, [1, 1, 1, 1], None, CRITICAL),
        ({"sent": 5, "received": 4, "failed": 1}, [1, 1, 1, 1], None, CRITICAL),
        ({"sent": 0}, [], "connection refused", CRITICAL),
        ({"sent": 0}, [], "cannot resolve nowhere.invalid: Name or service not known", CRITICAL),
        ({"sent": 1}, [], None, UNKNOWN),  # nothing decided before the deadline
    ],
)
def test_monitoring_status_follows_the_thresholds_and_the_guidelines(counts, rtts, error, status):
    code, line = monitoring(OPTIONS, "192.0.2.1", tally(rtts, **counts), error)
    parsed = parse_plugin_output(line)
    assert code == status
    assert STATUS_CODES[parsed["status"]] == status
    assert parsed["service"] == "ECHO"
    if error:
        assert error in parsed["text"]


@pytest.mark.parametrize("level", ["warning", "critical"])
@pytest.mark.parametrize("figure", ["rtt", "loss"])
@pytest.mark.parametrize(("offset", "alerts"), [(0, True), (0.001, False), (-0.001, True)])
def test_a_threshold_alerts_at_or_above_its_value_as_check_ping_does(level, figure, offset, alerts):
    # An average round trip of exactly 125 ms and a loss of exactly 20% (1 of 5), against a
    # threshold at the value, just above it (the value just below: no alert) or just below it.
    t = tally([125, 125, 125, 125], sent=5, received=4, lost=1)
    rtt, loss = (125 + offset, 100) if figure == "rtt" else (10_000, 20 + offset)
    options = make_options("h", **{level: Thresholds(rtt, loss)})
    code, line = monitoring(options, "192.0.2.1", t, None)
    expected = {"warning": WARNING, "critical": CRITICAL}[level] if alerts else OK
    assert (code, parse_plugin_output(line)["status"]) == (expected, STATUS_WORDS[expected])
    if alerts:
        said = "rtt 125.000 ms >= " if figure == "rtt" else "loss 20% >= "
        assert said + f"{rtt if figure == 'rtt' else loss:g}" in line


def test_monitoring_perfdata_carries_the_average_rtt_the_loss_and_the_thresholds():
    _, line = monitoring(OPTIONS, "192.0.2.1", tally([1, 2, 3], sent=4, received=3, lost=1), None)
    parsed = parse_plugin_output(line)
    rtt, loss = parsed["perfdata"]["rtt"], parsed["perfdata"]["loss"]
    assert (float(rtt["value"]), rtt["uom"], rtt["warn"], rtt["crit"], rtt["min"]) == (
        2.0,
        "ms",
        "100",
        "500",
        "0",
    )
    assert (float(loss["value"]), loss["uom"], loss["warn"], loss["crit"]) == (25.0, "%", "20", "60")
    assert (loss["min"], loss["max"]) == ("0", "100")
    assert "192.0.2.1" in parsed["text"] and "loss 25%" in parsed["text"]


def test_monitoring_perfdata_says_U_for_an_rtt_never_measured():
    _, line = monitoring(OPTIONS, None, tally(sent=5, lost=5), None)
    parsed = parse_plugin_output(line)
    assert parsed["perfdata"]["rtt"]["value"] == "U"
    assert parsed["perfdata"]["loss"]["value"] == "100"
    assert parsed["status"] == "CRITICAL"


def test_monitoring_with_only_a_warning_leaves_the_critical_field_empty():
    options = make_options("h", warning=Thresholds(1, 0))
    _, line = monitoring(options, "192.0.2.1", tally([2], sent=1, received=1), None)
    parsed = parse_plugin_output(line)
    assert parsed["status"] == "WARNING"
    assert parsed["perfdata"]["rtt"]["crit"] == ""


def test_monitoring_of_new_connections_adds_the_connect_time():
    options = make_options("h", mode="connect", critical=Thresholds(100, 50))
    t = tally([2], sent=1, received=1)
    t.connect.add(0.004)
    parsed = parse_plugin_output(monitoring(options, "192.0.2.1", t, None)[1])
    assert float(parsed["perfdata"]["connect"]["value"]) == 4.0


def test_the_parser_of_these_tests_refuses_what_the_guidelines_do_not_allow():
    for bad in (
        "ECHO FINE - x | rtt=1ms",
        "ECHO OK x | rtt=1ms",
        "ECHO OK - x | rtt=1 ms",
        "ECHO OK - x | rtt=1ms;;;0;100;7",
        "ECHO OK - x | rtt=1parsecs",
        "ECHO OK - x\nsecond line",
    ):
        with pytest.raises(AssertionError):
            parse_plugin_output(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.000045, "0.045"), (0.00123, "1.23"), (0.0123, "12.3"), (0.1234, "123"), (2.5, "2500")],
)
def test_times_are_printed_to_about_three_digits_as_ping_does(seconds, text):
    assert milliseconds(seconds) == text


def test_lines_read_like_pings():
    options = make_options("localhost:7007", mode="connect", timeout=1)
    assert header(options, "127.0.0.1").startswith("ECHO localhost (127.0.0.1) port 7007 over tcp")
    assert (
        answer_line(options, "127.0.0.1", 3, Verdict.OK, rtt=0.000231, connect=0.0001)
        == "64 bytes from 127.0.0.1 port 7007: seq=3 connect=0.100 ms time=0.231 ms"
    )
    assert answer_line(options, "127.0.0.1", 4, Verdict.LATE, rtt=1.5).endswith(
        "seq=4 time=1500 ms (LATE: after the 1 s timeout)"
    )
    assert "seq=5 time=1.00 ms CORRUPTED: 1 of 64" in answer_line(
        options, "127.0.0.1", 5, Verdict.CORRUPTED, rtt=0.001, detail="1 of 64 bytes differ"
    )
    assert answer_line(options, "127.0.0.1", 6, Verdict.OK, rtt=0.001, reordered=True).endswith(
        "(out of order)"
    )
    assert (
        answer_line(options, "127.0.0.1", 7, Verdict.FAILED, detail="connection refused")
        == "127.0.0.1 port 7007: seq=7 connection refused"
    )
    assert (
        timeout_line(options, "127.0.0.1", 8) == "no answer yet for seq=8 from 127.0.0.1 port 7007 within 1 s"
    )


def test_the_summary_counts_everything_then_gives_the_figures():
    options = make_options("localhost", mode="connect")
    t = tally(
        [1, 2, 3, 4], sent=10, received=4, lost=1, late=1, corrupted=1, failed=1, duplicates=2, reordered=1
    )
    t.connect.add(0.0005)
    lines = summary(options, t, 9.0)
    assert lines[0] == "--- localhost echo statistics ---"
    assert lines[1] == "10 probes sent, 4 answered intact in time, 50% loss, 2 still awaited, time 9000ms"
    assert lines[2] == "1 lost, 1 late, 1 corrupted, 1 failed, 2 duplicates, 1 out of order"
    assert lines[3] == "rtt min/avg/max/mdev = 1.000/2.500/4.000/1.118 ms"
    assert lines[4].startswith("rtt p50/p90/p99 = 2.00")
    assert lines[5] == "connect min/avg/max/mdev = 0.500/0.500/0.500/0.000 ms"


def test_junk_on_a_stream_is_told_in_bytes_beside_the_answers_corrupted():
    t = tally([1, 1], sent=3, received=2, corrupted=1, unexpected_bytes=4_194_240)
    assert summary(make_options("h"), t, 1.0)[2].endswith(", 4194240 bytes matching no probe")
    code, line = monitoring(OPTIONS, "192.0.2.1", t, None)
    parsed = parse_plugin_output(line)
    assert (code, parsed["status"]) == (CRITICAL, "CRITICAL")
    assert "1 answers corrupted, 4194240 bytes matching no probe; 2 of 3 answered" in parsed["text"]
    assert json_report(make_options("h"), "192.0.2.1", t, 1.0, None)["unexpected_bytes"] == 4_194_240
    only_junk = tally([1], sent=1, received=1, unexpected_bytes=5)
    assert (
        "ECHO CRITICAL - h port 7 tcp: 5 bytes matching no probe; 1 of 1"
        in monitoring(OPTIONS_H, None, only_junk, None)[1]
    )


def test_json_has_every_count_the_figures_and_the_status():
    options = make_options("localhost", mode="connect")
    t = tally([1, 3], sent=3, received=2, lost=1)
    t.connect.add(0.002)
    report = json.loads(json.dumps(json_report(options, "127.0.0.1", t, 2.0, None)))
    for key in ("sent", "received", "lost", "late", "corrupted", "duplicates", "reordered", "failed"):
        assert key in report
    assert (report["sent"], report["received"], report["lost"], report["status"]) == (3, 2, 1, 1)
    assert report["rtt_ms"]["min"] == pytest.approx(1.0)
    assert set(report["rtt_ms"]) == {"min", "avg", "max", "mdev", "p50", "p90", "p99"}
    assert report["connect_ms"]["max"] == pytest.approx(2.0)
    assert report["error"] is None
    assert "connect_ms" not in json_report(make_options("localhost"), "127.0.0.1", t, 2.0, None)


def test_the_first_line_and_the_json_name_the_packet_settings_used():
    packets = PacketOptions(source="198.18.0.1", source_port=4000, tos=0xB8, ttl=3, pmtu_discovery="do")
    options = make_options("echo.example", mode="udp", packets=packets)
    assert header(options, "198.18.1.2") == (
        "ECHO echo.example (198.18.1.2) port 7 over udp: 64 bytes a probe, every 1 s, timeout 2 s; "
        "from 198.18.0.1 port 4000, tos 0xb8 (dscp 46, ef), ttl 3, path MTU discovery do"
    )
    report = json_report(options, "198.18.1.2", Tally(), 0.0, None)
    assert {key: report[key] for key in packets.report()} == {
        "source": "198.18.0.1",
        "interface": None,
        "source_port": 4000,
        "tos": 184,
        "dscp": 46,
        "ttl": 3,
        "pmtu_discovery": "do",
    }
    plain = make_options("echo.example")
    assert header(plain, "198.18.1.2").endswith("timeout 2 s")
    assert json_report(plain, None, Tally(), 0.0, None)["ttl"] is None


def test_reporters_write_what_the_options_ask_for():
    out, err = io.StringIO(), io.StringIO()
    assert isinstance(reporter(make_options("h"), out, err), LinesReporter)
    assert isinstance(reporter(make_options("h", json=True), out, err), JsonReporter)
    assert isinstance(reporter(OPTIONS, out, err), MonitoringReporter)


def test_quiet_lines_print_the_header_and_summary_only():
    out, err = io.StringIO(), io.StringIO()
    lines = LinesReporter(make_options("h", quiet=True), out, err)
    lines.started("192.0.2.1")
    lines.answered(1, Verdict.OK, rtt=0.001)
    lines.timed_out(2)
    status = lines.finished(tally([1], sent=2, received=1, lost=1), 1.0, None)
    text = out.getvalue()
    assert text.startswith("ECHO h (192.0.2.1)") and "seq=" not in text
    assert "2 probes sent, 1 answered intact in time, 50% loss" in text
    assert status == 1 and err.getvalue() == ""


def test_an_error_before_the_run_is_one_line_on_stderr_as_pings():
    out, err = io.StringIO(), io.StringIO()
    status = LinesReporter(make_options("nowhere.invalid"), out, err).finished(Tally(), 0.0, "cannot resolve")
    assert (status, out.getvalue(), err.getvalue()) == (2, "", "echod probe: cannot resolve\n")


def test_json_reporter_prints_one_object_and_nothing_else():
    out, err = io.StringIO(), io.StringIO()
    json_reporter = JsonReporter(make_options("h", json=True), out, err)
    json_reporter.started("192.0.2.1")
    json_reporter.answered(1, Verdict.OK, rtt=0.001)
    json_reporter.duplicate(1, 64, 0.002)
    status = json_reporter.finished(tally([1], sent=1, received=1, duplicates=1), 1.0, None)
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["duplicates"] == 1 and status == 0
