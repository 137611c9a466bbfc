"""
The UDP echo as the network sees it: answers leave from the address each
datagram was sent to, on a host with several, and what the kernel drops
before echod reads is counted exactly as the kernel counts it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys

import pytest

from echod.sockopts import SO_RCVBUFFORCE
from tests.integration.daemon import Daemon
from tests.integration.metrics import get, metrics_url, scrape, until
from tests.integration.test_probe import probe_json

#: The server's second address of each family, on the same interface as its first: the route's
#: preferred source is the first, so a wildcard socket would answer a datagram sent here from there.
SECOND_IPV4 = "198.18.0.202"
SECOND_IPV6 = "2001:db8:0:2::2"
PR_CAPBSET_DROP, CAP_NET_ADMIN = 24, 12  # linux/prctl.h, linux/capability.h
RATES = {"datagram_rate_per_peer": "100000", "datagram_rate": "100000", "byte_rate": "1G"}


def listener(name: str, address: str, port: int, **keys: str) -> str:
    keys = {"protocol": "echo", "transport": "udp", "address": address, "port": str(port), **RATES, **keys}
    return f"[listener:{name}]\n" + "".join(f"{key} = {value}\n" for key, value in keys.items())


@pytest.fixture
def multihomed(network, tmp_path):
    """A server with two IPv4 and two IPv6 addresses on one interface, echod on :: (7) and 0.0.0.0 (8)."""
    client, server = network.host("client", 1), network.host("server", 2)
    server.run(["ip", "address", "add", f"{SECOND_IPV4}/24", "dev", "eth0"], check=True)
    server.run(["ip", "address", "add", f"{SECOND_IPV6}/48", "dev", "eth0", "nodad"], check=True)
    path = tmp_path / "echod.conf"
    path.write_text(listener("dual", "::", 7) + listener("v4", "0.0.0.0", 8))
    daemon = Daemon(path, command=server.command([sys.executable, "-m", "echod", "run", "-c", str(path)]))
    daemon.start().wait_ready()
    yield client, server
    daemon.kill()


def test_every_echo_comes_back_from_the_address_it_was_sent_to(multihomed):
    client, server = multihomed
    sent_to = [
        (server.ipv4, 7),
        (SECOND_IPV4, 7),
        (server.ipv6, 7),
        (SECOND_IPV6, 7),
        (server.ipv4, 8),
        (SECOND_IPV4, 8),
    ]
    answered = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        with client.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            for address, port in sent_to:
                if (":" in address) != (family == socket.AF_INET6):
                    continue
                payload = f"to {address} port {port}".encode()
                sock.sendto(payload, (address, port))
                data, source = sock.recvfrom(2048)
                assert data == payload
                answered[(address, port)] = source[:2]
    assert answered == {where: where for where in sent_to}


def test_a_connected_client_of_the_second_address_loses_nothing(multihomed):
    # A connected socket, as `echod probe --udp` and most clients use, drops an
    # answer from any other address: before echod answered from the address
    # used, this run lost every datagram over IPv4.
    client, _ = multihomed
    for address in (SECOND_IPV4, SECOND_IPV6):
        status, report = probe_json(
            "--udp", "-c", "20", "-i", "0.01", "-W", "5", address, prefix=tuple(client.command([]))
        )
        assert (status, report["sent"], report["received"], report["lost"]) == (0, 20, 20, 0), report


def proc_net_udp_drops(pid: int, port: int) -> int:
    """The drops /proc/net/udp and udp6 count for the sockets on C{port}, as process C{pid} sees them."""
    drops = 0
    for table in ("udp", "udp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    drops += int(fields[-1])
    return drops


def test_the_kernels_drops_are_counted_as_the_kernel_counts_them(tmp_path):
    path = tmp_path / "echod.conf"
    port = 0
    path.write_text(
        "[echod]\nmetrics = 127.0.0.1:0\n" + listener("udp", "127.0.0.1", port, receive_buffer="4K")
    )
    daemon = Daemon(path).start().wait_ready()
    try:
        port = int(daemon.wait_for(r"udp: echo/udp listening on \S+:(\d+)").group(1))
        url = metrics_url(daemon)
        before = scrape(url)
        assert get(before, "echod_datagrams_dropped_total", listener="udp", reason="receive_buffer_full") == 0
        # The smallest buffer the kernel gives (it reports twice what it grants).
        assert get(before, "echod_receive_buffer_bytes", listener="udp") == 8192
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            daemon.send_signal(signal.SIGSTOP)  # echod reads nothing meanwhile: the buffer fills
            try:
                for _ in range(500):
                    sender.sendto(b"x" * 512, ("127.0.0.1", port))
            finally:
                daemon.send_signal(signal.SIGCONT)
            dropped = proc_net_udp_drops(daemon.process.pid, port)
            assert dropped > 0
            # Those the buffer held come back: then it has room again, and the
            # kernel hands the count over with the next datagram it queues.
            sender.settimeout(10)
            for _ in range(500 - dropped):
                assert sender.recv(2048) == b"x" * 512
            sender.sendto(b"after", ("127.0.0.1", port))
            assert sender.recv(2048) == b"after"
        # A page is rendered at most every FRESH seconds: the one that counts them comes soon.
        after = until(
            url, lambda samples: get(samples, "echod_datagrams_echoed_total", listener="udp") == 501 - dropped
        )
        counted = get(after, "echod_datagrams_dropped_total", listener="udp", reason="receive_buffer_full")
        assert counted == dropped == proc_net_udp_drops(daemon.process.pid, port)
    finally:
        daemon.kill()


def without_net_admin() -> None:
    """In the child: CAP_NET_ADMIN out of the bounding set, so that echod, even as root, lacks it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_CAPBSET_DROP, CAP_NET_ADMIN, 0, 0, 0) != 0 and os.geteuid() == 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, CAP_NET_ADMIN)")


def forced_beyond(ceiling: int) -> bool:
    """Whether a child deprived as echod is below (L{without_net_admin}) still gets more than C{ceiling}."""
    code = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"try:\n    s.setsockopt(socket.SOL_SOCKET, {SO_RCVBUFFORCE}, {ceiling})\n"
        "except PermissionError:\n    pass\n"
        "print(s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=without_net_admin, capture_output=True, text=True, check=True
    )
    return int(done.stdout) > ceiling


def test_a_receive_buffer_beyond_the_kernels_cap_is_warned_about_and_the_grant_reported(tmp_path):
    # The most a socket is given without CAP_NET_ADMIN, found by asking for far more; not read from
    # /proc/sys/net/core/rmem_max, which in a container's network namespace (trixie's run here) can
    # show another value than the one the kernel applies.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 30)
        ceiling = probe.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    if forced_beyond(ceiling):
        # Measured, not assumed: in trixie's container here a process keeps the right to pass the
        # cap whatever its bounding set says, so no echod there can be refused.
        pytest.skip("a process without CAP_NET_ADMIN in its bounding set still passes rmem_max here")
    # Twice the most the kernel grants (it reports twice what it grants): more than it will give.
    path = tmp_path / "echod.conf"
    udp = listener("udp", "127.0.0.1", 0, receive_buffer=str(ceiling))
    path.write_text("[echod]\nmetrics = 127.0.0.1:0\n" + udp)
    daemon = Daemon(path, preexec=without_net_admin).start().wait_ready()
    try:
        warned = daemon.wait_for(r"udp: receive_buffer = \S+ asked, the kernel gave \S+ .*rmem_max \((\d+)\)")
        with open("/proc/sys/net/core/rmem_max") as f:
            assert int(warned.group(1)) == int(f.read())  # what the admin would look at and raise
        granted = get(scrape(metrics_url(daemon)), "echod_receive_buffer_bytes", listener="udp")
        assert granted == ceiling
    finally:
        daemon.kill()


def test_a_receive_buffer_within_reach_is_granted_whole(tmp_path):
    path = tmp_path / "echod.conf"
    path.write_text(
        "[echod]\nmetrics = 127.0.0.1:0\n" + listener("udp", "127.0.0.1", 0, receive_buffer="64K")
    )
    daemon = Daemon(path).start().wait_ready()
    try:
        assert get(scrape(metrics_url(daemon)), "echod_receive_buffer_bytes", listener="udp") == 2 * 65536
        assert "receive_buffer = " not in daemon.output
    finally:
        daemon.kill()
