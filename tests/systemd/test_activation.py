import os
import socket

import pytest

from echod.config import parse
from echod.systemd.activation import InheritedSocket, listen_fds, match


@pytest.fixture
def settings():
    return parse(
        "[listener:echo]\nprotocol = echo\nport = 7\n"
        "[listener:bc]\nprotocol = bytecount\nport = 50007\naddress = 127.0.0.1\n"
    )


def inherited(name, transport, address, port):
    return InheritedSocket(socket.socket(), name, transport, address, port)


def test_sockets_are_matched_by_address_when_unnamed(settings):
    a = inherited("echod.socket", "tcp", "127.0.0.1", 50007)
    b = inherited("echod.socket", "tcp", "::", 7)
    pairs, left = match(settings.listeners, [a, b])
    assert pairs == {"echo": b, "bc": a}
    assert left == []


def test_names_win_over_addresses(settings):
    by_address = inherited(None, "tcp", "::", 7)
    by_name = inherited("echo", "tcp", "127.0.0.9", 9999)
    pairs, left = match(settings.listeners, [by_address, by_name])
    assert pairs["echo"] is by_name
    assert left == [by_address]


def test_a_datagram_socket_does_not_serve_a_tcp_listener(settings):
    udp = inherited("echo", "udp", "::", 7)
    pairs, left = match(settings.listeners, [udp])
    assert pairs == {}
    assert left == [udp]


def test_describe_names_transport_address_fd_and_name():
    sock = inherited("web", "tcp", "::", 7)
    assert sock.describe() == f"tcp [::]:7 (fd {sock.sock.fileno()}, named web)"


def test_fds_for_another_process_are_ignored_and_left_alone():
    environ = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    assert listen_fds(environ) == []
    assert environ == {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}


def test_variables_meant_for_us_are_consumed():
    environ = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "0", "LISTEN_FDNAMES": "", "OTHER": "x"}
    assert listen_fds(environ) == []
    assert environ == {"OTHER": "x"}


def test_garbage_in_the_variables_means_no_sockets():
    assert listen_fds({"LISTEN_PID": "self", "LISTEN_FDS": "many"}) == []
