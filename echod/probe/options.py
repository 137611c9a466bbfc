"""
What `echod probe` is asked to do: its settings and the grammar of its values, pure, no I/O.

The command line itself is argparse's, in L{echod.cli}; this module holds
what the values mean and their limits, so that they are tested on their own.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field

from echod.addresses import literal_family, split_host_port
from echod.probe.packets import PacketOptions, check_source_family

#: --tcp (one persistent connection), --connect (a connection a probe), --udp, --bytecount.
MODES = ("tcp", "connect", "udp", "bytecount")
#: RFC 862's port, and echod's bytecount port.
ECHO_PORT = 7
BYTECOUNT_PORT = 50007

#: The largest payload over a stream, as echod's default max_message_size.
MAX_STREAM_SIZE = 16 << 20
#: The largest UDP payload: 65535 less the IPv4 (20) and UDP (8) headers; IPv6's
#: payload length excludes its own header, so only the UDP header counts.
MAX_DATAGRAM_SIZE = {socket.AF_INET: 65507, socket.AF_INET6: 65527}
_FAMILY_NAMES = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}
#: A datagram's answer is told from the others by the sequence number in its first 8 bytes.
MIN_DATAGRAM_SIZE = 8
#: The shortest interval between probes.
MIN_INTERVAL = 0.001
#: Probes of a monitoring check unless -c says otherwise, as check_ping(8) sends.
MONITORING_COUNT = 5


@dataclass(frozen=True)
class Thresholds:
    """
    A monitoring threshold: average round trip in ms and loss in percent;
    alert at or above either, as check_ping(8) and check_icmp(8) do.
    """

    rtt_ms: float
    loss_percent: float

    def __str__(self) -> str:
        return f"{self.rtt_ms:g},{self.loss_percent:g}%"


_THRESHOLDS = re.compile(r"\s*(\d+(?:\.\d*)?)\s*,\s*(\d+(?:\.\d*)?)\s*%?\s*")


def parse_thresholds(text: str) -> Thresholds:
    """
    Parse C{RTT_MS,LOSS%} as check_ping(8) writes its thresholds, e.g. C{100,20%}.

    @raise ValueError: if C{text} is not such a pair, or the loss is over 100%.
    """
    match = _THRESHOLDS.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not RTT_MS,LOSS% (e.g. 100,20%)")
    rtt, loss = float(match.group(1)), float(match.group(2))
    if loss > 100:
        raise ValueError(f"{text!r}: a loss of at most 100%")
    return Thresholds(rtt, loss)


@dataclass(frozen=True)
class ProbeOptions:
    """One run of `echod probe`, checked."""

    target: str
    host: str
    port: int
    mode: str = "tcp"
    #: socket.AF_INET or AF_INET6 to insist on one (-4, -6); None: the first address the name has.
    family: int | None = None
    #: None: until interrupted (or the deadline).
    count: int | None = None
    interval: float = 1.0
    size: int = 64
    timeout: float = 2.0
    deadline: float | None = None
    quiet: bool = False
    json: bool = False
    warning: Thresholds | None = None
    critical: Thresholds | None = None
    #: What the probe's packets carry besides the payload: source, TOS, TTL, path-MTU discovery.
    packets: PacketOptions = field(default_factory=PacketOptions)

    @property
    def monitoring(self) -> bool:
        """Whether the run reports as a monitoring plugin (--warning or --critical)."""
        return self.warning is not None or self.critical is not None

    @property
    def stream(self) -> bool:
        return self.mode != "udp"

    @property
    def default_port(self) -> bool:
        """Whether the target named no port (the mode's default is probed)."""
        return split_host_port(self.target, 0)[1] == 0

    @property
    def new_connections(self) -> bool:
        """Whether every probe opens a connection of its own (and connect times are measured)."""
        return self.mode in ("connect", "bytecount")


def make_options(
    target: str,
    *,
    mode: str = "tcp",
    family: int | None = None,
    count: int | None = None,
    interval: float = 1.0,
    size: int = 64,
    timeout: float = 2.0,
    deadline: float | None = None,
    quiet: bool = False,
    json: bool = False,
    warning: Thresholds | None = None,
    critical: Thresholds | None = None,
    packets: PacketOptions | None = None,
) -> ProbeOptions:
    """
    Check the values of a run and make its options; the port comes from
    C{target} (C{HOST[:PORT]}, C{[V6]:PORT}), or is the mode's default. A
    source address (C{-I}) chooses the family as C{-4} or C{-6} would, and
    must be of the target's own if that is an address.

    @raise ValueError: naming the first value that is wrong and why.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
    host, port = split_host_port(target, BYTECOUNT_PORT if mode == "bytecount" else ECHO_PORT)
    if count is not None and count < 1:
        raise ValueError(f"-c {count}: at least 1 probe")
    if interval < MIN_INTERVAL:
        raise ValueError(f"-i {interval:g}: at least {MIN_INTERVAL:g} s (1 ms)")
    if timeout <= 0:
        raise ValueError(f"-W {timeout:g}: a timeout above 0")
    if deadline is not None and deadline <= 0:
        raise ValueError(f"-w {deadline:g}: a deadline above 0")
    if json and (warning or critical):
        raise ValueError("--json and --warning/--critical each choose the output: use one")
    if warning and critical:
        check_threshold_order(warning, critical)
    if (warning or critical) and count is None:
        count = MONITORING_COUNT
    packets = packets or PacketOptions()
    check_source_family(packets, family or literal_family(host))
    family = family or packets.family
    check_size(mode, size, family or literal_family(host))
    return ProbeOptions(
        target,
        host,
        port,
        mode,
        family,
        count,
        interval,
        size,
        timeout,
        deadline,
        quiet,
        json,
        warning,
        critical,
        packets,
    )


def check_threshold_order(warning: Thresholds, critical: Thresholds) -> None:
    """
    Refuse a warning above the critical threshold, for the round trip or for
    the loss, as check_ping(8) does: the check would go from OK to CRITICAL
    and never warn.

    @raise ValueError: naming the figure and both values.
    """
    for name, unit, warn, crit in (
        ("round trip", " ms", warning.rtt_ms, critical.rtt_ms),
        ("loss", "%", warning.loss_percent, critical.loss_percent),
    ):
        if warn > crit:
            raise ValueError(
                f"--warning's {name} ({warn:g}{unit}) is above --critical's ({crit:g}{unit}): "
                "give a warning at most the critical threshold"
            )


def check_size(mode: str, size: int, family: int | None) -> None:
    """
    Whether C{size} payload bytes fit C{mode}: 1 to 16 MiB over a stream; over
    UDP 8 (the sequence number) to the largest datagram of C{family}, or of
    either family while it is not known yet (checked again once the name is
    resolved).

    @raise ValueError: if they do not.
    """
    if mode == "udp":
        largest = MAX_DATAGRAM_SIZE[family] if family else max(MAX_DATAGRAM_SIZE.values())
        if not MIN_DATAGRAM_SIZE <= size <= largest:
            if family:
                limit = f"{largest} bytes a datagram over {_FAMILY_NAMES[family]}"
            else:  # a name: either family may be the one it resolves to
                v4, v6 = MAX_DATAGRAM_SIZE[socket.AF_INET], MAX_DATAGRAM_SIZE[socket.AF_INET6]
                limit = f"{v4} bytes a datagram over IPv4, {v6} over IPv6"
            raise ValueError(f"-s {size}: {MIN_DATAGRAM_SIZE} to {limit}")
    elif not 1 <= size <= MAX_STREAM_SIZE:
        raise ValueError(f"-s {size}: 1 to {MAX_STREAM_SIZE} bytes (16 MiB) a probe over TCP")
