"""
What `echod probe` prints: a line per probe and a summary as ping(8) prints
them, one JSON object (--json), or one monitoring-plugin line (--warning,
--critical). The text is made by pure functions; the reporters only write it.
"""

from __future__ import annotations

import json
from typing import IO

from echod.probe.options import ProbeOptions, Thresholds
from echod.probe.tally import Distribution, Tally, Verdict, exit_status

#: Monitoring-plugin statuses (Monitoring Plugins Development Guidelines, "Plugin Return Codes").
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS_WORDS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


def milliseconds(seconds: float) -> str:
    """A time as ping(8) prints one probe's: three significant digits below 100 ms, whole ms above."""
    ms = seconds * 1000
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def duration(seconds: float) -> str:
    return f"{seconds:g} s"


def peer(options: ProbeOptions, address: str) -> str:
    return f"{address} port {options.port}"


def header(options: ProbeOptions, address: str) -> str:
    """The first line, as ping's: what is probed, how, how much and how often."""
    name = options.host if options.host == address else f"{options.host} ({address})"
    how = {"tcp": "tcp", "connect": "tcp, a connection a probe", "udp": "udp", "bytecount": "bytecount"}
    packets = options.packets.describe()
    return (
        f"ECHO {name} port {options.port} over {how[options.mode]}: {options.size} bytes a probe, "
        f"every {duration(options.interval)}, timeout {duration(options.timeout)}"
        + (f"; {packets}" if packets else "")
    )


def answer_line(
    options: ProbeOptions,
    address: str,
    seq: int,
    verdict: Verdict,
    *,
    size: int | None = None,
    rtt: float | None = None,
    connect: float | None = None,
    reordered: bool = False,
    detail: str = "",
) -> str:
    """The line for a probe's verdict (lost probes have L{timeout_line} instead)."""
    if verdict is Verdict.FAILED:
        return f"{peer(options, address)}: seq={seq} {detail}"
    text = f"{options.size if size is None else size} bytes from {peer(options, address)}: seq={seq}"
    if connect is not None:
        text += f" connect={milliseconds(connect)} ms"
    if rtt is not None:
        text += f" time={milliseconds(rtt)} ms"
    if verdict is Verdict.LATE:
        text += f" (LATE: after the {duration(options.timeout)} timeout)"
    elif verdict is Verdict.CORRUPTED:
        text += f" CORRUPTED: {detail}"
    if reordered:
        text += " (out of order)"
    return text


def timeout_line(options: ProbeOptions, address: str, seq: int, detail: str = "") -> str:
    text = f"no answer yet for seq={seq} from {peer(options, address)} within {duration(options.timeout)}"
    return f"{text} ({detail})" if detail else text


def duplicate_line(options: ProbeOptions, address: str, seq: int, size: int, rtt: float | None) -> str:
    text = f"{size} bytes from {peer(options, address)}: seq={seq}"
    if rtt is not None:
        text += f" time={milliseconds(rtt)} ms"
    return text + " (DUP!)"


def unexpected_line(options: ProbeOptions, address: str, size: int, detail: str) -> str:
    return f"{size} bytes from {peer(options, address)} that match no probe sent: {detail}"


def _figures(name: str, distribution: Distribution) -> list[str]:
    if not distribution.count:
        return []
    ms = distribution.summary_ms()
    return [
        f"{name} min/avg/max/mdev = {ms['min']:.3f}/{ms['avg']:.3f}/{ms['max']:.3f}/{ms['mdev']:.3f} ms",
        f"{name} p50/p90/p99 = {ms['p50']:.3f}/{ms['p90']:.3f}/{ms['p99']:.3f} ms",
    ]


def summary(options: ProbeOptions, tally: Tally, elapsed: float) -> list[str]:
    """The closing lines, as ping's: counts, loss, then the round-trip (and connect) figures."""
    loss = tally.loss_percent
    first = f"{tally.sent} probes sent, {tally.received} answered intact in time"
    first += f", {_percent(loss)} loss" if loss is not None else ""
    if tally.in_flight:
        first += f", {tally.in_flight} still awaited"
    first += f", time {elapsed * 1000:.0f}ms"
    counts = (
        f"{tally.lost} lost, {tally.late} late, {tally.corrupted} corrupted, {tally.failed} failed, "
        f"{tally.duplicates} duplicates, {tally.reordered} out of order"
    )
    if tally.unexpected:
        counts += f", {tally.unexpected} answers matching no probe"
    if tally.unexpected_bytes:
        counts += f", {tally.unexpected_bytes} bytes matching no probe"
    lines = [f"--- {options.target} echo statistics ---", first, counts]
    lines += _figures("rtt", tally.rtt)
    if options.new_connections:
        lines += _figures("connect", tally.connect)
    return lines


def _percent(value: float) -> str:
    return f"{value:.0f}%" if value == int(value) else f"{value:.3g}%"


def json_report(
    options: ProbeOptions, address: str | None, tally: Tally, elapsed: float, error: str | None
) -> dict:
    """The object --json prints: every count, the figures in ms (None without samples), the exit status."""
    report = {
        "target": options.target,
        "address": address,
        "port": options.port,
        "mode": options.mode,
        "size": options.size,
        **options.packets.report(),
        "sent": tally.sent,
        "received": tally.received,
        "lost": tally.lost,
        "late": tally.late,
        "corrupted": tally.corrupted,
        "failed": tally.failed,
        "duplicates": tally.duplicates,
        "reordered": tally.reordered,
        "unexpected": tally.unexpected,
        "unexpected_bytes": tally.unexpected_bytes,
        "in_flight": tally.in_flight,
        "loss_percent": tally.loss_percent,
        "rtt_ms": tally.rtt.summary_ms(),
        "elapsed_s": round(elapsed, 6),
        "error": error,
        "status": exit_status(tally, error is not None),
    }
    if options.new_connections:
        report["connect_ms"] = tally.connect.summary_ms()
    return report


def _reached(value: float | None, threshold: float | None) -> bool:
    # At or above, as check_ping and check_icmp alert (their thresholds, not the guidelines'
    # ranges, are the convention a check of round trips and loss is read by).
    return value is not None and threshold is not None and value >= threshold


def _threshold(thresholds: Thresholds | None, field: str) -> str:
    return f"{getattr(thresholds, field):g}" if thresholds else ""


def monitoring(
    options: ProbeOptions, address: str | None, tally: Tally, error: str | None
) -> tuple[int, str]:
    """
    The status and the one line of a monitoring check, in the convention of
    check_ping(8) and the Monitoring Plugins Development Guidelines:
    C{ECHO STATUS - text | rtt=AVGms;WARN;CRIT;0 loss=PCT%;WARN;CRIT;0;100}.

    CRITICAL when the service failed (refused, reset, a name that does not
    resolve: the guidelines keep UNKNOWN for the plugin's own failures) or
    any byte came back corrupted; else by the average round trip and the
    loss against the thresholds (alert at or above them, as check_ping).
    """
    loss = tally.loss_percent
    avg = tally.rtt.mean * 1000 if tally.rtt.count else None
    where = options.host if address in (None, options.host) else f"{options.host} ({address})"
    text = f"{where} port {options.port} {options.mode}"
    reasons = []
    if error is not None:
        status = CRITICAL
        reasons.append(error)
    elif not tally.decided:
        # Nothing was measured (a deadline shorter than the first answer could take): no verdict.
        status = UNKNOWN
        reasons.append(f"no probe was decided before the run ended ({tally.sent} sent)")
    elif tally.corrupted or tally.unexpected or tally.unexpected_bytes:
        status = CRITICAL
        corrupted = []
        if tally.corrupted or tally.unexpected:
            corrupted.append(f"{tally.corrupted + tally.unexpected} answers corrupted")
        if tally.unexpected_bytes:
            corrupted.append(f"{tally.unexpected_bytes} bytes matching no probe")
        reasons.append(", ".join(corrupted))
    elif tally.failed:
        status = CRITICAL
        reasons.append(f"{tally.failed} probes failed")
    else:
        status = OK
    for level, thresholds in ((CRITICAL, options.critical), (WARNING, options.warning)):
        if thresholds is None:
            continue
        crossed = []
        if _reached(avg, thresholds.rtt_ms):
            crossed.append(f"rtt {avg:.3f} ms >= {thresholds.rtt_ms:g}")
        if _reached(loss, thresholds.loss_percent):
            crossed.append(f"loss {_percent(loss)} >= {thresholds.loss_percent:g}%")
        if crossed and level > status:
            status = level
            reasons += crossed
    answered = f"{tally.received} of {tally.decided} answered intact in time"
    figures = f"loss {_percent(loss)}" if loss is not None else "no probe decided"
    if avg is not None:
        figures += f", rtt avg {avg:.3f} ms"
    if tally.decided:
        reasons.append(f"{answered}, {figures}")
    line = f"ECHO {STATUS_WORDS[status]} - {text}: {'; '.join(reasons)}"
    perfdata = [
        _perf("rtt", avg, "ms", options, "rtt_ms", "0"),
        _perf("loss", loss, "%", options, "loss_percent", "0;100"),
    ]
    if options.new_connections:
        connect = tally.connect.mean * 1000 if tally.connect.count else None
        perfdata.append(_perf("connect", connect, "ms", options, None, "0"))
    return status, f"{line} | {' '.join(perfdata)}"


def _perf(
    label: str, value: float | None, unit: str, options: ProbeOptions, field: str | None, bounds: str
) -> str:
    """C{label=value[UOM];warn;crit;min;max}, the guidelines' performance data."""
    warn = _threshold(options.warning, field) if field else ""
    crit = _threshold(options.critical, field) if field else ""
    return f"{label}={_perf_value(value, unit)};{warn};{crit};{bounds}"


def _perf_value(value: float | None, unit: str) -> str:
    # The guidelines' "U": a value that could not be determined (no answer to average).
    if value is None:
        return "U"
    return f"{value:.3f}{unit}" if unit == "ms" else f"{value:g}{unit}"


def unknown_line(message: str) -> str:
    """The line of a check that could not run at all (a bad argument): UNKNOWN."""
    return f"ECHO UNKNOWN - {message}"


class LinesReporter:
    """ping(8)'s output: a header, a line per probe (not with -q), problems on stderr, a summary."""

    def __init__(self, options: ProbeOptions, out: IO[str], err: IO[str]) -> None:
        self.options, self.out, self.err = options, out, err
        self.address = options.host
        self.began = False

    def _line(self, text: str) -> None:
        if not self.options.quiet:
            self.out.write(text + "\n")
            self.out.flush()

    def started(self, address: str) -> None:
        self.address = address
        self.began = True
        self.out.write(header(self.options, address) + "\n")
        self.out.flush()

    def answered(self, seq: int, verdict: Verdict, **details) -> None:
        self._line(answer_line(self.options, self.address, seq, verdict, **details))

    def timed_out(self, seq: int, detail: str = "") -> None:
        self._line(timeout_line(self.options, self.address, seq, detail))

    def duplicate(self, seq: int, size: int, rtt: float | None) -> None:
        self._line(duplicate_line(self.options, self.address, seq, size, rtt))

    def unexpected(self, size: int, detail: str) -> None:
        self._line(unexpected_line(self.options, self.address, size, detail))

    def finished(self, tally: Tally, elapsed: float, error: str | None) -> int:
        if error is not None:
            self.err.write(f"echod probe: {error}\n")
            self.err.flush()
        if self.began:  # as ping: a name that does not resolve gets its error, and nothing else
            self.out.write("\n" + "\n".join(summary(self.options, tally, elapsed)) + "\n")
            self.out.flush()
        return exit_status(tally, error is not None)


class _FinalOnly:
    """A reporter that says nothing until the end."""

    def __init__(self, options: ProbeOptions, out: IO[str], err: IO[str]) -> None:
        self.options, self.out, self.err = options, out, err
        self.address: str | None = None

    def started(self, address: str) -> None:
        self.address = address

    def answered(self, seq: int, verdict: Verdict, **details) -> None:
        pass

    def timed_out(self, seq: int, detail: str = "") -> None:
        pass

    def duplicate(self, seq: int, size: int, rtt: float | None) -> None:
        pass

    def unexpected(self, size: int, detail: str) -> None:
        pass


class JsonReporter(_FinalOnly):
    """--json: one object on stdout at the end; an error also on stderr, for a human reading along."""

    def finished(self, tally: Tally, elapsed: float, error: str | None) -> int:
        if error is not None:
            self.err.write(f"echod probe: {error}\n")
            self.err.flush()
        report = json_report(self.options, self.address, tally, elapsed, error)
        self.out.write(json.dumps(report) + "\n")
        self.out.flush()
        return report["status"]


class MonitoringReporter(_FinalOnly):
    """--warning/--critical: one monitoring-plugin line, and its status."""

    def finished(self, tally: Tally, elapsed: float, error: str | None) -> int:
        status, line = monitoring(self.options, self.address, tally, error)
        self.out.write(line + "\n")
        self.out.flush()
        return status


def reporter(
    options: ProbeOptions, out: IO[str], err: IO[str]
) -> LinesReporter | JsonReporter | MonitoringReporter:
    """The reporter the options ask for."""
    if options.monitoring:
        return MonitoringReporter(options, out, err)
    if options.json:
        return JsonReporter(options, out, err)
    return LinesReporter(options, out, err)
