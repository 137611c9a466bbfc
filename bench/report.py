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

import udp as udp_plan
from servers import AGAIN, PYLIB

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


def by_pair(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """C{runs} by (scenario, server), in the order they came."""
    grouped = defaultdict(list)
    for run in runs:
        grouped[run["scenario"], run["server"]].append(run)
    return grouped


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
    # The A/A ratio beside the baseline's: a change's cost shows only where it is outside the noise.
    compared = [k for k in (AGAIN, "echod-base") if k in labels]
    head += [f"echod / {labels[k]}" for k in compared]
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
        for key in compared:
            before = pairs.get((name, key))
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
    pairs = {key: Medians(runs) for key, runs in by_pair(held["runs"]).items()}
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


#: The rows of each kind of UDP scenario: its label, the key in a run's results, how to show it.
UDP_FIGURES = {
    "no-loss": [
        ("datagrams/s echoed", "echoed_s", rate),
        ("server CPU µs a datagram", "server_cpu_us", None),
    ],
    "rtt": [("p50 µs", "p50_us", None), ("p99 µs", "p99_us", None)],
    "window": [("datagrams/s echoed", "echoed_s", rate), ("server CPU µs a datagram", "server_cpu_us", None)],
}


def udp_cell(runs: list[dict], key: str, shape: Callable[[float], str] | None) -> str:
    """The median of C{key} over C{runs}, marked when the client may have been the limit."""
    value = statistics.median(run[key] for run in runs)
    if key in ("echoed_s", "server_cpu_us") and not value:
        return "none"  # the no-loss search: not even its lowest rate passed
    text = shape(value) if shape else f"{value:.1f}" if value < 100 else f"{value:.0f}"
    # As for TCP, by the median run: on this shared machine a single round's client often stalls.
    bound = sum(bool((run.get("limit") or {}).get("client_bound")) for run in runs)
    if statistics.median(run["cpu_pct"] for run in runs) >= LOADGEN_BOUND_PCT or 2 * bound > len(runs):
        text += " ‡"
    unanswered = sum(run["lost"] + run["late"] for run in runs)
    if key == "p99_us" and unanswered:
        text += f" ({unanswered} lost)"
    return text


def udp_summary(udp: dict) -> list[str]:
    """A row per UDP figure, a column per server, and echod's ratios to the others."""
    labels = {s["key"]: s["label"] for s in udp["servers"]}
    grouped = by_pair(udp["runs"])
    others = [k for k in labels if k != "echod"]
    head = ["UDP scenario", "figure", *labels.values(), *(f"echod / {labels[k]}" for k in others)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for scenario in udp["scenarios"]:
        name = scenario["name"]
        if (name, "echod") not in grouped:
            continue
        for label, key, shape in UDP_FIGURES[scenario["figure"]]:
            row = [name, label]
            row += [udp_cell(grouped[name, k], key, shape) if (name, k) in grouped else "" for k in labels]
            echod = statistics.median(run[key] for run in grouped[name, "echod"])
            for other in others:
                theirs = grouped.get((name, other))
                row.append(ratio(echod, statistics.median(run[key] for run in theirs)) if theirs else "")
            lines.append("| " + " | ".join(row) + " |")
    return lines


def udp_details(udp: dict) -> list[str]:
    """Per (scenario, server), medians of what udpload counted, and where the no-loss search stopped."""
    labels = {s["key"]: s["label"] for s in udp["servers"]}
    grouped = by_pair(udp["runs"])
    lines = [
        "| scenario | server | sent/s | echoed/s | lost + late, % | p50 µs | p99 µs | server CPU % "
        "| client CPU % | CPU wait % server / client | steps | lowest rate failed: offered/s, lost + late %, "
        "kernel drops at the server / client |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario in udp["scenarios"]:
        for key, label in labels.items():
            runs = grouped.get((scenario["name"], key))
            if not runs:
                continue
            m = Medians(runs)
            limits = [run["limit"] for run in runs if run.get("limit")]
            if limits:
                failed = (
                    f"{rate(statistics.median(s['sent_s'] for s in limits))}, "
                    f"{statistics.median(s['loss_pct'] for s in limits):.2f}, "
                    f"{sum(s['server_rx_drops'] for s in limits)} / "
                    f"{sum(s['client_rx_drops'] for s in limits)}"
                )
            else:
                failed = "none failed" if scenario["figure"] == "no-loss" else ""
            steps = (
                f"{statistics.median(len(run['steps']) for run in runs):.0f}" if "steps" in runs[0] else ""
            )
            lines.append(
                f"| {scenario['name']} | {label} | {rate(m.sent_s)} | {rate(m.echoed_s)} | {m.loss_pct:.3f} "
                f"| {m.p50_us:.1f} | {m.p99_us:.1f} | {m.server_cpu_pct:.0f} | {m.cpu_pct:.0f} "
                f"| {m.server_wait_pct:.0f} / {m.wait_pct:.0f} | {steps} | {failed} |"
            )
    return lines


def udp_section(udp: dict) -> list[str]:
    s = udp["settings"]
    return [
        "## UDP",
        "",
        "echod's UDP echo listener as shipped but for its rates, raised so that they never bind; the "
        "tutorial's Twisted `DatagramProtocol`; a C recvfrom/sendto loop. Load from bench/udpload.c, "
        "every datagram numbered and checked. No-loss rate: the highest open-loop rate, from "
        f"{udp_plan.SOCKETS} sockets on as many source addresses, at which at most {udp_plan.LOSS_PCT}% of "
        f"the datagrams came back late (after {udp_plan.LATE * 1000:g} ms) or never, doubling from "
        f"{rate(udp_plan.START)}/s and then bisecting {udp_plan.BISECTIONS} times; each step "
        f"{s['warmup_s']} s warm-up + {s['step_s']} s, a failed step tried once more. RTT: "
        f"{udp_plan.LIGHT_RATE:,} datagrams/s from one socket, one in flight at a time, for "
        f"{s['light_s']} s. Closed loop: {udp_plan.WINDOW} datagrams in flight from one socket. Server CPU "
        "time a datagram: its utime + stime over the measured window, divided by the datagrams echoed. For "
        "the µs figures a ratio above 1 means echod is the slower or dearer.",
        "",
        *udp_summary(udp),
        "",
        f"‡ in the median round the client used ≥ {LOADGEN_BOUND_PCT}% of its core, or in most rounds the "
        "lowest rate that failed measured the client (it fell behind its schedule, or its own receive "
        "queues overflowed more than the server's): a lower bound for that server.",
        "",
        "Per run, medians over the rounds; for the no-loss rate, the figures of the highest step passed, "
        "and of the lowest failed (kernel drops summed over the rounds: the server's receive queue "
        "overflowing, or the client's):",
        "",
        *udp_details(udp),
    ]


def again_cost(results: dict) -> list[str]:
    """What the A/A pair's runs took of this benchmark's time: every start to stop of `echod (again)`."""
    starts = results["starts"] + (results.get("udp") or {}).get("starts", [])
    spent = sum(entry.get("wall_s", 0) for entry in starts if entry["server"] == AGAIN)
    if not spent:
        return []
    return [
        f"The A/A pair (`echod (again)`, the same code and configuration as echod): {spent:.0f} s of this "
        f"run's {results['elapsed_s']:.0f} s (`--no-again` leaves it out).",
        "",
    ]


def write_report(results: dict, path: Path) -> str:
    """Render the report, write it to `path`, return its text."""
    udp = results.get("udp")
    udp_lines = ["", *udp_section(udp)] if udp and udp["runs"] else []
    if not results["runs"] and not udp_lines:  # bench/run.py --precision-only
        text = "# echod probe precision\n\n" + "\n".join(precision(results)) + "\n"
        path.write_text(text)
        return text
    m = results["machine"]
    lines = [
        "# echod benchmark",
        "",
        f"{m['date']}: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Debian {m['debian']}, "
        f"Python {m['python']}, Twisted {m['twisted']}, uvloop {m['uvloop'] or 'not installed'}, "
        f"gcc {m['gcc']}.",
    ]
    if results["runs"]:
        lines += tcp_section(results)
    lines += udp_lines
    lines.append("")
    complaints = sorted(set(results["complaints"]))
    if complaints:
        lines += ["Warnings logged by the servers:", "", *(f"    {c}" for c in complaints[:20]), ""]
    lines += again_cost(results)
    lines.append(f"Benchmark time: {results['elapsed_s']:.0f} s.")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def tcp_section(results: dict) -> list[str]:
    """The TCP scenarios, the multi-core figure, start-up and memory, and the probe's precision."""
    labels = {s["key"]: s["label"] for s in results["servers"]}
    pairs = {key: Medians(runs) for key, runs in by_pair(results["runs"]).items()}
    s = results["settings"]
    return [
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
    ]
