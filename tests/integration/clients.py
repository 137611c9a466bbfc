"""
Blocking test clients that send and receive at once, so that large echoes
cannot deadlock on full socket buffers.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections.abc import Iterator


def connect(
    port: int, host: str = "127.0.0.1", source: str | None = None, timeout: float = 30
) -> socket.socket:
    sock = socket.create_connection(
        (host, port), timeout=timeout, source_address=(source, 0) if source else None
    )
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@contextlib.contextmanager
def held(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    """C{socks}, each closed when the block ends, however it ends (those added in it too)."""
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def exchange(
    sockets_payloads: list[tuple[socket.socket, bytes]], half_close: bool = True, timeout: float = 60
) -> list[bytes]:
    """
    Send each payload on its socket while reading what comes back, all
    sockets at once. With C{half_close}, shut down the sending side when a
    payload is sent and read until the server closes; otherwise read until
    as many bytes as were sent have come back.
    """
    selector = selectors.DefaultSelector()
    state = []
    for sock, payload in sockets_payloads:
        sock.setblocking(False)
        entry = {
            "sock": sock,
            "out": memoryview(payload),
            "in": bytearray(),
            "want": len(payload),
            "eof": False,
        }
        state.append(entry)
        if not payload and half_close:
            sock.shutdown(socket.SHUT_WR)
        selector.register(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if payload else 0), entry)
    open_count = len(state)
    deadline = time.monotonic() + timeout
    while open_count:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{open_count} exchange(s) unfinished after {timeout}s")
        for key, events in selector.select(left):
            entry = key.data
            if events & selectors.EVENT_WRITE and entry["out"]:
                sent = entry["sock"].send(entry["out"][: 1 << 20])
                entry["out"] = entry["out"][sent:]
                if not entry["out"]:
                    selector.modify(entry["sock"], selectors.EVENT_READ, entry)
                    if half_close:
                        entry["sock"].shutdown(socket.SHUT_WR)
            if events & selectors.EVENT_READ:
                chunk = entry["sock"].recv(1 << 20)
                if chunk:
                    entry["in"] += chunk
                else:
                    entry["eof"] = True
                done = entry["eof"] if half_close else (entry["eof"] or len(entry["in"]) >= entry["want"])
                if done:
                    selector.unregister(entry["sock"])
                    open_count -= 1
    selector.close()
    for entry in state:
        entry["sock"].setblocking(True)
    return [bytes(entry["in"]) for entry in state]


def echo(port: int, payload: bytes, host: str = "127.0.0.1", half_close: bool = True) -> bytes:
    """One connection: send C{payload}, return everything that came back."""
    with connect(port, host) as sock:
        return exchange([(sock, payload)], half_close=half_close)[0]


def read_until_closed(sock: socket.socket, timeout: float = 30) -> bytes:
    """Read until the server closes the connection (EOF or reset)."""
    sock.settimeout(timeout)
    data = bytearray()
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return bytes(data)


def pattern(size: int, seed: int = 0) -> bytes:
    """C{size} bytes that differ from connection to connection and from offset to offset."""
    block = bytes((i * 7 + seed * 13) % 256 for i in range(65521))  # prime length: no short period
    return (block * (size // len(block) + 1))[:size]


def converse(
    sock: socket.socket,
    data: bytes,
    *,
    half_close: bool = False,
    read_size: int = 1 << 20,
    read_rate: float | None = None,
    timeout: float = 60,
) -> tuple[bytes, OSError | None]:
    """
    Send C{data} on C{sock} while reading what comes back, until the server
    closes: at most C{read_size} bytes a read and, with C{read_rate}, no faster
    than that many bytes a second (a slow reader). With C{half_close}, shut
    down the sending side once C{data} is sent.

    @return: everything received, and the error that ended the connection
        (C{None} for a clean end of file).
    """
    sock.setblocking(False)
    selector = selectors.DefaultSelector()
    out = memoryview(data)
    received = bytearray()
    started = time.monotonic()
    deadline = started + timeout
    selector.register(sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if out else 0))
    try:
        while True:
            now = time.monotonic()
            if now > deadline:
                raise TimeoutError(f"the server did not close within {timeout}s ({len(received)} bytes read)")
            # A paced reader does not even look at its socket until its next read is due.
            due = started + len(received) / read_rate if read_rate else now
            wanted = (selectors.EVENT_READ if due <= now else 0) | (selectors.EVENT_WRITE if out else 0)
            if not wanted:
                time.sleep(min(due, deadline) - now)  # the pace of a slow reader, not a synchronisation
                continue
            selector.modify(sock, wanted)
            for _, events in selector.select(min(due, deadline) - now if due > now else deadline - now):
                if events & selectors.EVENT_WRITE and out:
                    try:
                        out = out[sock.send(out[: 1 << 20]) :]
                    except OSError as e:
                        return bytes(received), e
                    if not out and half_close:
                        sock.shutdown(socket.SHUT_WR)
                if events & selectors.EVENT_READ:
                    try:
                        chunk = sock.recv(read_size)
                    except OSError as e:
                        return bytes(received), e
                    if not chunk:
                        return bytes(received), None
                    received += chunk
    finally:
        selector.close()
        sock.setblocking(True)
