import dataclasses
import ipaddress
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from echod.config import ConfigError, ListenerSettings, Settings, load, parse

ROOT = Path(__file__).resolve().parent.parent
ECHO = "[listener:echo]\nprotocol = echo\nport = 7\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(textwrap.dedent(text), "test.conf")
    return [str(p) for p in caught.value.problems]


def only_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def test_shipped_config_serves_echo_on_7_and_bytecount_on_50007():
    settings = load(str(ROOT / "etc" / "echod.conf"))
    assert settings.log_level == "info"
    assert settings.access_log == "/var/log/echod/access.log"
    assert settings.shutdown_grace == 10
    echo, bytecount = settings.listeners
    assert (echo.name, echo.protocol, echo.transport, echo.address, echo.port) == (
        "echo",
        "echo",
        "tcp",
        "::",
        7,
    )
    assert (echo.max_connections, echo.max_connections_per_peer, echo.idle_timeout) == (1024, 64, 300)
    assert (bytecount.name, bytecount.protocol, bytecount.port) == ("bytecount", "bytecount", 50007)
    assert (bytecount.max_message_size, bytecount.max_header_length) == (16 << 20, 20)


def test_defaults_fill_every_key_left_out():
    settings = parse("[listener:b]\nprotocol = bytecount\nport = 9\n")
    assert settings == Settings(
        path="<string>",
        log_level="info",
        access_log=None,
        shutdown_grace=10.0,
        listeners=(
            ListenerSettings(
                name="b",
                protocol="bytecount",
                transport="tcp",
                address="::",
                port=9,
                max_connections=1024,
                max_connections_per_peer=64,
                idle_timeout=300.0,
                max_message_size=16 << 20,
                max_header_length=20,
                blocked_source_ports=((0, 1023),),
                datagram_rate_per_peer=1000,
                datagram_rate=10000,
                byte_rate=16 << 20,
                receive_buffer=None,
                reuse_port=False,
                peer_prefix_ipv4=32,
                peer_prefix_ipv6=64,
                proxy_protocol=False,
                trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1")),
            ),
        ),
    )


def test_settings_are_immutable():
    settings = parse(ECHO)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.log_level = "debug"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.listeners[0].port = 8


def test_values_are_case_insensitive_and_inline_comments_are_ignored():
    settings = parse("[echod]\nlog_level = WARNING   ; quiet\n[listener:e]\nprotocol = Echo # x\nport = 7\n")
    assert settings.log_level == "warning"
    assert settings.listeners[0].protocol == "echo"


def test_addresses_are_normalised():
    settings = parse("[listener:e]\nprotocol = echo\nport = 7\naddress = [0:0::1]\n")
    assert settings.listeners[0].address == "::1"


def test_idle_timeout_zero_means_no_timeout():
    assert parse(ECHO + "idle_timeout = 0\n").listeners[0].idle_timeout == 0


def test_listeners_on_different_addresses_of_one_port_do_not_conflict():
    text = (
        ECHO.replace("port = 7", "port = 7\naddress = 127.0.0.1")
        + "[listener:e6]\nprotocol = echo\nport = 7\naddress = ::1\n"
    )
    assert len(parse(text).listeners) == 2


def test_missing_file_is_reported_with_its_path(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(str(tmp_path / "nope.conf"))
    assert str(caught.value) == f"{tmp_path}/nope.conf: no such file; create it or name another with -c FILE"


def test_directory_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, not a configuration file"):
        load(str(tmp_path))


def test_unreadable_file_is_reported(tmp_path):
    path = tmp_path / "secret.conf"
    path.write_text(ECHO)
    path.chmod(0)
    # root reads anything, so as root the child drops to nobody before reading.
    drop = "os.setgroups([]); os.setgid(65534); os.setuid(65534)" if os.getuid() == 0 else "pass"
    code = (
        "import os, sys\nfrom echod.config import load, ConfigError\n"
        f"{drop}\ntry: load(sys.argv[1])\nexcept ConfigError as e: print(e)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    assert out.startswith(f"{path}: permission denied reading it (running as uid ")


def test_invalid_utf8_names_its_line(tmp_path):
    path = tmp_path / "latin1.conf"
    path.write_bytes(b"[echod]\n; caf\xe9\n" + ECHO.encode())
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    assert str(caught.value) == f"{path}:2: is not valid UTF-8 text"


def test_key_before_any_section():
    assert only_problem("port = 7\n" + ECHO) == "test.conf:1: 'port = 7' comes before any [section] header"


def test_duplicate_section():
    assert only_problem(ECHO + ECHO) == "test.conf:4: [listener:echo]: this section appears twice; merge them"


def test_duplicate_key():
    assert only_problem(ECHO + "port = 8\n") == (
        "test.conf:4: [listener:echo] port: this key appears twice in the section; keep one"
    )


def test_line_that_is_not_key_value():
    assert only_problem(ECHO + "max_connections 10\n") == (
        "test.conf:4: 'max_connections 10' is not a 'key = value' line"
    )


def test_misspelt_listener_section_suggests_the_right_one():
    found = problems(ECHO + "[listner:bc]\nprotocol = bytecount\nport = 9\n")
    assert found == ["test.conf:4: [listner:bc]: unknown section; did you mean [listener:bc]?"]


def test_misspelt_global_section_suggests_echod():
    assert only_problem("[echo]\nlog_level = info\n" + ECHO) == (
        "test.conf:1: [echo]: unknown section; did you mean [echod]?"
    )


def test_unknown_section_lists_the_known_ones():
    assert only_problem("[DEFAULT]\nx = 1\n" + ECHO) == (
        "test.conf:1: [DEFAULT]: unknown section; expected [echod] or [listener:NAME]"
    )


def test_listener_name_must_be_simple():
    assert only_problem("[listener:a b]\nprotocol = echo\nport = 7\n") == (
        "test.conf:1: [listener:a b]: a listener name is 1 to 64 letters, digits, '_', '.' or '-'"
    )


def test_misspelt_key_suggests_the_right_one():
    assert only_problem(ECHO + "max_conections = 5\n") == (
        "test.conf:4: [listener:echo] max_conections: unknown key 'max_conections'; "
        "did you mean 'max_connections'?"
    )


def test_unknown_key_lists_the_known_keys():
    assert only_problem("[echod]\ncolour = blue\n" + ECHO) == (
        "test.conf:2: [echod] colour: unknown key 'colour'; known keys: log_level, access_log, "
        "shutdown_grace, metrics"
    )


def test_global_key_in_a_listener_says_where_it_belongs():
    assert only_problem(ECHO + "log_level = debug\n") == (
        "test.conf:4: [listener:echo] log_level: unknown key 'log_level'; it belongs in the [echod] section"
    )


def test_listener_key_in_global_section_says_where_it_belongs():
    assert only_problem("[echod]\nport = 7\n" + ECHO) == (
        "test.conf:2: [echod] port: unknown key 'port'; it belongs in a [listener:NAME] section"
    )


def test_bytecount_key_on_an_echo_listener():
    assert only_problem(ECHO + "max_message_size = 1M\n") == (
        "test.conf:4: [listener:echo] max_message_size: "
        "applies only to protocol = bytecount, not echo; remove it"
    )


def test_missing_required_keys():
    assert problems("[listener:x]\naddress = ::1\n") == [
        "test.conf:1: [listener:x] protocol: missing; every [listener:NAME] needs it",
        "test.conf:1: [listener:x] port: missing; every [listener:NAME] needs it",
    ]


def test_misspelt_choice_suggests_the_right_one():
    assert only_problem(ECHO.replace("protocol = echo", "protocol = ehco")) == (
        "test.conf:2: [listener:echo] protocol: 'ehco' is not one of: echo, bytecount; did you mean 'echo'?"
    )


def test_unsupported_transport():
    assert only_problem(ECHO + "transport = sctp\n") == (
        "test.conf:4: [listener:echo] transport: 'sctp' is not one of: tcp, udp"
    )


def test_log_level_choices():
    assert only_problem("[echod]\nlog_level = loud\n" + ECHO) == (
        "test.conf:2: [echod] log_level: 'loud' is not one of: debug, info, warning, error"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("port = seven", "'seven' is not a whole number; expected 0 to 65535"),
        ("port = 65536", "65536 is out of range; expected 0 to 65535"),
        ("port = -1", "'-1' is not a whole number; expected 0 to 65535"),
        ("max_connections = 0", "0 is out of range; expected 1 to 1000000"),
        ("max_connections_per_peer = 1e3", "'1e3' is not a whole number; expected 1 to 1000000"),
    ],
)
def test_integers_out_of_grammar_or_range(line, message):
    key = line.split()[0]
    text = ECHO.replace("port = 7\n", "") + line + ("\nport = 7\n" if key != "port" else "\n")
    assert only_problem(text) == f"test.conf:3: [listener:echo] {key}: {message}"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "idle_timeout = soon",
            "'soon' is not a duration; write seconds, or a number with ms, s, m, h or d (e.g. 5m)",
        ),
        ("idle_timeout = 8d", "8d is out of range; expected 1ms to 7d, or 0 for no timeout"),
        (
            "max_message_size = lots",
            "'lots' is not a size; write bytes, or a number with K, M, G or T (e.g. 16M)",
        ),
        ("max_message_size = 0", "0 is out of range; expected 1 to 1T"),
        ("max_message_size = 2T", "2T is out of range; expected 1 to 1T"),
        ("max_header_length = 65", "65 is out of range; expected 1 to 64"),
    ],
)
def test_sizes_and_durations_out_of_grammar_or_range(line, message):
    text = "[listener:b]\nprotocol = bytecount\nport = 9\n" + line + "\n"
    assert only_problem(text) == f"test.conf:4: [listener:b] {line.split()[0]}: {message}"


def test_shutdown_grace_range():
    assert only_problem("[echod]\nshutdown_grace = 2h\n" + ECHO) == (
        "test.conf:2: [echod] shutdown_grace: 2h is out of range; expected 0 to 1h"
    )


def test_address_must_be_an_ip_address():
    assert only_problem(ECHO + "address = localhost\n") == (
        "test.conf:4: [listener:echo] address: 'localhost' is not an IP address; write an IPv4 or IPv6 "
        "address such as 127.0.0.1 or ::1 "
        "(:: means every address, IPv4 and IPv6; host names are not resolved)"
    )


def test_access_log_must_be_absolute():
    assert only_problem("[echod]\naccess_log = logs/access.log\n" + ECHO) == (
        "test.conf:2: [echod] access_log: 'logs/access.log' is not an absolute path; "
        "write one, or leave it empty for off"
    )


def test_no_listener_at_all():
    assert only_problem("[echod]\nlog_level = info\n") == (
        "test.conf: no [listener:NAME] section: echod would serve nothing; "
        "add one, e.g. [listener:echo] with protocol = echo and port = 7"
    )


@pytest.mark.parametrize(("first", "second"), [("::", "::"), ("::", "127.0.0.1"), ("0.0.0.0", "127.0.0.1")])
def test_listeners_on_overlapping_addresses_conflict(first, second):
    text = (
        f"[listener:a]\nprotocol = echo\nport = 7\naddress = {first}\n"
        f"[listener:b]\nprotocol = bytecount\nport = 7\naddress = {second}\n"
    )
    assert only_problem(text) == (
        f"test.conf:7: [listener:b] port: listens on the same tcp port 7 as [listener:a] "
        f"({first} and {second} overlap); give one of them another port or address"
    )


def test_every_problem_is_reported_at_once():
    found = problems(
        """\
        [echod]
        log_level = chatty
        [listener:echo]
        protocol = echo
        port = 99999
        idle_timeout = forever
        """
    )
    assert [p.split(":")[1] for p in found] == ["2", "5", "6"]


UDP = "[listener:u]\nprotocol = echo\ntransport = udp\nport = 7\n"


def test_udp_listener_keys():
    (listener,) = parse(
        UDP + "blocked_source_ports = 0-1023, 1900 ,5353\ndatagram_rate_per_peer = 5\n"
        "datagram_rate = 50\nbyte_rate = 1M\n"
    ).listeners
    assert listener.transport == "udp"
    assert listener.blocked_source_ports == ((0, 1023), (1900, 1900), (5353, 5353))
    assert (listener.datagram_rate_per_peer, listener.datagram_rate, listener.byte_rate) == (5, 50, 1 << 20)
    assert listener.summary() == (
        "listener u: echo/udp on [::]:7, blocked_source_ports=0-1023, 1900, 5353, "
        "datagram_rate_per_peer=5, datagram_rate=50, byte_rate=1M, receive_buffer=default, "
        "peer_prefix_ipv4=32, peer_prefix_ipv6=64"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0-1023, x", "'x' is not a port or a range of ports; write e.g. 0-1023, 1900, 5353"),
        ("1023-0", "'1023-0' is not a range of ports from 0 to 65535, low to high"),
        ("70000", "'70000' is not a range of ports from 0 to 65535, low to high"),
    ],
)
def test_bad_port_lists(value, message):
    assert only_problem(UDP + f"blocked_source_ports = {value}\n") == (
        f"test.conf:5: [listener:u] blocked_source_ports: {message}"
    )


def test_tcp_keys_on_a_udp_listener_and_udp_keys_on_a_tcp_listener():
    assert only_problem(UDP + "idle_timeout = 5s\n") == (
        "test.conf:5: [listener:u] idle_timeout: applies only to transport = tcp, not udp; remove it"
    )
    assert only_problem(ECHO + "datagram_rate = 5\n") == (
        "test.conf:4: [listener:echo] datagram_rate: applies only to transport = udp, not tcp; remove it"
    )


def test_bytecount_over_udp_is_refused():
    assert only_problem("[listener:b]\nprotocol = bytecount\ntransport = udp\nport = 9\n") == (
        "test.conf:3: [listener:b] transport: "
        "bytecount needs a connection to close when the payload is done; "
        "use transport = tcp, or protocol = echo for UDP"
    )


def test_tcp_and_udp_listeners_may_share_a_port_number():
    assert len(parse(ECHO + UDP.replace("[listener:u]", "[listener:u7]")).listeners) == 2


def test_shipped_udp_example_is_valid_once_uncommented():
    text = (ROOT / "etc" / "echod.conf").read_text()
    start = text.index("#[listener:udp-echo]")
    uncommented = text[:start] + "\n".join(line.removeprefix("#") for line in text[start:].splitlines())
    udp = parse(uncommented).listeners[-1]
    assert (udp.name, udp.transport, udp.port, udp.blocked_source_ports) == (
        "udp-echo",
        "udp",
        7,
        ((0, 1023),),
    )


def test_reuse_port_must_be_yes_or_no():
    assert only_problem(ECHO + "reuse_port = maybe\n") == (
        "test.conf:4: [listener:echo] reuse_port: 'maybe' is not yes or no"
    )


def test_peer_prefixes_group_addresses_for_the_per_peer_limits():
    (listener,) = parse(ECHO + "peer_prefix_ipv4 = 24\npeer_prefix_ipv6 = 56\n").listeners
    assert (listener.peer_prefix_ipv4, listener.peer_prefix_ipv6) == (24, 56)
    assert "max_connections_per_peer=64, peer_prefix_ipv4=24, peer_prefix_ipv6=56, " in listener.summary()
    (udp,) = parse(UDP + "peer_prefix_ipv4 = 0\npeer_prefix_ipv6 = 128\n").listeners
    assert (udp.peer_prefix_ipv4, udp.peer_prefix_ipv6) == (0, 128)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("peer_prefix_ipv4", "33", "33 is out of range; expected 0 to 32"),
        ("peer_prefix_ipv4", "/24", "'/24' is not a whole number; expected 0 to 32"),
        ("peer_prefix_ipv6", "129", "129 is out of range; expected 0 to 128"),
        ("peer_prefix_ipv6", "-1", "'-1' is not a whole number; expected 0 to 128"),
    ],
)
def test_peer_prefixes_out_of_range(key, value, message):
    assert only_problem(ECHO + f"{key} = {value}\n") == f"test.conf:4: [listener:echo] {key}: {message}"


def test_metrics_are_off_unless_an_address_and_port_are_given():
    assert parse(ECHO).metrics is None
    assert parse("[echod]\nmetrics =\n" + ECHO).metrics is None
    assert parse("[echod]\nmetrics = 127.0.0.1:9207\n" + ECHO).metrics == ("127.0.0.1", 9207)
    assert parse("[echod]\nmetrics = [::1]:9207\n" + ECHO).metrics == ("::1", 9207)
    assert parse("[echod]\nmetrics = [::]:0\n" + ECHO).metrics == ("::", 0)


def test_a_metrics_value_that_is_not_address_and_port_is_told_at_its_key():
    # Every such message, on its own: tests/test_endpoints.py.
    assert only_problem("[echod]\nmetrics = [::1]\n" + ECHO) == (
        "test.conf:2: [echod] metrics: '[::1]': the port is missing; write e.g. [::1]:9207"
    )


def test_a_metrics_address_that_is_a_name_is_refused_as_a_listeners_is():
    assert "'localhost' is not an IP address" in only_problem("[echod]\nmetrics = localhost:9207\n" + ECHO)
    assert "'localhost' is not an IP address" in only_problem("[echod]\nmetrics = localhost\n" + ECHO)


def test_metrics_take_every_port_from_0_to_65535():
    for port in (0, 1, 65535):
        assert parse(f"[echod]\nmetrics = [::1]:{port}\n" + ECHO).metrics == ("::1", port)


@pytest.mark.parametrize("key", ["address", "port"])
def test_a_listener_address_or_port_written_as_address_and_port_is_told_at_its_key(key):
    # Every such message, on its own: tests/test_endpoints.py.
    text = f"[listener:echo]\nprotocol = echo\n{key} = 127.0.0.1:7\n" + (
        "port = 7\n" if key == "address" else ""
    )
    assert only_problem(text) == (
        f"test.conf:3: [listener:echo] {key}: "
        "'127.0.0.1:7' is an address and a port; write address = 127.0.0.1 and port = 7"
    )


def test_metrics_on_a_tcp_listeners_port_are_refused_and_on_a_udp_ones_allowed():
    assert only_problem("[echod]\nmetrics = 127.0.0.1:7\n" + ECHO) == (
        "test.conf:2: [echod] metrics: 127.0.0.1:7 is where [listener:echo] listens; "
        "give the metrics another port"
    )
    udp = "[listener:u]\nprotocol = echo\ntransport = udp\nport = 9207\n"
    assert parse("[echod]\nmetrics = 127.0.0.1:9207\n" + udp).metrics == ("127.0.0.1", 9207)
    assert parse("[echod]\nmetrics = 127.0.0.1:8\n" + ECHO).metrics == ("127.0.0.1", 8)
