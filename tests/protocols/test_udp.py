import re
import socket
from pathlib import Path

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from echod.accounting.stats import ListenerStats
from echod.config import parse
from echod.daemon.listeners import DatagramListener
from echod.protocols.datagram import MAX_DATAGRAMS_PER_READ
from echod.protocols.guard import OwnEndpoints
from echod.protocols.udp import UDPEcho
from echod.sockets import bind_datagram
from tests.protocols.answered import RecordingPort


def udp_settings(**keys: str):
    text = "[listener:udp]\nprotocol = echo\ntransport = udp\naddress = 127.0.0.1\nport = 0\n"
    text += "".join(f"{key} = {value}\n" for key, value in keys.items())
    return parse(text).listeners[0]


def started_listener(reactor, **keys: str) -> DatagramListener:
    settings = udp_settings(**keys)
    listener = DatagramListener(settings, reactor, sock=bind_datagram(settings.address, settings.port))
    listener.privilegedStartService()
    return listener


def handled(listener: DatagramListener) -> int:
    stats = listener.stats
    return stats.datagrams + stats.dropped_source + stats.dropped_rate


def read_turns(listener: DatagramListener, sent: int) -> list[int]:
    """How many datagrams each of the port's read turns handled, until C{sent} were."""
    turns = []
    while handled(listener) < sent:
        before = handled(listener)
        listener.port.doRead()
        turns.append(handled(listener) - before)
        assert turns[-1], "a read turn found nothing to read"
    return turns


@pytest.mark.parametrize("size", [0, 1, 100])
def test_one_read_turn_handles_a_bounded_number_of_datagrams(reactor, size):
    # Twisted's own loop stops after 256 KiB only: empty datagrams never got
    # it there, so echod kept reading them while every other socket waited.
    listener = started_listener(reactor)
    try:
        port = listener.socket.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as flooder:
            flooder.bind(("127.0.0.2", 0))
            for _ in range(2000):
                flooder.sendto(b"x" * size, ("127.0.0.1", port))
        turns = read_turns(listener, 2000)
    finally:
        listener.stopService()
    assert max(turns) == MAX_DATAGRAMS_PER_READ, turns
    assert sum(turns) == 2000


def test_large_datagrams_are_still_bounded_by_bytes_per_read_turn(reactor):
    listener = started_listener(reactor, byte_rate="1G")
    try:
        port = listener.socket.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind(("127.0.0.2", 0))
            for _ in range(20):
                sender.sendto(b"x" * 60000, ("127.0.0.1", port))
        turns = read_turns(listener, 20)
    finally:
        listener.stopService()
    assert max(turns) <= 5, turns  # 256 KiB: four datagrams of 60000 bytes, and the one that crossed it


LIMITS = {
    "blocked_source_ports": ((0, 1023),),
    "datagram_rate_per_peer": 5,
    "datagram_rate": 1000,
    "byte_rate": 1 << 24,
}


def udp_echo(clock: Clock, **limits) -> UDPEcho:
    limits = {**LIMITS, **limits}
    echo = UDPEcho("udp", stats=ListenerStats(), clock=clock, **limits)
    echo.started(RecordingPort())
    return echo


def send(echo: UDPEcho, count: int, source: tuple = ("192.0.2.1", 40000), data: bytes = b"x") -> int:
    """Feed C{count} datagrams from C{source}; how many were echoed."""
    before = len(echo.port.sent)
    for _ in range(count):
        echo.datagram_received(data, source, [])
    return len(echo.port.sent) - before


def test_empty_datagrams_are_echoed_and_spend_the_rate_like_any_other():
    echo = udp_echo(Clock())
    assert send(echo, 10, data=b"") == 5
    assert echo.port.sent[0] == (b"", ("192.0.2.1", 40000))
    assert echo.stats.dropped_rate == 5


def reconfigure(echo: UDPEcho, **limits) -> None:
    limits = {**LIMITS, **limits}
    echo.guard.configure(
        limits["blocked_source_ports"],
        limits["datagram_rate_per_peer"],
        limits["datagram_rate"],
        limits["byte_rate"],
    )


def test_reload_with_the_same_rates_keeps_every_bucket_as_it_was():
    clock = Clock()
    echo = udp_echo(clock, datagram_rate=8)
    assert send(echo, 10) == 5  # this source's burst spent
    assert send(echo, 2, source=("192.0.2.2", 40000)) == 2  # 7 of the 8 in total spent
    reconfigure(echo, datagram_rate=8)
    assert send(echo, 10) == 0  # no fresh burst for a reload
    assert send(echo, 10, source=("192.0.2.3", 40000)) == 1  # the total's one token left, no more
    clock.advance(0.2)  # one token back at 5 a second
    assert send(echo, 10) == 1


def test_reload_with_a_higher_rate_refills_at_the_new_rate_from_what_was_left():
    clock = Clock()
    echo = udp_echo(clock)
    assert send(echo, 10) == 5
    reconfigure(echo, datagram_rate_per_peer=50)
    assert send(echo, 10) == 0  # a higher rate is not a refill
    clock.advance(0.1)  # 5 tokens at the new 50 a second
    assert send(echo, 10) == 5
    clock.advance(10)  # and the new burst may now be saved up
    assert send(echo, 100) == 50


def test_reload_with_a_lower_rate_caps_what_was_saved_up():
    clock = Clock()
    echo = udp_echo(clock, datagram_rate_per_peer=100, byte_rate=100_000)
    assert send(echo, 10) == 10  # 90 per-peer tokens left
    reconfigure(echo, datagram_rate_per_peer=20, byte_rate=100_000)
    assert send(echo, 100) == 20
    reconfigure(echo, datagram_rate_per_peer=10, byte_rate=100_000)
    assert send(echo, 100) == 0  # capped, never topped up
    reconfigure(echo, datagram_rate_per_peer=20, byte_rate=70_000)  # the byte bucket holds 99,980 bytes
    assert send(echo, 3, source=("192.0.2.2", 40000), data=b"x" * 30_000) == 2  # capped at 70,000


def echo_network(
    endpoints: dict[tuple[str, int], UDPEcho], first: tuple, to: tuple, limit: int = 10_000
) -> int:
    """
    Deliver datagram C{first} from C{first}'s address to C{to}, then every echo
    sent to one of C{endpoints} to it, as a network would; how many echoes there were.
    """
    own = OwnEndpoints()
    own.update(endpoints)
    for echo in endpoints.values():
        echo.guard.own = own
    queue, echoes = [(to, b"loop?", first)], 0
    while queue and echoes < limit:
        destination, data, source = queue.pop(0)
        receiver = endpoints[destination]
        before = len(receiver.port.sent)
        receiver.datagram_received(data, source, [])
        for data, address in receiver.port.sent[before:]:
            echoes += 1
            if address in endpoints:
                queue.append((address, data, destination))
    return echoes


def test_a_datagram_from_the_listeners_own_address_is_never_echoed():
    clock = Clock()
    listener = udp_echo(clock, datagram_rate_per_peer=100)
    assert echo_network({("127.0.0.1", 4000): listener}, ("127.0.0.1", 4000), ("127.0.0.1", 4000)) == 0
    assert listener.stats.dropped_own == 1
    assert listener.stats.datagram_summary() == "0 echoed, 1 dropped"


def test_two_listeners_never_echo_to_each_other():
    clock = Clock()
    a, b = udp_echo(clock, datagram_rate_per_peer=100), udp_echo(clock, datagram_rate_per_peer=100)
    endpoints = {("127.0.0.1", 4000): a, ("::1", 4001): b}
    assert echo_network(endpoints, ("127.0.0.1", 4000), ("::1", 4001)) == 0
    assert (a.stats.dropped_own, b.stats.dropped_own) == (0, 1)


def logged_by(echo: UDPEcho) -> list[dict]:
    """The events C{echo} logs from now on."""
    logged: list[dict] = []
    echo.guard.log = Logger(observer=logged.append)
    return logged


def said(events: list[dict]) -> list[str]:
    return [formatEvent(event) for event in events]


def test_a_drop_warning_counts_the_datagrams_from_echods_own_listeners():
    clock = Clock()
    echo = udp_echo(clock)
    echo.guard.own.update([("127.0.0.1", 4000)])
    logged = logged_by(echo)
    echo.datagram_received(b"x", ("127.0.0.1", 4000), [])
    assert said(logged) == [
        "udp: dropped a datagram from 127.0.0.1:4000: it comes from one of echod's own listeners, "
        "and answering would loop (dropped so far: 1 from echod's own listeners)"
    ]
    assert logged[0]["reason"] == "own_listener"


def test_drops_after_the_first_warning_are_summed_up_at_the_end_of_the_interval():
    # Before, they were said only when another drop came after the interval:
    # the last drops of a flood were never logged at all.
    clock = Clock()
    echo = udp_echo(clock)
    logged = logged_by(echo)
    assert send(echo, 3000) == 5  # 2,995 over this source's rate
    assert send(echo, 2, source=("192.0.2.9", 80)) == 0  # and 2 from a blocked port
    assert said(logged) == [
        "udp: dropped a datagram from 192.0.2.1:40000: over datagram_rate_per_peer = 5 a second from "
        "192.0.2.1; if that source is wanted, raise datagram_rate_per_peer in [listener:udp] "
        "(dropped so far: 1 over datagram_rate_per_peer)"
    ]
    clock.advance(10)
    assert said(logged)[1:] == [
        "udp: ... and 2,996 more datagrams dropped from 2 sources, 2,994 from 192.0.2.1 in the last 10s: "
        "2 from blocked_source_ports, 2,994 over datagram_rate_per_peer "
        "(dropped so far: 2 from blocked_source_ports, 2,995 over datagram_rate_per_peer)"
    ]
    clock.advance(10)  # a quiet interval: nothing to say, and the next drop is said in full
    assert len(logged) == 2
    send(echo, 1, source=("192.0.2.9", 80))
    assert said(logged)[2] == (
        "udp: dropped a datagram from 192.0.2.9:80: its source port 80 is in blocked_source_ports "
        "(0-1023); to answer that port, take it out of blocked_source_ports in [listener:udp] "
        "(dropped so far: 3 from blocked_source_ports, 2,995 over datagram_rate_per_peer)"
    )


def test_drops_are_counted_by_the_key_of_the_per_source_bucket():
    clock = Clock()
    echo = udp_echo(clock, datagram_rate_per_peer=1)
    echo.guard.peer_prefixes = (24, 64)
    logged = logged_by(echo)
    for host in ("192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::1", "2001:db8::2"):
        send(echo, 1, source=(host, 40000))  # all but the first of each network dropped
    clock.advance(10)
    assert "3 more datagrams dropped from 2 sources, 2 from 192.0.2.0/24 in the last 10s" in said(logged)[1]
    assert said(logged)[0].startswith(
        "udp: dropped a datagram from 192.0.2.1:40000: "
        "over datagram_rate_per_peer = 1 a second from 192.0.2.0/24;"
    )


@pytest.mark.parametrize(
    ("limits", "source", "why"),
    [
        # nping sends from port 53 unless told otherwise: the warning says what to change.
        (
            {"blocked_source_ports": ((0, 1023), (5353, 5353))},
            ("192.0.2.1", 53),
            "its source port 53 is in blocked_source_ports (0-1023, 5353); "
            "to answer that port, take it out of blocked_source_ports in [listener:udp]",
        ),
        ({}, ("224.0.0.1", 40000), "a broadcast, multicast or unspecified source is never answered"),
        (
            {"datagram_rate_per_peer": 1},
            ("2001:db8::1", 40000),
            "over datagram_rate_per_peer = 1 a second from 2001:db8::/64; "
            "if that source is wanted, raise datagram_rate_per_peer in [listener:udp]",
        ),
        (
            {"datagram_rate": 1},
            ("192.0.2.1", 40000),
            "over datagram_rate = 1 a second from all sources together; "
            "if they are wanted, raise datagram_rate in [listener:udp]",
        ),
        (
            {"byte_rate": 1 << 20, "datagram_rate_per_peer": 100},
            ("192.0.2.1", 40000),
            "over byte_rate = 1M a second from all sources together; "
            "if they are wanted, raise byte_rate in [listener:udp]",
        ),
    ],
)
def test_a_drop_warning_names_the_key_that_decided_it(limits, source, why):
    # Before, every one of these said only "for its source" or "over the rate limits".
    echo = udp_echo(Clock(), **limits)
    logged = logged_by(echo)
    data = b"x" * 65000 if "byte_rate" in limits else b"x"
    for _ in range(20):  # 20 of 65,000 bytes are over 1M
        echo.datagram_received(data, source, [])
    host, port = source
    peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    assert said(logged)[0].startswith(f"udp: dropped a datagram from {peer}: {why} (dropped so far: ")


def test_a_drop_warning_names_the_listeners_section_after_a_rename():
    echo = udp_echo(Clock(), datagram_rate_per_peer=1)
    echo.name = "udp-echo"  # what DatagramListener.rename does
    logged = logged_by(echo)
    send(echo, 2)
    assert "raise datagram_rate_per_peer in [listener:udp-echo]" in said(logged)[0]


def test_drops_held_back_are_said_when_the_listener_stops():
    clock = Clock()
    echo = udp_echo(clock)
    logged = logged_by(echo)
    send(echo, 8)
    clock.advance(2.5)
    echo.stopped()  # what the port does when it stops listening
    assert said(logged)[1].startswith("udp: ... and 2 more datagrams dropped from 192.0.2.1 in the last 2.5s")
    assert not clock.getDelayedCalls()  # nor is a timer left behind


def test_an_echoed_datagram_never_reaches_the_drop_warning():
    # The fast path stays as cheap as it was: only a drop costs a throttle call.
    echo = udp_echo(Clock(), datagram_rate_per_peer=100)
    echo.guard._dropped = echo.guard._drop_warnings = None  # any use of either would raise
    assert send(echo, 50) == 50


ROOT = Path(__file__).resolve().parents[2]


def shipped_udp_listener():
    """The shipped file's UDP listener, uncommented as an admin (or `make run RUN_UDP=yes`) does."""
    text = (ROOT / "etc" / "echod.conf").read_text()
    head, udp = text.split("#[listener:udp-echo]\n")
    text = head + "[listener:udp-echo]\n" + re.sub(r"(?m)^#", "", udp).replace("port = 7\n", "port = 0\n")
    (listener,) = [each for each in parse(text).listeners if each.transport == "udp"]
    return listener


def test_the_shipped_rates_answer_the_readmes_udp_probe_with_room_to_spare():
    # README's `echod probe --udp -i 10ms`: 100 datagrams a second from one host. The
    # shipped datagram_rate_per_peer was 100, the limit exactly: at -i 7.5ms a
    # quarter of the probes were dropped by echod, and the probe reported loss.
    (interval,) = re.findall(r"echod probe --udp -i (\d+)ms", (ROOT / "README.md").read_text())
    rate = 1000 / int(interval)
    settings = shipped_udp_listener()
    clock = Clock()
    echo = udp_echo(
        clock,
        blocked_source_ports=settings.blocked_source_ports,
        datagram_rate_per_peer=settings.datagram_rate_per_peer,
        datagram_rate=settings.datagram_rate,
        byte_rate=settings.byte_rate,
    )
    # Four times the example's rate, 64-byte probes as the probe's default, for 30 s.
    sent = int(30 * 4 * rate)
    echoed = 0
    for _ in range(sent):
        echoed += send(echo, 1, data=b"x" * 64)
        clock.advance(1 / (4 * rate))
    assert echoed == sent, (settings.datagram_rate_per_peer, sent - echoed)
