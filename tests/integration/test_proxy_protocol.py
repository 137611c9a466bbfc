"""
proxy_protocol on a real echod over real loopback sockets: the header names
the client, the caps and the access log follow it, untrusted sources and bad
headers are closed, and a reload turns it on and off. With real balancers
and hosts: test_haproxy.py.
"""

import signal
import time

from tests.integration.clients import connect, exchange, pattern, read_until_closed
from tests.integration.test_daemon import assert_clean_exit
from tests.proxyheaders import proxy_v1, proxy_v2

#: The client a balancer's header names, unless a test needs another.
CLIENT = ("198.18.1.10", 40000)


def access_lines(path, count: int, timeout: float = 10) -> list[str]:
    """The access log's lines once it has C{count} (it is written at least every second)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)  # polling a file the daemon flushes on its own timer


def fields(line: str) -> tuple[str, ...]:
    """Listener, peer, closed= and via= of an access log line (via empty if absent)."""
    parts = line.split()
    via = parts[7] if len(parts) > 7 else ""
    return (parts[1], parts[2], parts[6], via)


def test_header_then_payload_echoes_the_payload_and_logs_the_client_via_the_proxy(start_daemon, tmp_path):
    log = tmp_path / "access.log"
    daemon = start_daemon(
        {"access_log": str(log)},
        echo={"protocol": "echo", "proxy_protocol": "yes"},
        bc={"protocol": "bytecount", "proxy_protocol": "yes"},
    )
    payload = pattern(256 * 1024)
    with (
        connect(daemon.port("echo")) as a,
        connect(daemon.port("bc")) as b,
        connect(daemon.port("echo")) as c,
    ):
        proxy_ports = [s.getsockname()[1] for s in (a, b, c)]
        assert exchange(
            [
                (a, proxy_v1(CLIENT) + payload),
                (b, proxy_v2(("198.18.1.11", 40000)) + b"5 hello"),
                (c, proxy_v1(("2001:db8::10", 40001)) + b"six"),
            ]
        ) == [payload, b"hello", b"six"]
    lines = sorted(fields(line) for line in access_lines(log, 3))
    assert lines == [
        ("bc", "198.18.1.11:40000", "closed=server", f"via=127.0.0.1:{proxy_ports[1]}"),
        ("echo", "198.18.1.10:40000", "closed=client", f"via=127.0.0.1:{proxy_ports[0]}"),
        ("echo", "[2001:db8::10]:40001", "closed=client", f"via=127.0.0.1:{proxy_ports[2]}"),
    ]
    in_out = {line.split()[2]: line.split()[3:5] for line in access_lines(log, 3)}
    assert in_out["198.18.1.10:40000"] == [f"in={len(payload)}", f"out={len(payload)}"]
    assert_clean_exit(daemon.stop(), signal.SIGTERM, daemon.output)


def test_a_header_sent_a_byte_at_a_time_is_read_whole(start_daemon):
    daemon = start_daemon({}, echo={"protocol": "echo", "proxy_protocol": "yes"})
    with connect(daemon.port("echo")) as sock:
        for byte in proxy_v2(CLIENT):
            sock.send(bytes([byte]))
        assert exchange([(sock, b"after")]) == [b"after"]


def test_the_per_peer_cap_holds_per_client_named_by_the_header(start_daemon, tmp_path):
    log = tmp_path / "access.log"
    daemon = start_daemon(
        {"access_log": str(log)},
        echo={"protocol": "echo", "proxy_protocol": "yes", "max_connections_per_peer": "2"},
    )
    port = daemon.port("echo")
    held = [connect(port), connect(port)]
    try:
        for i, sock in enumerate(held):
            sock.sendall(proxy_v1(("198.18.1.10", 40000 + i)))
        assert exchange([(sock, b"in") for sock in held], half_close=False) == [b"in", b"in"]
        with connect(port) as third:  # the same client, through the same proxy
            third.sendall(proxy_v1(("198.18.1.10", 40002)) + b"more")
            assert read_until_closed(third) == b""
        daemon.wait_for(
            r"echo: max_connections_per_peer \(2\) reached, refusing new connections from 198\.18\.1\.10$"
        )
        with connect(port) as other:  # another client, through the same proxy: served
            assert exchange([(other, proxy_v1(("198.18.1.11", 40000)) + b"other")]) == [b"other"]
    finally:
        for sock in held:
            sock.close()
    closed = sorted((f[1], f[2]) for f in map(fields, access_lines(log, 4)))
    assert closed == [
        ("198.18.1.10:40000", "closed=client"),
        ("198.18.1.10:40001", "closed=client"),
        ("198.18.1.10:40002", "closed=refused-max_connections_per_peer"),
        ("198.18.1.11:40000", "closed=client"),
    ]


def test_a_source_outside_trusted_proxies_is_closed_at_once(start_daemon, tmp_path):
    log = tmp_path / "access.log"
    daemon = start_daemon(
        {"access_log": str(log)},
        echo={"protocol": "echo", "proxy_protocol": "yes", "trusted_proxies": "127.0.0.2, 198.18.0.0/15"},
    )
    port = daemon.port("echo")
    with connect(port, source="127.0.0.1") as untrusted:
        untrusted_port = untrusted.getsockname()[1]
        try:
            untrusted.sendall(proxy_v1(CLIENT) + b"forged")
            assert read_until_closed(untrusted) == b""
        except ConnectionResetError:
            pass  # closed with the forged header unread: a reset, as good a refusal
    daemon.wait_for(r"echo: closing a connection from 127\.0\.0\.1:\d+, which is not in trusted_proxies")
    with connect(port, source="127.0.0.2") as trusted:
        assert exchange([(trusted, proxy_v1(CLIENT) + b"believed")]) == [b"believed"]
    assert sorted(f[1:3] for f in map(fields, access_lines(log, 2))) == [
        (f"127.0.0.1:{untrusted_port}", "closed=untrusted-proxy"),
        ("198.18.1.10:40000", "closed=client"),
    ]


def test_a_bad_header_closes_only_that_connection(start_daemon, tmp_path):
    log = tmp_path / "access.log"
    daemon = start_daemon({"access_log": str(log)}, echo={"protocol": "echo", "proxy_protocol": "yes"})
    port = daemon.port("echo")
    with connect(port) as good:
        good.sendall(proxy_v1(CLIENT))
        with connect(port) as bad:
            bad.sendall(b"hello, no header\r\n")
            try:
                assert read_until_closed(bad) == b""
            except ConnectionResetError:
                pass
        daemon.wait_for(r"echo: bad PROXY header from 127\.0\.0\.1:\d+, closing: ")
        assert exchange([(good, b"still served")]) == [b"still served"]
    assert sorted(f[2] for f in map(fields, access_lines(log, 2))) == [
        "closed=bad-proxy-header",
        "closed=client",
    ]


def test_a_header_left_unfinished_is_closed_within_seconds_not_the_idle_timeout(start_daemon, tmp_path):
    daemon = start_daemon({}, echo={"protocol": "echo", "proxy_protocol": "yes", "idle_timeout": "1h"})
    with connect(daemon.port("echo"), timeout=20) as slow:
        slow.sendall(proxy_v1(CLIENT)[:12])
        started = time.monotonic()
        try:
            assert read_until_closed(slow, timeout=20) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < 15  # bounded by the header timeout, far below the 1h
    daemon.wait_for(r"closing: no complete PROXY header within \d+s \(12 bytes of one came\)")


def test_reload_turns_it_on_and_off_for_new_connections(start_daemon, tmp_path):
    daemon = start_daemon({}, echo={"protocol": "echo"})
    port = daemon.port("echo")
    with connect(port) as plain:
        assert exchange([(plain, proxy_v1(CLIENT))]) == [proxy_v1(CLIENT)]  # just bytes to echo
    text = daemon.config_path.read_text()
    daemon.config_path.write_text(
        text.replace("protocol = echo\n", "protocol = echo\nproxy_protocol = yes\n")
    )
    with connect(port) as before:  # opened (and answered: accepted) before the reload: stays plain
        assert exchange([(before, b"x")], half_close=False) == [b"x"]
        daemon.send_signal(signal.SIGHUP)
        daemon.wait_for(r"reloaded: serving 1 listener")
        with connect(port) as after:
            assert exchange([(after, proxy_v1(CLIENT) + b"proxied")]) == [b"proxied"]
        assert exchange([(before, b"y")]) == [b"y"]
    daemon.config_path.write_text(text)
    daemon.send_signal(signal.SIGHUP)
    daemon.wait_for(r"reloaded: serving 1 listener", nth=2)
    with connect(port) as plain_again:
        assert exchange([(plain_again, b"plain")]) == [b"plain"]
