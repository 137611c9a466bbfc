import re
import socket

import pytest

from echod.probe.options import (
    MAX_STREAM_SIZE,
    MONITORING_COUNT,
    Thresholds,
    check_size,
    make_options,
    parse_thresholds,
)
from echod.probe.packets import PacketOptions


@pytest.mark.parametrize(
    ("text", "expected"),
    [("100,20%", Thresholds(100, 20)), ("0.5,0", Thresholds(0.5, 0)), (" 250 , 100% ", Thresholds(250, 100))],
)
def test_thresholds_are_written_as_check_ping_writes_them(text, expected):
    assert parse_thresholds(text) == expected


@pytest.mark.parametrize("text", ["", "100", "100,", ",20%", "100;20%", "-1,20%", "100,101%", "a,b"])
def test_thresholds_that_are_not_rtt_and_loss_are_refused(text):
    with pytest.raises(ValueError):
        parse_thresholds(text)


def test_the_default_port_is_7_and_50007_for_bytecount():
    assert make_options("192.0.2.1").port == 7
    assert make_options("192.0.2.1", mode="udp").port == 7
    assert make_options("192.0.2.1", mode="bytecount").port == 50007
    assert make_options("[2001:db8::1]:9", mode="bytecount").port == 9


def test_defaults_are_pings():
    options = make_options("echo.example")
    assert (options.mode, options.count, options.interval, options.size) == ("tcp", None, 1.0, 64)
    assert not options.monitoring


def test_a_monitoring_check_sends_five_probes_unless_told():
    assert make_options("h", warning=Thresholds(100, 20)).count == MONITORING_COUNT
    assert make_options("h", critical=Thresholds(100, 20), count=2).count == 2


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"interval": 0.0009}, "-i"),
        ({"count": 0}, "-c"),
        ({"timeout": 0}, "-W"),
        ({"deadline": 0}, "-w"),
        ({"size": 0}, "-s"),
        ({"size": MAX_STREAM_SIZE + 1}, "16 MiB"),
        ({"mode": "udp", "size": 7}, "-s 7"),
        ({"mode": "udp", "size": 65508}, "8 to 65507 bytes a datagram over IPv4$"),
        ({"mode": "udp", "size": 65508, "family": socket.AF_INET}, "IPv4"),
        ({"mode": "icmp"}, "unknown mode"),
        ({"json": True, "warning": Thresholds(1, 1)}, "--json"),
    ],
)
def test_values_out_of_bounds_are_refused_naming_the_option(kwargs, complaint):
    with pytest.raises(ValueError, match=complaint):
        make_options("192.0.2.1", **kwargs)


@pytest.mark.parametrize(
    ("target", "limit"),
    [
        ("192.0.2.1", "8 to 65507 bytes a datagram over IPv4"),
        ("[2001:db8::1]:7", "8 to 65527 bytes a datagram over IPv6"),
        ("[fe80::1%eth0]:7", "8 to 65527 bytes a datagram over IPv6"),
        ("echo.example", "8 to 65507 bytes a datagram over IPv4, 65527 over IPv6"),
    ],
)
def test_a_datagram_too_large_is_refused_with_the_limit_of_the_targets_family(target, limit):
    with pytest.raises(ValueError) as refused:
        make_options(target, mode="udp", size=70000)
    assert str(refused.value) == f"-s 70000: {limit}"


def test_the_limits_themselves_are_allowed():
    assert make_options("h", interval=0.001, size=MAX_STREAM_SIZE).size == MAX_STREAM_SIZE
    assert make_options("h", mode="udp", size=8).size == 8
    assert make_options("h", mode="udp", size=65507, family=socket.AF_INET).size == 65507
    assert make_options("h", mode="udp", size=65527, family=socket.AF_INET6).size == 65527


def test_a_datagram_too_large_for_the_family_resolved_is_refused_once_it_is_known():
    options = make_options("h", mode="udp", size=65520)  # the family is not known yet
    check_size(options.mode, options.size, socket.AF_INET6)
    with pytest.raises(ValueError, match="over IPv4"):
        check_size(options.mode, options.size, socket.AF_INET)


@pytest.mark.parametrize(
    ("warning", "critical", "complaint"),
    [
        (
            Thresholds(600, 20),
            Thresholds(500, 60),
            r"--warning's round trip \(600 ms\) is above --critical's \(500 ms\)",
        ),
        (Thresholds(100, 70), Thresholds(500, 60), r"--warning's loss \(70%\) is above --critical's \(60%\)"),
    ],
)
def test_a_warning_above_the_critical_threshold_is_refused_as_check_ping_refuses_it(
    warning, critical, complaint
):
    with pytest.raises(ValueError, match=complaint):
        make_options("h", warning=warning, critical=critical)


def test_a_warning_equal_to_the_critical_threshold_is_allowed():
    assert make_options("h", warning=Thresholds(500, 60), critical=Thresholds(500, 60)).monitoring


# -- what the packets carry ------------------------------------------------------------------------


def test_options_carry_the_packet_settings_and_none_by_default():
    assert make_options("192.0.2.1").packets == PacketOptions()
    packets = PacketOptions(tos=0xB8, ttl=3)
    assert make_options("192.0.2.1", mode="udp", packets=packets).packets is packets


@pytest.mark.parametrize(
    ("target", "source", "family"),
    [
        ("echo.example", "198.18.0.1", socket.AF_INET),
        ("echo.example", "2001:db8::1", socket.AF_INET6),
        ("192.0.2.1", "198.18.0.1", socket.AF_INET),
    ],
)
def test_a_source_address_chooses_the_family_a_name_resolves_to(target, source, family):
    assert make_options(target, packets=PacketOptions(source=source)).family == family


def test_an_interface_chooses_no_family():
    assert make_options("echo.example", packets=PacketOptions(interface="eth0")).family is None


@pytest.mark.parametrize(
    ("target", "family", "source"),
    [
        ("[2001:db8::7]:7", None, "198.18.0.1"),
        ("192.0.2.1", None, "2001:db8::1"),
        ("echo.example", socket.AF_INET6, "198.18.0.1"),
        ("echo.example", socket.AF_INET, "fe80::1%eth0"),
    ],
)
def test_a_source_address_of_the_other_family_is_refused(target, family, source):
    with pytest.raises(ValueError, match=rf"-I {re.escape(source)} is an IPv[46] address"):
        make_options(target, family=family, packets=PacketOptions(source=source))


def test_a_source_address_decides_the_largest_datagram_too():
    with pytest.raises(ValueError, match=r"65507 bytes a datagram over IPv4$"):
        make_options("echo.example", mode="udp", size=65520, packets=PacketOptions(source="198.18.0.1"))
    assert (
        make_options("echo.example", mode="udp", size=65520, packets=PacketOptions(source="2001:db8::1")).size
        == 65520
    )
