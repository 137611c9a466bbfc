"""
`echod probe` against what never answers, as real processes: a server whose
SYNs are dropped, a DNS server that never replies, a link-local address
reached only through its interface, a port nobody listens on. Nothing
answered is never a success, and every failure says what failed.
"""

from __future__ import annotations

import contextlib
import re
import select
import signal
import socket
import threading
import time

import pytest

from tests.integration.daemon import Daemon
from tests.integration.test_probe import PROBE, probe, probe_json
from tests.probe.test_output import parse_plugin_output

# -- a server whose SYNs go unanswered ------------------------------------------------------------


@pytest.fixture
def unanswered():
    """
    A listening socket whose accept queue is full: Linux drops the SYNs that
    come to it (unless tcp_abort_on_overflow, off by default, resets them),
    as a server overwhelmed or a firewall's DROP does.
    """
    with socket.socket() as server, socket.socket() as filler:
        server.bind(("127.0.0.1", 0))
        server.listen(0)  # room for one connection, never accepted
        filler.connect(server.getsockname())
        with socket.socket() as check:
            check.setblocking(False)
            check.connect_ex(server.getsockname())
            _, writable, _ = select.select([], [check], [], 0.3)
            if writable:
                pytest.skip("this kernel answers SYNs beyond a full accept queue")
        yield f"127.0.0.1:{server.getsockname()[1]}"


def test_no_connection_within_the_deadline_is_an_error_not_a_success(unanswered):
    done = probe("-w", "1", "-W", "10", unanswered)
    assert done.returncode == 2, done
    assert done.stderr == f"echod probe: no connection to {unanswered} within 1 s\n"
    assert "0 probes sent, 0 answered intact in time" in done.stdout
    status, report = probe_json("-w", "1", "-W", "10", unanswered)
    assert (status, report["sent"]) == (2, 0)
    assert report["error"] == f"no connection to {unanswered} within 1 s"
    done = probe("--critical", "100,50%", "-w", "1", "-W", "10", unanswered)
    parsed = parse_plugin_output(done.stdout)
    assert (done.returncode, parsed["status"]) == (2, "CRITICAL")
    assert f"no connection to {unanswered} within 1 s" in parsed["text"]


def test_no_connection_within_the_probe_timeout_says_so(unanswered):
    done = probe("-W", "1", unanswered)  # Twisted's own connect timeout
    assert (done.returncode, done.stderr) == (2, f"echod probe: no connection to {unanswered} within 1 s\n")
    status, report = probe_json("--connect", "-c", "2", "-i", "0.1", "-W", "0.5", unanswered)
    assert (status, report["sent"], report["lost"]) == (2, 2, 2)
    assert re.fullmatch(rf"no connection to {unanswered} within [\d.]+ s", report["error"]), report


def test_ctrl_c_while_connecting_is_an_error_with_the_summary(unanswered):
    running = Daemon(None, command=[*PROBE, "-W", "30", unanswered]).start()
    try:
        running.wait_for(r"^ECHO ")  # resolved; connecting
        status = running.stop(signal.SIGINT, timeout=10)
    finally:
        running.kill()
    assert status == 2, running.output
    assert re.search(rf"^echod probe: no connection to {unanswered} within [\d.]+ s$", running.output, re.M)
    assert "0 probes sent" in running.output


# -- a DNS server that never answers --------------------------------------------------------------


@pytest.fixture
def silent_dns(network, tmp_path):
    """
    A host whose resolver asks a DNS server that never answers (a UDP socket
    on its 127.0.0.1:53 that the test holds and never reads): the command
    prefix to run the probe there, and the socket, on which each query shows.
    """
    host = network.host("client", 1)
    server = host.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 53))
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:30 attempts:1\n")
    # A mount namespace of its own, for its /etc/resolv.conf; the exec's keep the probe's PID.
    inside = [
        "unshare",
        "--mount",
        "sh",
        "-c",
        'mount --bind "$0" /etc/resolv.conf && exec "$@"',
        str(resolv),
    ]
    yield tuple(host.command(inside)), server
    server.close()


def wait_for_query(server: socket.socket, timeout: float = 30) -> None:
    server.settimeout(timeout)
    server.recvfrom(512)  # the probe's resolver is asking


def test_the_deadline_ends_a_resolution_that_never_answers(silent_dns):
    prefix, _server = silent_dns
    began = time.monotonic()
    done = probe("-w", "1", "-c", "1", "never.example", prefix=prefix, timeout=60)
    took = time.monotonic() - began
    assert done.returncode == 2, done
    assert done.stderr == "echod probe: cannot resolve never.example: no answer within 1 s\n"
    assert took < 10, took  # the resolver alone would wait 30 s
    done = probe("--critical", "100,50%", "-w", "1", "never.example", prefix=prefix, timeout=60)
    parsed = parse_plugin_output(done.stdout)
    assert (done.returncode, parsed["status"]) == (2, "CRITICAL"), done
    assert "cannot resolve never.example: no answer within 1 s" in parsed["text"]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_a_resolution_that_never_answers_at_once(silent_dns, signum):
    prefix, server = silent_dns
    running = Daemon(None, command=[*prefix, *PROBE, "--critical", "100,50%", "never.example"]).start()
    try:
        wait_for_query(server)
        began = time.monotonic()
        status = running.stop(signum, timeout=10)
        took = time.monotonic() - began
    finally:
        running.kill()
    assert status == 2, running.output
    parsed = parse_plugin_output(running.output)
    assert parsed["status"] == "CRITICAL"
    assert re.search(r"cannot resolve never\.example: no answer within [\d.]+ s", parsed["text"])
    assert took < 5, took


# -- an IPv6 link-local address and its interface -------------------------------------------------


def serve_echo(sock: socket.socket, kind: int) -> None:
    """An echo server of the test's own on C{sock}, until it is closed."""
    with contextlib.suppress(OSError):
        if kind == socket.SOCK_DGRAM:
            while True:
                data, peer = sock.recvfrom(65536)
                if peer is None:  # shut down
                    return
                sock.sendto(data, peer)
        while True:
            conn, _ = sock.accept()
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)


@pytest.fixture
def link_local(network):
    """An echo server (UDP and TCP, port 7) on a link-local address, and a client host on its link."""
    client, server = network.host("client", 1), network.host("server", 2)
    server.run(["ip", "address", "add", "fe80::7/64", "dev", "eth0", "nodad"], check=True)
    scope = int(server.run(["cat", "/sys/class/net/eth0/ifindex"], capture_output=True, text=True).stdout)
    sockets = []
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        sock = server.socket(socket.AF_INET6, kind)
        sock.bind(("fe80::7", 7, 0, scope))
        if kind == socket.SOCK_STREAM:
            sock.listen(8)
        sockets.append(sock)
        threading.Thread(target=serve_echo, args=(sock, kind), daemon=True).start()
    yield tuple(client.command([]))
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@pytest.mark.parametrize("mode", ["--udp", "--tcp", "--connect"])
def test_a_link_local_address_is_probed_through_its_interface(link_local, mode):
    status, report = probe_json(
        mode, "-c", "3", "-i", "0.02", "-W", "5", "[fe80::7%eth0]:7", prefix=link_local
    )
    assert (status, report["received"], report["error"]) == (0, 3, None), report
    assert report["address"] == "fe80::7%eth0"


def test_a_link_local_address_without_its_interface_or_with_a_wrong_one_says_so(link_local):
    done = probe("--udp", "-c", "1", "[fe80::7%nosuch0]:7", prefix=link_local)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "echod probe: cannot resolve fe80::7%nosuch0: "
        "no network interface 'nosuch0' here (`ip link` lists them)\n"
    )
    done = probe("--udp", "-c", "1", "[fe80::7]:7", prefix=link_local)
    assert done.returncode == 2
    assert done.stderr == "echod probe: fe80::7 is link-local: name its interface, e.g. [fe80::7%eth0]:7\n"


def test_a_datagram_socket_the_kernel_refuses_to_connect_says_why_with_the_summary(link_local):
    # No route to 2001:db8:ffff::1 from the client (its addresses are 2001:db8:0::/48 only).
    done = probe("--udp", "-c", "1", "[2001:db8:ffff::1]:7", prefix=link_local)
    assert done.returncode == 2, done
    assert done.stderr == "echod probe: cannot send to [2001:db8:ffff::1]:7: Network is unreachable\n"
    assert "0 probes sent" in done.stdout


# -- the default port -----------------------------------------------------------------------------


def test_a_refused_default_port_says_it_was_the_default_and_how_to_name_another(network):
    host = network.host("client", 1)
    for mode in ("--tcp", "--connect"):
        done = probe(mode, "-c", "1", host.ipv4, prefix=tuple(host.command([])))  # nothing on port 7
        assert done.returncode == 2
        assert done.stderr == (
            f"echod probe: connection refused by {host.ipv4}:7 (7 is the default port; give the server's "
            f"as HOST:PORT, e.g. {host.ipv4}:7007 for `make run`)\n"
        )
