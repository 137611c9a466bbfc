"""
The UDP scenarios of the benchmark (README, "Benchmark"), each driven by bench/udpload.c over loopback:

- the no-loss rate: datagrams/s echoed at the highest offered rate at which no more than
  L{LOSS_PCT}% came back late (after L{LATE} s) or not at all, found as RFC 2544's throughput is,
  by stepping an open-loop rate up and then bisecting; with it the server's CPU time a datagram;
- round trips at a light rate, 1,000 datagrams a second from one socket, one in flight at a time;
- a closed loop: 16 datagrams of 64 B in flight from one socket, datagrams/s echoed.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
from dataclasses import dataclass

from servers import BUILD, Server, pinned

UDPLOAD = str(BUILD / "udpload")
#: The open-loop load comes from 8 sockets on 8 source addresses, 127.0.0.1 to 127.0.0.8, as from
#: several hosts: echod's per-peer rate keys on the address.
SOCKETS = 8
#: A step passes when at most this share of its datagrams (percent) came back late or never.
LOSS_PCT = 0.1
#: The ladder: from START datagrams/s, doubling until a step fails (or MAX is passed; halving until one
#: passes, down to MIN, if START fails), then BISECTIONS geometric halvings of the interval between the
#: highest step passed and the lowest failed: 2^(1/8), the answer within 9%.
START, MIN, MAX, BISECTIONS = 20_000, 1_000, 2_000_000, 3
#: In the no-loss search a datagram not back within LATE seconds is late, and one not back DRAIN
#: seconds after the step's window is lost. Loss alone does not show a server falling behind within a
#: short step: echod asks for a 4 MiB receive buffer (8 MiB once the kernel doubles it), about 10,000
#: datagrams of 64 B. Measured, echod offered 73k/s from 8 sockets lost nothing in a 0.35 s step, while
#: the median round trip was 98 ms: the queue was filling (its closed-loop rate was 55k/s to 73k/s). A
#: server that keeps up answers well within 1 ms here (p99 0.4 ms to 0.6 ms in the steps Twisted and the
#: C echo passed), and this shared machine's stalls of a few milliseconds stay within 20 ms; a queue
#: growing 5% faster than it drains passes 20 ms within a step.
LATE, DRAIN = 0.02, 0.2
#: The closed loop sends the next datagram when one is this late.
TIMEOUT = 0.2
LIGHT_RATE, LIGHT_TIMEOUT = 1000, 1.0
WINDOW = 16
#: A step the client could not offer: it skipped more than this share of the schedule (percent).
CLIENT_SKIP_PCT = 5.0


@dataclass(frozen=True)
class UdpScenario:
    name: str
    figure: str  # no-loss, rtt or window
    size: int


UDP_SCENARIOS = [
    UdpScenario("no-loss rate, 64 B", "no-loss", 64),
    UdpScenario("no-loss rate, 1,400 B", "no-loss", 1400),
    UdpScenario("RTT at 1,000/s, 64 B", "rtt", 64),
    UdpScenario("RTT at 1,000/s, 1,400 B", "rtt", 1400),
    UdpScenario(f"{WINDOW} in flight, 64 B, 1 socket", "window", 64),
]


def udpload(server: Server, size: int, args: argparse.Namespace, *options: str) -> dict:
    """One udpload run against a ready server, its figures as udpload prints them."""
    argv = [UDPLOAD, "-p", str(server.ports[server.kind.udp_port]), "-s", str(size), "-P", server.pid]
    argv = pinned([*argv, *options], args.loadgen_cpu)
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def offered(server: Server, size: int, rate: float, args: argparse.Namespace) -> dict:
    """
    One open-loop step at C{rate} datagrams/s: whether it measured the server at all (not
    C{client_bound}) and whether the server C{passed}. A failed step runs once more, as a burst of
    other work on this shared machine that stalls the server for a few milliseconds overflows its
    receive queue (256 datagrams of 64 B, 92 of 1,400 B in the default 208 KiB: bench/udpload.c)
    and fails a step its server would pass; a step that measured the client runs up to twice more.
    """
    options = ["-m", "rate", "-r", f"{rate:.0f}", "-S", str(SOCKETS), "-a", str(SOCKETS), "-t", str(LATE)]
    options += ["-D", str(DRAIN), "-w", str(args.udp_warmup), "-d", str(args.udp_step)]
    for attempt in range(3):
        step = udpload(server, size, args, *options)
        lossy = step["loss_pct"] > LOSS_PCT
        # A client that fell behind its schedule offered less than the rate (sent_s): a step it passes
        # proves nothing about the rate, one it fails still shows the server losing at sent_s. A
        # client whose own receive queues overflowed more than the server's lost the datagrams itself.
        behind = 100 * step["skipped"] > CLIENT_SKIP_PCT * (step["sent"] + step["skipped"])
        step["client_bound"] = step["client_rx_drops"] > step["server_rx_drops"] or (behind and not lossy)
        step["passed"] = not lossy and not step["client_bound"]
        if step["passed"] or (attempt and not step["client_bound"]):
            break
    return step


#: What the results keep of every step of the search.
STEP_KEYS = ("rate", "sent_s", "echoed_s", "loss_pct", "lost", "late", "skipped", "client_bound")
STEP_KEYS += ("server_rx_drops", "client_rx_drops")


def no_loss_rate(server: Server, size: int, args: argparse.Namespace) -> dict:
    """
    The highest rate passed (its step's figures), with every step tried and the C{limit}: the
    lowest rate failed, or the step that measured the client and so ended the search early (the
    answer is then a lower bound).
    """
    steps: list[dict] = []
    passed, failed, limit = None, None, None
    rate, bisections = START, 0
    while True:
        step = offered(server, size, rate, args)
        steps.append(step)
        if step["passed"]:
            passed = step
        elif step["client_bound"] and passed:
            limit = step
            break
        else:
            failed = limit = step
        if passed and failed:
            # Between the rate passed and the rate the client really offered when the server failed.
            above = min(failed["rate"], failed["sent_s"])
            if bisections == BISECTIONS or above <= passed["rate"]:
                break
            bisections += 1
            rate = math.sqrt(passed["rate"] * above)
        else:
            # Up from START until a step fails, or down from it until one passes.
            rate = rate * 2 if passed else rate / 2
            if not MIN <= rate <= MAX:
                break
    # None passed, not even MIN: the figures of the last step stay beside a rate of 0.
    best = passed or {**steps[-1], "echoed_s": 0.0, "server_cpu_us": 0.0}
    return {**best, "limit": limit, "steps": [{k: step[k] for k in STEP_KEYS} for step in steps]}


def run_udp(server: Server, scenario: UdpScenario, args: argparse.Namespace) -> dict:
    """One UDP scenario against a ready server."""
    if scenario.figure == "no-loss":
        return no_loss_rate(server, scenario.size, args)
    if scenario.figure == "rtt":
        options = ["-m", "rate", "-r", str(LIGHT_RATE), "-t", str(LIGHT_TIMEOUT), "-w", "0.1"]
        return udpload(server, scenario.size, args, *options, "-d", str(args.udp_light))
    options = ["-m", "window", "-W", str(WINDOW), "-t", str(TIMEOUT), "-w", str(args.warmup)]
    return udpload(server, scenario.size, args, *options, "-d", str(args.duration))
