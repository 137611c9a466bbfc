"""
What `echod probe`'s options put on the wire, seen there: network namespaces
the tests make (tests/integration/netns.py), nftables counting on the
server's input hook what arrives (DSCP, TTL, source address and port), the
server's own access log naming the peer; and a router between the client
and the server, to be told "time to live exceeded" by (-t 1), and a link of
MTU 1280 behind it, too small for the datagrams of -M do -s 1400.

Against echod and, where the server does not matter to what is measured
(what the probe sends), openbsd-inetd's builtin echo too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration import netns
from tests.integration.daemon import Daemon, config_text
from tests.integration.test_haproxy import parse_entry, wait_until
from tests.integration.test_probe import assert_all_answered, counts, probe, probe_json, udp_listener

#: Far above what these hosts on one machine answer within, however loaded: no loss where none is made.
TIMEOUT = "5"
#: The client's second address on its own link, for -I ADDRESS; its second link's host number (-I eth1).
SECOND_IPV4, SECOND_IPV6 = "198.18.0.201", "2001:db8:0:1::201"
SECOND_LINK = 101
#: A source port for --source-port, unprivileged and outside Linux's ephemeral range (32768-60999).
SOURCE_PORT = 20007


def need(tool: str, package: str) -> None:
    if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
        pytest.skip(f"{package} is not installed (make system-packages installs it)")


class Counters:
    """
    Named nftables counters on a host's input hook, each counting the
    packets one match selects: made on entry, read by L{read}, removed on exit.
    """

    TABLE = "probewire"

    def __init__(self, host: netns.Host, **matches: str) -> None:
        self.host, self.matches = host, matches

    def __enter__(self) -> Counters:
        need("nft", "nftables")
        names = "".join(f"  counter {name} {{}}\n" for name in self.matches)
        rules = "".join(f"    {match} counter name {name}\n" for name, match in self.matches.items())
        text = (
            f"table inet {self.TABLE} {{\n{names}  chain input {{\n"
            f"    type filter hook input priority 0; policy accept;\n{rules}  }}\n}}\n"
        )
        self.host.run(["nft", "-f", "-"], input=text, text=True, check=True)
        return self

    def read(self) -> dict[str, int]:
        done = self.host.run(
            ["nft", "-j", "list", "counters", "table", "inet", self.TABLE],
            capture_output=True,
            text=True,
            check=True,
        )
        items = json.loads(done.stdout)["nftables"]
        return {item["counter"]["name"]: item["counter"]["packets"] for item in items if "counter" in item}

    def __exit__(self, *exc_info: object) -> None:
        self.host.run(["nft", "delete", "table", "inet", self.TABLE], check=True)


@dataclass
class Wire:
    """A client and a server on the switch; the server's echo (TCP and UDP, port 7) and its access log."""

    client: netns.Host
    server: netns.Host
    kind: str
    access_log: Path | None = None

    @property
    def inside(self) -> tuple[str, ...]:
        """The command prefix that runs the probe on the client."""
        return tuple(self.client.command([]))

    def address(self, family: int) -> str:
        return self.server.ipv6 if family == 6 else self.server.ipv4

    def peers(self, count: int) -> list[tuple[str, int]]:
        """The peers of the last C{count} connections of the access log, once it has them."""

        def logged() -> list[str] | None:
            lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
            return lines[-count:] if len(lines) >= count else None

        return [parse_entry(line).peer for line in wait_until(f"{count} access log lines", logged)]


def start_echod(host: netns.Host, directory: Path, access_log: Path) -> None:
    """
    echod on C{host}: TCP and UDP echo on port 7 and bytecount on 50007, of every address; its access
    log at C{access_log}.
    """
    path = directory / f"echod-{host.role}.conf"
    tcp = config_text(
        {"access_log": str(access_log)},
        echo={"protocol": "echo", "address": "::", "port": "7"},
        bytecount={"protocol": "bytecount", "address": "::", "port": "50007"},
    )
    path.write_text(tcp + udp_listener("udp", "::", "7"))
    command = host.command([sys.executable, "-m", "echod", "run", "-c", str(path)])
    Daemon(path, command=command).start().wait_ready()  # the network kills it as it closes


def start_inetd(host: netns.Host, directory: Path) -> None:
    """openbsd-inetd's builtin echo on C{host}, TCP and UDP, IPv4 and IPv6, port 7; until it accepts."""
    need("inetd", "openbsd-inetd")
    inetd = shutil.which("inetd") or "/usr/sbin/inetd"
    config = directory / "inetd.conf"
    config.write_text(
        "echo stream tcp nowait nobody internal\necho dgram udp wait nobody internal\n"
        "echo stream tcp6 nowait nobody internal\necho dgram udp6 wait nobody internal\n"
    )
    # -R: no rate limit to trip (its default turns the service off for ten minutes).
    command = [inetd, "-d", "-R", "1000000", str(config)]
    host.popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def accepts() -> bool:
        try:
            host.connect(host.ipv6, 7, timeout=1).close()
        except OSError:
            return False
        return True

    wait_until("inetd's echo to accept", accepts, timeout=30)


def make_wire(network: netns.Network, directory: Path, kind: str) -> Wire:
    """A client (198.18.0.1, with 198.18.0.201 too) and a server (198.18.0.2) running C{kind}."""
    client, server = network.host("client", 1), network.host("server", 2)
    client.run(["ip", "address", "add", f"{SECOND_IPV4}/24", "dev", "eth0"], check=True)
    client.run(["ip", "address", "add", f"{SECOND_IPV6}/48", "dev", "eth0", "nodad"], check=True)
    if kind == "inetd":
        start_inetd(server, directory)
        return Wire(client, server, kind)
    log = directory / "access.log"
    start_echod(server, directory, log)
    return Wire(client, server, kind, log)


@pytest.fixture(params=["echod", "inetd"])
def wire(request, network, tmp_path) -> Wire:
    """L{make_wire}, for what the probe sends whichever server answers: echod, then inetd."""
    return make_wire(network, tmp_path, request.param)


@pytest.fixture
def echod_wire(network, tmp_path) -> Wire:
    """L{make_wire} with echod, for what its access log says or what no server changes."""
    return make_wire(network, tmp_path, "echod")


def l4(mode: str) -> str:
    return "udp" if mode == "--udp" else "tcp"


# -- DSCP and TTL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "family", "qos"),
    [
        ("--udp", 4, "ef"),
        ("--udp", 6, "dscp:46"),
        ("--tcp", 4, "0xb8"),
        ("--tcp", 6, "EF"),
        ("--connect", 4, "184"),
        ("--connect", 6, "ef"),
    ],
)
def test_the_dscp_and_the_ttl_asked_are_those_on_the_wire(wire, mode, family, qos):
    ip = "ip6" if family == 6 else "ip"
    ttl = "hoplimit" if family == 6 else "ttl"
    to_echo = f"{l4(mode)} dport 7 {ip} daddr {wire.address(family)}"
    with Counters(
        wire.server,
        ef=f"{to_echo} {ip} dscp ef",
        not_ef=f"{to_echo} {ip} dscp != ef",
        ttl_3=f"{to_echo} {ip} {ttl} 3",
        not_ttl_3=f"{to_echo} {ip} {ttl} != 3",
    ) as counters:
        status, report = probe_json(
            mode,
            "-Q",
            qos,
            "-t",
            "3",
            "-c",
            "5",
            "-i",
            "0.05",
            "-W",
            TIMEOUT,
            wire.address(family),
            prefix=wire.inside,
        )
        seen = counters.read()
    assert status == 0, report
    assert_all_answered(report, 5)
    assert (report["tos"], report["dscp"], report["ttl"]) == (0xB8, 46, 3)
    if mode == "--udp":
        assert seen == {"ef": 5, "not_ef": 0, "ttl_3": 5, "not_ttl_3": 0}, seen
    else:  # every segment of the connections, the SYN first: at least one a probe
        assert seen["not_ef"] == seen["not_ttl_3"] == 0 and seen["ef"] == seen["ttl_3"] >= 5, seen


def test_without_options_the_probe_sends_what_the_system_would(wire):
    # The other side of the test above: not DSCP EF nor TTL 3 unless asked (the system's 64).
    with Counters(wire.server, cs0="udp dport 7 ip dscp cs0", ttl_64="udp dport 7 ip ttl 64") as counters:
        status, report = probe_json(
            "--udp", "-c", "3", "-i", "0.05", "-W", TIMEOUT, wire.server.ipv4, prefix=wire.inside
        )
        seen = counters.read()
    assert status == 0 and report["tos"] is None and report["ttl"] is None, report
    assert seen == {"cs0": 3, "ttl_64": 3}, seen


# -- the source ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_a_source_address_and_port_are_what_the_server_sees_over_udp(wire, family):
    ip = "ip6" if family == 6 else "ip"
    source = SECOND_IPV6 if family == 6 else SECOND_IPV4
    with Counters(
        wire.server,
        ours=f"udp dport 7 {ip} saddr {source} udp sport {SOURCE_PORT}",
        others=f"udp dport 7 {ip} saddr != {source}",
    ) as counters:
        status, report = probe_json(
            "--udp",
            "-I",
            source,
            "--source-port",
            str(SOURCE_PORT),
            "-c",
            "4",
            "-i",
            "0.05",
            "-W",
            TIMEOUT,
            wire.address(family),
            prefix=wire.inside,
        )
        seen = counters.read()
    assert status == 0, report
    assert (report["source"], report["source_port"]) == (source, SOURCE_PORT)
    assert seen == {"ours": 4, "others": 0}, seen


@pytest.mark.parametrize("family", [4, 6])
def test_a_source_address_and_port_are_the_peer_in_echods_access_log(echod_wire, family):
    wire = echod_wire
    source = SECOND_IPV6 if family == 6 else SECOND_IPV4
    target = wire.address(family)
    status, report = probe_json(
        "--tcp",
        "-I",
        source,
        "--source-port",
        str(SOURCE_PORT),
        "-c",
        "3",
        "-i",
        "0.05",
        "-W",
        TIMEOUT,
        f"[{target}]:7" if family == 6 else target,
        prefix=wire.inside,
    )
    assert status == 0, report
    assert wire.peers(1) == [(source, SOURCE_PORT)]
    # A connection a probe, each from the source address and a port the kernel picks.
    status, report = probe_json(
        "--connect", "-I", source, "-c", "3", "-i", "0.05", "-W", TIMEOUT, target, prefix=wire.inside
    )
    assert status == 0, report
    peers = wire.peers(3)
    assert {host for host, _ in peers} == {source} and len({port for _, port in peers}) == 3, peers


def test_a_connection_a_probe_from_one_source_port_is_refused_by_the_last_ones_time_wait(echod_wire):
    wire = echod_wire
    # The probe half-closes first, so each connection ends in TIME_WAIT on the client, for 60 s:
    # the second probe cannot have the port, and says so.
    done = probe(
        "--connect",
        "--source-port",
        str(SOURCE_PORT),
        "-c",
        "2",
        "-i",
        "0.2",
        "-W",
        TIMEOUT,
        wire.server.ipv4,
        prefix=wire.inside,
    )
    assert done.returncode == 2, done
    lines = done.stdout.splitlines()
    assert re.fullmatch(rf"64 bytes from {re.escape(wire.server.ipv4)} port 7: seq=1 connect=.*", lines[1]), (
        lines
    )
    assert lines[2] == (
        f"{wire.server.ipv4} port 7: seq=2 --source-port {SOURCE_PORT}: 0.0.0.0:{SOURCE_PORT} is in use "
        "(a socket of its own, or one in TIME_WAIT)"
    )
    assert wire.peers(1) == [(wire.client.ipv4, SOURCE_PORT)]


def test_bytecount_probes_carry_every_option_and_may_share_one_source_port(echod_wire):
    wire = echod_wire
    # The server closes a bytecount connection first: the TIME_WAIT is its, and the next connection
    # from the same port is let in, unlike --connect's above.
    with Counters(
        wire.server,
        marked=f"tcp dport 50007 ip saddr {SECOND_IPV4} tcp sport {SOURCE_PORT} ip dscp af41 ip ttl 5",
        others="tcp dport 50007 ip dscp != af41",
    ) as counters:
        status, report = probe_json(
            "--bytecount",
            "-I",
            SECOND_IPV4,
            "--source-port",
            str(SOURCE_PORT),
            "-Q",
            "af41",
            "-t",
            "5",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            TIMEOUT,
            wire.server.ipv4,
            prefix=wire.inside,
        )
        seen = counters.read()
    assert status == 0, report
    assert_all_answered(report, 3)
    assert seen["others"] == 0 and seen["marked"] >= 3, seen
    assert wire.peers(3) == [(SECOND_IPV4, SOURCE_PORT)] * 3


@pytest.fixture
def two_links(network, tmp_path) -> Iterator[tuple[Wire, str, str]]:
    """A client on the switch through eth0 (198.18.0.1) and eth1; echod on a server: eth1's addresses."""
    client, server = network.host("client", 1), network.host("server", 2)
    ipv4, ipv6 = network.link(client, "eth1", SECOND_LINK)
    log = tmp_path / "access.log"
    start_echod(server, tmp_path, log)
    yield Wire(client, server, "echod", log), ipv4, ipv6


@pytest.mark.parametrize("family", [4, 6])
def test_an_interface_is_the_way_out_and_its_address_the_source(two_links, family):
    wire, ipv4, ipv6 = two_links
    source, ip = (ipv6, "ip6") if family == 6 else (ipv4, "ip")
    target = wire.address(family)
    with Counters(
        wire.server,
        eth1=f"udp dport 7 {ip} saddr {source}",
        eth0=f"udp dport 7 {ip} saddr {wire.client.ipv6 if family == 6 else wire.client.ipv4}",
    ) as counters:
        status, report = probe_json(
            "--udp", "-c", "3", "-i", "0.05", "-W", TIMEOUT, target, prefix=wire.inside
        )
        assert status == 0 and counters.read() == {"eth1": 0, "eth0": 3}  # the route's own way: eth0
        status, report = probe_json(
            "--udp", "-I", "eth1", "-c", "3", "-i", "0.05", "-W", TIMEOUT, target, prefix=wire.inside
        )
        assert status == 0, report
        assert counters.read() == {"eth1": 3, "eth0": 3}
    assert report["interface"] == "eth1"
    status, report = probe_json(
        "--tcp", "-I", "eth1", "-c", "2", "-i", "0.05", "-W", TIMEOUT, target, prefix=wire.inside
    )
    assert status == 0, report
    assert [host for host, _ in wire.peers(1)] == [source]


def test_an_interface_or_address_the_host_lacks_ends_the_run_at_once_saying_which(echod_wire):
    wire = echod_wire
    for mode in ("--udp", "--tcp", "--connect"):
        done = probe(mode, "-I", "eth9", "-c", "1", wire.server.ipv4, prefix=wire.inside)
        assert (done.returncode, done.stdout) == (2, ""), done
        assert (
            done.stderr == "echod probe: -I eth9: no network interface 'eth9' here (`ip link` lists them)\n"
        )
        done = probe(mode, "-I", "198.18.0.99", "-c", "1", wire.server.ipv4, prefix=wire.inside)
        assert (done.returncode, done.stdout) == (2, ""), done
        assert done.stderr == (
            "echod probe: -I 198.18.0.99: 198.18.0.99 is not an address of this host "
            "(`ip address` lists them)\n"
        )


# -- through a router -------------------------------------------------------------------------------------


@dataclass
class Routed:
    """A client, a router, and a server behind it on a link of MTU 1280, running echod."""

    client: netns.Host
    router: netns.Host
    server: netns.Host

    @property
    def inside(self) -> tuple[str, ...]:
        return tuple(self.client.command([]))


@pytest.fixture
def routed(network, tmp_path) -> Routed:
    client, router = network.host("client", 1), network.host("router", 254)
    server = network.behind(router, "server", mtu=1280)
    start_echod(server, tmp_path, tmp_path / "access.log")
    return Routed(client, router, server)


def target_of(host: netns.Host, family: int) -> str:
    return f"[{host.ipv6}]:7" if family == 6 else host.ipv4


@pytest.mark.parametrize("family", [4, 6])
def test_a_datagram_with_ttl_1_is_told_time_to_live_exceeded_by_the_router(routed, family):
    router = routed.router.ipv6 if family == 6 else routed.router.ipv4
    target = target_of(routed.server, family)
    # Three probes: within the router's ICMP rate limit. Measured here, of 40 probes 50 ms apart, 7
    # were told over IPv4 (a burst of 6, then one a second) and 25 over IPv6; the rest were lost.
    done = probe("--udp", "-t", "1", "-c", "3", "-i", "0.2", "-W", TIMEOUT, target, prefix=routed.inside)
    assert done.returncode == 2, done
    told = [line for line in done.stdout.splitlines() if " seq=" in line]
    address = routed.server.ipv6 if family == 6 else routed.server.ipv4
    assert told == [f"{address} port 7: seq={seq} time to live exceeded from {router}" for seq in (1, 2, 3)]
    # Two hops is what it takes: the same probe with -t 2 is answered.
    status, report = probe_json(
        "--udp", "-t", "2", "-c", "3", "-i", "0.05", "-W", TIMEOUT, target, prefix=routed.inside
    )
    assert status == 0, report
    assert_all_answered(report, 3)


@pytest.mark.parametrize("family", [4, 6])
def test_a_connection_with_ttl_1_fails_as_the_kernel_says(routed, family):
    target = target_of(routed.server, family)
    where = f"[{routed.server.ipv6}]:7" if family == 6 else f"{routed.server.ipv4}:7"
    # The router's time exceeded aborts the connect() (EHOSTUNREACH), at the SYN or its retransmission.
    done = probe("--tcp", "-t", "1", "-W", TIMEOUT, target, prefix=routed.inside)
    assert (done.returncode, done.stderr) == (
        2,
        f"echod probe: no connection to {where}: connection failed: No route to host\n",
    ), done
    status, report = probe_json(
        "--connect", "-t", "1", "-c", "2", "-i", "0.2", "-W", TIMEOUT, target, prefix=routed.inside
    )
    assert counts(report) == {"sent": 2, "received": 0, "failed": 2} and status == 2, report
    status, report = probe_json(
        "--connect", "-t", "2", "-c", "2", "-i", "0.05", "-W", TIMEOUT, target, prefix=routed.inside
    )
    assert status == 0, report


@pytest.mark.parametrize("family", [4, 6])
def test_a_datagram_above_the_path_mtu_that_must_not_be_fragmented_is_told_with_the_mtu(routed, family):
    router = routed.router.ipv6 if family == 6 else routed.router.ipv4
    address = routed.server.ipv6 if family == 6 else routed.server.ipv4
    ip = "ip6" if family == 6 else "ip"
    with Counters(routed.server, arrived=f"udp dport 7 {ip} daddr {address}") as counters:
        done = probe(
            "--udp",
            "-M",
            "do",
            "-s",
            "1400",
            "-c",
            "4",
            "-i",
            "0.2",
            "-W",
            TIMEOUT,
            target_of(routed.server, family),
            prefix=routed.inside,
        )
        arrived = counters.read()["arrived"]
    assert done.returncode == 2, done
    told = [line.split(" seq=", 1)[1] for line in done.stdout.splitlines() if " seq=" in line]
    too_long = "message too long: path MTU 1280"
    # The first datagram goes as far as the router, which sends back what the path's MTU is; the kernel
    # then refuses to send the others at all.
    learnt = "packet too big" if family == 6 else "fragmentation needed"
    assert told[0] in (f"1 {learnt} from {router}: path MTU 1280", f"1 {too_long}"), told
    assert told[1:] == [f"{seq} {too_long}" for seq in (2, 3, 4)], told
    assert "4 probes sent, 0 answered intact in time, 100% loss" in done.stdout
    assert arrived == 0
    # What fits the path is answered, DF and all.
    status, report = probe_json(
        "--udp",
        "-M",
        "do",
        "-s",
        "1200",
        "-c",
        "3",
        "-i",
        "0.05",
        "-W",
        TIMEOUT,
        target_of(routed.server, family),
        prefix=routed.inside,
    )
    assert status == 0 and report["pmtu_discovery"] == "do", report


def test_a_datagram_above_the_path_mtu_that_may_be_fragmented_is_answered(routed):
    # -M dont: no DF, so the router fragments it to the link of MTU 1280, and the echo comes back whole.
    status, report = probe_json(
        "--udp",
        "-M",
        "dont",
        "-s",
        "1400",
        "-c",
        "3",
        "-i",
        "0.05",
        "-W",
        TIMEOUT,
        routed.server.ipv4,
        prefix=routed.inside,
    )
    assert status == 0, report
    assert_all_answered(report, 3)
