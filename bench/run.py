"""
Benchmark echod against other echo servers on this machine: `make bench` (README, "Benchmark").

    python bench/run.py [--quick] [--rounds N] [--share S] [--pin] [--pin-study] [--report RUNS_JSON]
                        [--baseline REF DIR] [--servers KEY,...] [--only tcp|udp] [--no-again]

Each (scenario, server) pair runs once per round on a freshly started server; within a round the
order of the servers rotates, so that drift on a shared machine hits all of them alike, and the
report gives medians over the rounds. Raw figures of every run go to build/bench/runs.json. A second
echod, the same code and configuration as the first, runs beside it as any other server does (the
A/A pair): "echod / echod (again)" is how far this machine's noise alone moves a ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from budget import budgets, unavailable
from report import machine, write_report
from servers import AGAIN, BUILD, Kind, Server, kinds, pinned, udp_kinds
from udp import UDP_SCENARIOS, UdpScenario, run_udp

LOADGEN = str(BUILD / "loadgen")
PINGPONG = str(BUILD / "pingpong")
#: Connections come from 127.0.0.1 .. 127.0.0.20, as from several client hosts: from one address the
#: kernel runs short of reusable ephemeral ports near 14k new connections/s, and echod's shipped
#: per-peer cap (64) would refuse the 100- and 1,000-connection scenarios.
SOURCE_ADDRESSES = 20
#: With --pin, the load generator and the server each get a core of their own. Not the default: on this
#: shared machine, pinned figures scattered more (see README, "Benchmark"), as a pinned process cannot
#: move away from a core another process is using.
LOADGEN_CPU, SERVER_CPU = 0, 1


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: str  # loadgen mode: echo, connect or bytecount
    size: int
    conns: int
    only: tuple[str, ...] = ()  # server keys, if not every server
    port: str = "echo"  # which of the server's listeners

    def applies(self, kind: Kind) -> bool:
        return not self.only or kind.key in self.only


SCENARIOS = [
    Scenario("echo 1 KiB, 10 conns", "echo", 1024, 10),
    Scenario("echo 10 KiB, 10 conns", "echo", 10 * 1024, 10),
    Scenario("echo 100 KiB, 10 conns", "echo", 100 * 1024, 10),
    Scenario("echo 1 KiB, 100 conns", "echo", 1024, 100),
    Scenario("new conns/s, 64 B, half-close", "connect", 64, 10),
    Scenario(
        "bytecount conns/s, 64 B",
        "bytecount",
        64,
        10,
        only=("echod", AGAIN, "echod-base", "echod-metrics", "echod-proxy", "haproxy"),
        port="bytecount",
    ),
]


#: The multi-core figure (bench/budget.py): one echod, then two sharing the ports, each held to the
#: same share of a core. The connection counts give the kernel's reuse_port hash enough connections
#: to spread evenly: with 10, one worker often gets 7 and the other 3.
SCALING = [
    Scenario("echo 1 KiB, 100 conns", "echo", 1024, 100),
    Scenario("echo 10 KiB, 100 conns", "echo", 10 * 1024, 100),
    Scenario("echo 100 KiB, 20 conns", "echo", 100 * 1024, 20),
    Scenario("new conns/s, 64 B, half-close", "connect", 64, 20),
]
#: The probe's precision (README, "Benchmark"): round trips of one connection, one 64-byte message
#: every interval, against the C epoll echo, from `echod probe` and from a C client doing the same.
#: An interval rather than back-to-back messages, as the probe runs: the round trips of a client that
#: sleeps between messages include its waking up.
PRECISION_COUNT, PRECISION_INTERVAL = 1000, 0.003


def precision_clients(port: int, count: int) -> list[tuple[str, str, list[str]]]:
    """The clients whose round trips are compared: key, label, command line."""
    common = ["-c", str(count), "-i", str(PRECISION_INTERVAL)]
    probe_args = ["--json", "-q", *common, "-W", "5", f"127.0.0.1:{port}"]
    return [
        ("c", "C ping-pong (bench/pingpong.c)", [PINGPONG, "-p", str(port), *common]),
        ("probe", "echod probe", [sys.executable, "-m", "echod", "probe", *probe_args]),
        (
            "probe-queued",
            "echod probe, each probe queued to the next turn (Twisted's write)",
            [sys.executable, str(Path(__file__).parent / "probe_queued.py"), *probe_args],
        ),
    ]


def precision(round_: int, args: argparse.Namespace, cecho: Kind, complaints: list[str]) -> list[dict]:
    """One round of the probe's precision: every client, in turn, against one C epoll echo."""
    runs = []
    count = PRECISION_COUNT // 2 if args.quick else PRECISION_COUNT
    with started(cecho, args, [], complaints) as server:
        for key, label, argv in rotate(precision_clients(server.ports["echo"], count), round_):
            out = subprocess.run(pinned(argv, args.loadgen_cpu), capture_output=True, text=True, check=True)
            result = json.loads(out.stdout)
            if key == "c":
                figures = {p: result[f"{p}_us"] for p in ("p50", "p90", "p99")}
                answered = result["count"]
            else:
                figures = {p: result["rtt_ms"][p] * 1000 for p in ("p50", "p90", "p99")}
                answered = result["received"]
            runs.append({"round": round_, "client": key, "label": label, "count": answered, **figures})
            print(
                f"round {round_ + 1}/{args.rounds}  probe precision {label:<66} p50 {figures['p50']:7.1f} us"
                f"  p99 {figures['p99']:8.1f} us  {answered}/{count} answered",
                flush=True,
            )
    return runs


#: Each worker's CPU quota: 2 x 0.4 core for the workers leaves 1.2 cores of this 2-core machine for
#: the load generator, which needs up to about as much CPU as the servers at 100 KiB.
SHARE = 0.4


def run_load(server: Server, scenario: Scenario, args: argparse.Namespace) -> dict:
    """One loadgen run against a ready server; the load generator also reads the server's CPU time."""
    server.reset_peak()
    argv = [LOADGEN, "-p", str(server.ports[scenario.port]), "-m", scenario.mode, "-s", str(scenario.size)]
    argv += ["-c", str(scenario.conns), "-a", str(SOURCE_ADDRESSES), "-w", str(args.warmup)]
    argv += ["-d", str(args.duration), "-P", str(server.pid), *server.kind.loadgen_args]
    out = subprocess.run(pinned(argv, args.loadgen_cpu), capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    result["peak_rss_kib"] = server.memory_kib("VmHWM")
    return result


def hold_connections(server: Server, count: int) -> dict:
    """RSS of a ready server at idle, then with `count` idle connections open (each echoed once)."""
    time.sleep(0.2)
    idle = server.memory_kib("VmRSS")
    argv = [LOADGEN, "-p", str(server.ports["echo"]), "-m", "hold", "-c", str(count), "-s", "64"]
    argv += ["-a", str(SOURCE_ADDRESSES), *server.kind.loadgen_args]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
        try:
            opened = json.loads(holder.stdout.readline())
            time.sleep(0.3)
            loaded = server.memory_kib("VmRSS")
        finally:
            holder.stdin.close()
            holder.wait(10)
    return {"rss_idle_kib": idle, "rss_held_kib": loaded, "held": count, **opened}


def rotate(items: list, by: int) -> list:
    by %= len(items)
    return items[by:] + items[:by]


@contextlib.contextmanager
def started(kind: Kind, args: argparse.Namespace, log: list[dict], complaints: list[str]) -> Iterator[Server]:
    """
    A ready server of `kind`, stopped on leaving; its start-up time, RSS and the wall-clock time it
    took from start to stop go to `log`.
    """
    server = Server(kind, cpu=args.server_cpu)
    began = time.monotonic()
    entry: dict = {"server": kind.key}
    try:
        server.start()
        rss = server.memory_kib("VmRSS")
        ready_by = "READY=1" if kind.notifies else "log line"
        entry.update(ready_s=server.ready_s, ready_by=ready_by, rss_kib=rss)
        log.append(entry)
        yield server
    finally:
        server.stop()
        entry["wall_s"] = time.monotonic() - began
        complaints.extend(f"{kind.key}: {line}" for line in server.complaints())


def chosen(servers: list[Kind], args: argparse.Namespace) -> list[Kind]:
    """The servers --servers names, and echod and its A/A twin always: every ratio is against echod."""
    if not args.servers:
        return servers
    return [k for k in servers if k.key in ("echod", AGAIN) or k.key in args.servers]


def benchmark(args: argparse.Namespace) -> dict:
    baseline = (args.baseline[0], Path(args.baseline[1])) if args.baseline else None
    servers = chosen(kinds(baseline, args.again), args)
    udp_servers = chosen(udp_kinds(baseline, args.again), args)
    tcp, udp = args.only in (None, "tcp"), args.only in (None, "udp") and not args.precision_only
    udp_runs: list[dict] = []
    udp_starts: list[dict] = []
    runs: list[dict] = []
    starts: list[dict] = []
    holds: list[dict] = []
    complaints: list[str] = []
    scaling: list[dict] = []
    workers = [k for k in servers if k.key in ("echod", "echod-2")]
    # The probe's precision is measured against the C epoll echo whichever servers are chosen.
    cecho = next(k for k in kinds() if k.key == "cecho")
    cannot_budget = unavailable(args.share)
    if len(workers) < 2:
        cannot_budget = "the two workers were not among the servers chosen (--servers)"
    precise: list[dict] = []
    began = time.monotonic()
    for round_ in range(args.rounds):
        if tcp:
            precise += precision(round_, args, cecho, complaints)
        if tcp and not args.precision_only:
            for scenario in SCENARIOS:
                for kind in rotate([k for k in servers if scenario.applies(k)], round_):
                    with started(kind, args, starts, complaints) as server:
                        record(runs, round_, scenario, kind, run_load(server, scenario, args), args)
            for kind in rotate(servers, round_):
                with started(kind, args, starts, complaints) as server:
                    holds.append({"round": round_, "server": kind.key, **hold_connections(server, args.hold)})
            if not cannot_budget:
                scaling += scale(round_, args, workers, complaints)
        for scenario in UDP_SCENARIOS if udp else ():
            for kind in rotate(udp_servers, round_):
                with started(kind, args, udp_starts, complaints) as server:
                    result = run_udp(server, scenario, args)
                udp_runs.append({"round": round_, "scenario": scenario.name, "server": kind.key, **result})
                record_udp(round_, scenario, kind, result, args)
    return {
        "machine": machine(),
        "settings": {
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "pinned": args.server_cpu is not None,
            "source_addresses": SOURCE_ADDRESSES,
            "hold": args.hold,
        },
        "servers": [{"key": k.key, "label": k.label} for k in servers] if runs else [],
        "scenarios": [s.name for s in SCENARIOS],
        "runs": runs,
        "scaling": {"share": args.share, "unavailable": cannot_budget, "runs": scaling},
        "starts": starts,
        "holds": holds,
        "precision": {"interval_s": PRECISION_INTERVAL, "runs": precise},
        "udp": {
            "servers": [{"key": k.key, "label": k.label} for k in udp_servers] if udp_runs else [],
            "scenarios": [{"name": s.name, "figure": s.figure, "size": s.size} for s in UDP_SCENARIOS],
            "runs": udp_runs,
            "starts": udp_starts,
            "settings": {
                "step_s": args.udp_step,
                "light_s": args.udp_light,
                "warmup_s": args.udp_warmup,
            },
        },
        "complaints": complaints,
        "elapsed_s": time.monotonic() - began,
    }


def scale(round_: int, args: argparse.Namespace, workers: list[Kind], complaints: list[str]) -> list[dict]:
    """One round of the multi-core scenarios: 1 and 2 echod workers, each held to `args.share` of a core."""
    runs = []
    # Never pinned: pinned to one core, two workers would share it.
    free = argparse.Namespace(**{**vars(args), "server_cpu": None, "loadgen_cpu": None})
    for scenario in SCALING:
        for kind in rotate(workers, round_):
            with budgets(2, args.share) as held, started(kind, free, [], complaints) as server:
                held.admit(int(pid) for pid in server.pid.split(","))
                result = run_load(server, scenario, free)
            record(runs, round_, scenario, kind, result, args, f"  (workers held to {args.share:.0%})")
    return runs


def record(
    runs: list[dict],
    round_: int,
    scenario: Scenario,
    kind: Kind,
    result: dict,
    args: argparse.Namespace,
    note: str = "",
) -> None:
    """Keep one run's figures and say how it went."""
    runs.append({"round": round_, "scenario": scenario.name, "server": kind.key, **result})
    print(
        f"round {round_ + 1}/{args.rounds}  {scenario.name:<32} {kind.label:<19}"
        f"{result['req_s']:>10.0f}/s  errors {result['errors']}{note}",
        flush=True,
    )


def record_udp(
    round_: int, scenario: UdpScenario, kind: Kind, result: dict, args: argparse.Namespace
) -> None:
    """Say how one UDP run went."""
    if scenario.figure == "rtt":
        figures = f"p50 {result['p50_us']:7.1f} us  p99 {result['p99_us']:8.1f} us"
    else:
        figures = f"{result['echoed_s']:>10.0f}/s  server {result['server_cpu_us']:6.2f} us/datagram"
    lost = f"lost {result['lost']}, late {result['late']}"
    if scenario.figure == "no-loss":
        limit = result["limit"]
        if not limit:
            lost = "no loss at any rate"
        elif limit["client_bound"]:
            lost = f"the client was the limit at {limit['sent_s']:.0f}/s"
        else:
            lost = f"{limit['loss_pct']:.2f}% lost or late at {limit['sent_s']:.0f}/s"
        lost = f"{len(result['steps'])} steps, {lost}"
    print(
        f"round {round_ + 1}/{args.rounds}  udp {scenario.name:<28} {kind.label:<19}{figures}  {lost}",
        flush=True,
    )


def pin_study(args: argparse.Namespace, repeats: int = 5) -> None:
    """Whether pinning steadies the figures: the same runs pinned and unpinned, alternately."""
    chosen = {k.key: k for k in kinds()}
    for scenario in (SCENARIOS[0], SCENARIOS[2], SCENARIOS[4]):
        for key in ("echod", "cecho"):
            figures: dict[bool, list[float]] = {True: [], False: []}
            for i in range(2 * repeats):
                pin = i % 2 == 0
                args.server_cpu, args.loadgen_cpu = (SERVER_CPU, LOADGEN_CPU) if pin else (None, None)
                with started(chosen[key], args, [], []) as server:
                    figures[pin].append(run_load(server, scenario, args)["req_s"])
            for pin, values in figures.items():
                median = statistics.median(values)
                how = "pinned" if pin else "unpinned"
                print(
                    f"{scenario.name:<32} {key:<6} {how:<8} median {median:>9.0f}/s  min {min(values):>9.0f}"
                    f"  max {max(values):>9.0f}  cv {100 * statistics.stdev(values) / median:4.1f}%",
                    flush=True,
                )


def share(text: str) -> float:
    """A CPU quota for --share: at least 0.1 (a 1 ms quota in the 10 ms period), at most a core."""
    value = float(text)
    if not 0.1 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: a share of a core from 0.1 to 1")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one short round: a smoke run of about a minute")
    parser.add_argument("--rounds", type=int, help="rounds over every (scenario, server) pair (default 5)")
    parser.add_argument(
        "--pin", action="store_true", help="pin the server to core 1, the load generator to 0"
    )
    parser.add_argument("--pin-study", action="store_true", help="measure whether pinning steadies figures")
    parser.add_argument(
        "--share", type=share, default=SHARE, help=f"a worker's CPU quota in the multi-core figure ({SHARE})"
    )
    parser.add_argument("--hold", type=int, default=1000, help="idle connections for the RSS figure")
    parser.add_argument(
        "--precision-only", action="store_true", help="only the probe's round trips beside a C client's"
    )
    parser.add_argument("--report", metavar="RUNS_JSON", help="only write the report again from saved runs")
    parser.add_argument(
        "--baseline",
        nargs=2,
        metavar=("REF", "DIR"),
        help="also run echod from DIR, a checkout of commit REF (make bench BENCH_BASELINE=REF)",
    )
    parser.add_argument(
        "--servers",
        type=lambda text: set(text.split(",")),
        help="only these servers besides echod, by key: echod-base, echod-proxy, echod-2, twisted,"
        " twisted-hc, asyncio, uvloop, cecho, haproxy; for UDP twisted, udpecho"
        " (BENCH_ARGS='--servers echod-proxy,haproxy')",
    )
    parser.add_argument(
        "--only",
        choices=("tcp", "udp"),
        help="only the TCP scenarios (with the probe's), or only the UDP ones",
    )
    parser.add_argument(
        "--again",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the A/A pair: a second, identical echod beside the first (default: yes)",
    )
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 5)
    # Five short rounds rather than three long ones: a median over more rounds shrugs off more of the
    # bursts of other work on a shared machine, and 1.2 s is tens of thousands of requests per run.
    args.warmup, args.duration = (0.2, 0.8) if args.quick else (0.3, 1.2)
    # A step of the no-loss search, and the light-rate round trips (1,000 datagrams a second).
    args.udp_warmup = 0.1
    args.udp_step, args.udp_light = (0.2, 0.5) if args.quick else (0.3, 1.0)
    args.server_cpu, args.loadgen_cpu = (SERVER_CPU, LOADGEN_CPU) if args.pin else (None, None)
    if args.pin_study:
        pin_study(args)
        return
    if args.report:
        with open(args.report) as f:
            results = json.load(f)
    else:
        results = benchmark(args)
        (BUILD / "runs.json").write_text(json.dumps(results, indent=1))
    text = write_report(results, BUILD / "results.md")
    print("\n" + text)
    print(f"bench: {results['elapsed_s']:.0f} s; report in {BUILD / 'results.md'}, every run in runs.json")


if __name__ == "__main__":
    sys.exit(main())
