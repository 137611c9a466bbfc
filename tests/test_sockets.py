"""
The sockets echod binds itself, on real loopback sockets: dual stack or one
family, SO_REUSEPORT, the datagram buffer, and every failure explained with
what to do about it; the open-files limit raised.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys

import pytest

from echod.sockets import (
    DATAGRAM_BUFFER,
    BindError,
    bind_datagram,
    bind_stream,
    describe_bind_failure,
)
from tests.integration.daemon import environment, without_bind_privilege

#: An address of TEST-NET-2's benchmarking range, which no interface here has.
ABSENT = "198.18.0.1"


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def connects(family: int, address: str, port: int) -> bool:
    with socket.socket(family) as client:
        client.settimeout(10)
        try:
            client.connect((address, port))
        except ConnectionRefusedError:
            return False
        return True


def test_a_stream_socket_listens_non_blocking_at_once():
    with bind_stream("127.0.0.1", 0) as sock:
        assert sock.getblocking() is False
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        assert connects(socket.AF_INET, "127.0.0.1", sock.getsockname()[1])
        client, _ = _accept(sock)
        client.close()


def _accept(sock: socket.socket) -> tuple[socket.socket, object]:
    sock.setblocking(True)
    sock.settimeout(10)
    try:
        return sock.accept()
    finally:
        sock.setblocking(False)


def test_every_address_listens_on_ipv4_and_ipv6_alike():
    with bind_stream("::", 0) as sock:
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        port = sock.getsockname()[1]
        assert connects(socket.AF_INET, "127.0.0.1", port)
        assert connects(socket.AF_INET6, "::1", port)


def test_an_ipv6_address_listens_on_ipv6_only_leaving_ipv4_to_another_listener():
    with bind_stream("::1", 0) as six:
        assert six.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        port = six.getsockname()[1]
        with bind_stream("127.0.0.1", port) as four:
            assert four.family == socket.AF_INET
            assert connects(socket.AF_INET, "127.0.0.1", port)


def test_a_datagram_socket_is_non_blocking_with_the_buffer_asked_as_the_kernel_grants_it():
    with open("/proc/sys/net/core/rmem_max") as f:
        rmem_max = int(f.read())
    with bind_datagram("127.0.0.1", 0) as sock:
        assert sock.type == socket.SOCK_DGRAM
        assert sock.getblocking() is False
        # socket(7): the kernel caps the size at rmem_max and doubles it for its bookkeeping.
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * min(DATAGRAM_BUFFER, rmem_max)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(b"x" * 65507, sock.getsockname())
            sock.settimeout(10)
            assert len(sock.recv(65535)) == 65507


@pytest.mark.parametrize("bind", [bind_stream, bind_datagram])
def test_reuse_port_lets_a_second_socket_share_the_port_and_without_it_the_second_is_refused(bind):
    with bind("127.0.0.1", 0, reuse_port=True) as first:
        port = first.getsockname()[1]
        assert first.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        with bind("127.0.0.1", port, reuse_port=True) as second:
            assert second.getsockname() == first.getsockname()
        with pytest.raises(BindError) as caught:
            bind("127.0.0.1", port)
    assert caught.value.address_in_use
    assert not caught.value.not_permitted


def test_an_address_in_use_says_who_to_ask_and_what_to_do():
    with bind_stream("127.0.0.1", 0) as squatter:
        port = squatter.getsockname()[1]
        before = open_descriptors()
        with pytest.raises(BindError) as caught:
            bind_stream("127.0.0.1", port)
        assert open_descriptors() == before  # the socket that could not bind is closed
    assert str(caught.value) == (
        f"cannot listen on tcp 127.0.0.1:{port}: the address is already in use by another socket "
        f"(see: ss -lnp 'sport = :{port}'); stop that program or choose another port"
    )
    assert caught.value.__cause__.errno == errno.EADDRINUSE


@pytest.mark.parametrize(("bind", "kind"), [(bind_stream, "tcp"), (bind_datagram, "udp")])
def test_an_address_this_host_does_not_have_says_to_check_address(bind, kind):
    with pytest.raises(BindError) as caught:
        bind(ABSENT, 7007)
    assert str(caught.value) == (
        f"cannot listen on {kind} {ABSENT}:7007: {ABSENT} is not an address of this host; check 'address'"
    )
    assert not caught.value.address_in_use and not caught.value.not_permitted


def test_an_ipv6_address_is_named_in_brackets():
    with bind_stream("::1", 0) as squatter:
        port = squatter.getsockname()[1]
        with pytest.raises(BindError, match=rf"^cannot listen on tcp \[::1\]:{port}: the address is already"):
            bind_stream("::1", port)


def run_python(code: str, command=lambda argv: argv) -> subprocess.CompletedProcess:
    argv = command([sys.executable, "-c", code])
    return subprocess.run(argv, capture_output=True, text=True, env=environment(), timeout=60, check=True)


def test_a_privileged_port_without_the_privilege_names_the_three_ways_out():
    code = (
        "from echod.sockets import BindError, bind_stream\n"
        "try: bind_stream('127.0.0.1', 7)\n"
        "except BindError as e: print(e.not_permitted, e)\n"
    )
    out = run_python(code, without_bind_privilege).stdout
    assert out == (
        "True cannot listen on tcp 127.0.0.1:7: port 7 is privileged (below 1024). Use systemd socket "
        "activation (echod.socket), run with CAP_NET_BIND_SERVICE, or choose a port of 1024 or more in "
        "the configuration\n"
    )


def test_running_out_of_descriptors_at_socket_is_a_bind_error_too():
    # The limit is what is open now: socket() itself fails, before any bind.
    code = (
        "import os, resource\n"
        "from echod.sockets import BindError, bind_stream\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "free = os.dup(0)\nos.close(free)\n"  # the lowest descriptor free: the next socket's
        "resource.setrlimit(resource.RLIMIT_NOFILE, (free, hard))\n"
        "try: bind_stream('127.0.0.1', 0)\n"
        "except BindError as e: print(e)\n"
    )
    assert run_python(code).stdout == "cannot listen on tcp 127.0.0.1:0: Too many open files\n"


def test_any_other_failure_is_told_in_the_systems_words():
    error = OSError(errno.ENODEV, os.strerror(errno.ENODEV))
    assert (
        describe_bind_failure(error, "::", 7, "udp")
        == f"cannot listen on udp [::]:7: {os.strerror(errno.ENODEV)}"
    )


def test_the_open_files_limit_is_raised_to_the_hard_one():
    code = (
        "import resource\n"
        "from echod.sockets import raise_fd_limit\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "print(raise_fd_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE), hard)\n"
    )
    returned, soft, hard, was = run_python(code).stdout.split()
    assert returned == soft == hard == was
