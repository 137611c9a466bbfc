"""
The benchmark's report: medians over rounds, as Markdown tables.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from servers import PYLIB

#: A load generator using this much of its core may have been the limit, not the server.
LOADGEN_BOUND_PCT = 90


def machine() -> dict:
    """What the figures were measured on."""
    import twisted

    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    uvloop = next(
        (p.name.removesuffix(".dist-info").split("-")[1] for p in PYLIB.glob("uvloop-*.dist-info")), None
    )
    gcc = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()
    try:
        debian = Path("/etc/debian_version").read_text().strip()
    except OSError:
        debian = "?"
    return {
        "date": time.strftime("%Y-%m-%d"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "debian": debian,
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "uvloop": uvloop,
        "gcc": gcc,
    }


def rate(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 10000 else f"{value:,.0f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if a and b else "n/a"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


class Medians:
    """Figures of the runs of one (scenario, server) pair, as medians (errors: summed)."""

    def __init__(self, runs: list[dict]) -> None:
        self.runs = runs

    def __getattr__(self, key: str) -> float:
        return statistics.median(run[key] for run in self.runs)

    @property
    def errors(self) -> int:
        return sum(run["errors"] for run in self.runs)

    @property
    def lost_pct(self) -> float:
        done = sum(run["requests"] for run in self.runs)
        return 100 * self.errors / (self.errors + done) if self.errors else 0.0

    @property
    def per_cpu_second(self) -> float:
        """Requests per second of server CPU time: what the server would do with a core to itself."""
        values = [
            run["req_s"] * 100 / run["server_cpu_pct"] for run in self.runs if run["server_cpu_pct"] > 0
        ]
        return statistics.median(values) if values else 0.0

    def cell(self, value: float) -> str:
        """A figure for a summary table, marked when it is not the server's own."""
        if self.lost_pct > 50:
            return f"{self.lost_pct:.0f}% lost"
        text = rate(value)
        if self.errors:
            text += f" ({self.errors} err)"
        if self.cpu_pct >= LOADGEN_BOUND_PCT:
            text += " ‡"
        return text

    def usable(self, value: float) -> float:
        return 0.0 if self.lost_pct > 50 else value


def summary(results: dict, pairs: dict, labels: dict, figure: Callable[[Medians], float]) -> list[str]:
    """A table of `figure` per scenario and server, with echod's ratios to the main comparators."""
    keys = [s["key"] for s in results["servers"]]
    head = ["scenario", *(labels[k] for k in keys), "echod / plain Twisted", "echod / half-close Twisted"]
    head += ["echod / C", "2 workers / 1 echod"]
    base = labels.get("echod-base")
    if base:
        head.append(f"echod / {base}")
    metrics = "echod-metrics" in labels
    if metrics:
        head.append("metrics on / off")
    # What the PROXY protocol costs echod, and what one balancer in front of two echod gives: each
    # against echod direct, proxy off, in the same run.
    behind = [k for k in ("echod-proxy", "haproxy") if k in labels]
    head += [f"{labels[k]} / echod" for k in behind]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in results["scenarios"]:
        row = [name] + [
            pairs[name, k].cell(figure(pairs[name, k])) if (name, k) in pairs else "" for k in keys
        ]
        echod = pairs[name, "echod"]
        for other in ("twisted", "twisted-hc", "cecho"):
            if (name, other) in pairs:
                theirs = pairs[name, other]
                row.append(ratio(echod.usable(figure(echod)), theirs.usable(figure(theirs))))
            else:
                row.append("")
        workers = pairs.get((name, "echod-2"))
        row.append(ratio(workers.usable(figure(workers)), echod.usable(figure(echod))) if workers else "")
        if base:
            before = pairs.get((name, "echod-base"))
            row.append(ratio(echod.usable(figure(echod)), before.usable(figure(before))) if before else "")
        if metrics:
            on = pairs.get((name, "echod-metrics"))
            row.append(ratio(on.usable(figure(on)), echod.usable(figure(echod))) if on else "")
        for key in behind:
            other = pairs.get((name, key))
            row.append(ratio(other.usable(figure(other)), echod.usable(figure(echod))) if other else "")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def details(results: dict, pairs: dict, labels: dict) -> list[str]:
    lines = [
        "| scenario | server | req/s | MiB/s | p50 µs | p99 µs | errors | server CPU % | server peak RSS MiB"
        " | loadgen CPU % | CPU wait % server / loadgen |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in results["scenarios"]:
        for server in results["servers"]:
            if (name, server["key"]) not in pairs:
                continue
            m = pairs[name, server["key"]]
            lines.append(
                f"| {name} | {labels[server['key']]} | {rate(m.req_s)} | {m.mib_s:.1f} | {m.p50_us:.0f} "
                f"| {m.p99_us:.0f} | {m.errors} | {m.server_cpu_pct:.0f} | {mib(m.peak_rss_kib)} "
                f"| {m.cpu_pct:.0f} | {m.server_wait_pct:.0f} / {m.wait_pct:.0f} |"
            )
    return lines


def extras(results: dict, labels: dict) -> list[str]:
    starts, holds = defaultdict(list), defaultdict(list)
    for start in results["starts"]:
        starts[start["server"]].append(start)
    for hold in results["holds"]:
        holds[hold["server"]].append(hold)
    n = results["settings"]["hold"]
    lines = [
        f"| server | start to ready, s | RSS idle MiB | RSS with {n:,} idle conns MiB | KiB per conn |",
        "|---|---|---|---|---|",
    ]
    for server in results["servers"]:
        key = server["key"]
        ready = statistics.median(s["ready_s"] for s in starts[key])
        idle = statistics.median(s["rss_kib"] for s in starts[key])
        held = statistics.median(h["rss_held_kib"] for h in holds[key])
        per = statistics.median((h["rss_held_kib"] - h["rss_idle_kib"]) / h["held"] for h in holds[key])
        errors = sum(h["errors"] for h in holds[key])
        note = f" ({errors} refused)" if errors else ""
        lines.append(f"| {labels[key]} | {ready:.3f} | {mib(idle)} | {mib(held)}{note} | {per:.1f} |")
    echod = sorted(s["ready_s"] for s in starts["echod"])
    # Runs saved before the benchmark held a notification socket timed echod to its log line too.
    by = {s.get("ready_by", "log line") for s in starts["echod"]}
    to = "sd_notify READY=1" if by == {"READY=1"} else "its `echod serving` line"
    lines += [
        "",
        f"Start to ready: echod to {to}, the others to their `listening on` line. echod, process start "
        f"to {to}: median {statistics.median(echod):.3f} s (min {echod[0]:.3f}, max {echod[-1]:.3f}, "
        f"{len(echod)} starts).",
    ]
    return lines


def scaling(results: dict, labels: dict) -> list[str]:
    """The multi-core table: one worker and two, each held to the same CPU quota (bench/budget.py)."""
    held = results.get("scaling") or {"unavailable": "not measured by this revision of the benchmark"}
    if held["unavailable"]:
        return [f"Not measured: {held['unavailable']}."]
    grouped = defaultdict(list)
    for run in held["runs"]:
        grouped[run["scenario"], run["server"]].append(run)
    pairs = {key: Medians(runs) for key, runs in grouped.items()}
    share = f"{held['share']:.0%}"
    lines = [
        f"| scenario | 1 worker, {share} of a core | 2 workers, {share} each | 2 workers / 1 "
        "| per server CPU-second, 2 / 1 | server CPU %, 1 / 2 | loadgen CPU %, 1 / 2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(run["scenario"] for run in held["runs"]):
        one, two = pairs[name, "echod"], pairs[name, "echod-2"]
        lines.append(
            f"| {name} | {one.cell(one.req_s)} | {two.cell(two.req_s)} | {ratio(two.req_s, one.req_s)} "
            f"| {ratio(two.per_cpu_second, one.per_cpu_second)} | {one.server_cpu_pct:.0f} / "
            f"{two.server_cpu_pct:.0f} | {one.cpu_pct:.0f} / {two.cpu_pct:.0f} |"
        )
    return lines


def precision(results: dict) -> list[str]:
    """The probe's round trips beside a C ping-pong's, against the same C epoll echo, round by round."""
    held = results.get("precision")
    if not held or not held["runs"]:
        return ["Not measured by this revision of the benchmark."]
    by_client, labels = defaultdict(list), {}
    for run in held["runs"]:
        by_client[run["client"]].append(run)
        labels[run["client"]] = run["label"]
    reference = {run["round"]: run["p50"] for run in by_client.get("c", [])}
    lines = [
        "| client | p50 µs | p90 µs | p99 µs | p50 above the C ping-pong's, µs |",
        "|---|---|---|---|---|",
    ]
    for key, runs in by_client.items():
        row = [labels[key]]
        row += [f"{statistics.median(run[p] for run in runs):.1f}" for p in ("p50", "p90", "p99")]
        # The median of the rounds' differences: each difference is measured against the same server
        # within minutes, which the machine's drift from round to round does not reach.
        differences = [run["p50"] - reference[run["round"]] for run in runs if run["round"] in reference]
        row.append("" if key == "c" or not differences else f"{statistics.median(differences):+.1f}")
        lines.append("| " + " | ".join(row) + " |")
    rounds = len(by_client.get("c", []))
    lines += [
        "",
        f"Medians of {rounds} round(s): one connection, a 64-byte message every "
        f"{held['interval_s'] * 1000:g} ms, {by_client['c'][0]['count'] if by_client.get('c') else '?'} "
        "messages a run, every client against the same C epoll echo within a round.",
    ]
    return lines


def write_report(results: dict, path: Path) -> str:
    """Render the report, write it to `path`, return its text."""
    if not results["runs"]:  # bench/run.py --precision-only
        text = "# echod probe precision\n\n" + "\n".join(precision(results)) + "\n"
        path.write_text(text)
        return text
    labels = {s["key"]: s["label"] for s in results["servers"]}
    grouped = defaultdict(list)
    for run in results["runs"]:
        grouped[run["scenario"], run["server"]].append(run)
    pairs = {key: Medians(runs) for key, runs in grouped.items()}
    m, s = results["machine"], results["settings"]
    lines = [
        "# echod benchmark",
        "",
        f"{m['date']}: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Debian {m['debian']}, "
        f"Python {m['python']}, Twisted {m['twisted']}, uvloop {m['uvloop'] or 'not installed'}, "
        f"gcc {m['gcc']}.",
        f"Medians of {s['rounds']} round(s); each run {s['warmup_s']} s warm-up + {s['duration_s']} s "
        "measured on a freshly started server; server and load generator "
        + ("pinned to cores 1 and 0." if s["pinned"] else "not pinned."),
        f"Connections from {s['source_addresses']} loopback source addresses. For the connection "
        "scenarios a request is a connection.",
        "",
        "Requests/s:",
        "",
        *summary(results, pairs, labels, lambda m: m.req_s),
        "",
        "Requests per second of server CPU time: requests/s divided by the share of a core the server used "
        "in the same window. Unlike requests/s it barely moves when other processes take CPU time from the "
        "server, so on a shared machine it is the steadier measure of what each server costs:",
        "",
        *summary(results, pairs, labels, lambda m: m.per_cpu_second),
        "",
        f"‡ the load generator used ≥ {LOADGEN_BOUND_PCT}% of its core: a lower bound for that server. "
        '"lost": requests whose echo never came (the plain Twisted echo drops it on half-close).',
        "",
        "## Per run (medians)",
        "",
        "MiB/s is payload echoed per second, one direction. CPU % is of one core, over the measured window. "
        "CPU wait % is the time the process was runnable but waiting for a core (/proc/PID/schedstat), in "
        "the same window: high values mean other processes competed for the machine during that run. "
        "Errors are summed over rounds.",
        "",
        *details(results, pairs, labels),
        "",
        "## Multi-core",
        "",
        "echod, then two echod processes sharing the ports (`reuse_port`, what `echod@N.socket` does), "
        "each held to the same CPU quota (a cgroup each) so that the workers and the load generator "
        "together fit in the machine; unheld, the figure above is this machine's limit, not echod's:",
        "",
        *scaling(results, labels),
        "",
        "## Start-up and memory",
        "",
        *extras(results, labels),
        "",
        "## The probe's precision",
        "",
        "Round trips on loopback against the C epoll echo: `echod probe` beside a C client doing the "
        "same (bench/pingpong.c), and beside the probe with Twisted's queued write instead of its "
        "send at once:",
        "",
        *precision(results),
        "",
    ]
    complaints = sorted(set(results["complaints"]))
    if complaints:
        lines += ["Warnings logged by the servers:", "", *(f"    {c}" for c in complaints[:20]), ""]
    lines.append(f"Benchmark time: {results['elapsed_s']:.0f} s.")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text
