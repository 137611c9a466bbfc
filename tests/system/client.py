"""
A client for echod, run inside the test containers (standard library only).

    client.py send PORT DATA     send DATA to 127.0.0.1; print what came back
    client.py send6 PORT DATA    the same over IPv6, to ::1
    client.py refused PORT       exit 0 if 127.0.0.1:PORT refuses connections
    client.py reset PORT         exit 0 if a connection to 127.0.0.1:PORT is reset
                                 within 5 s; print what happened instead
    client.py get URL            print the body of an HTTP GET of URL; exit 1 if it fails
    client.py loop SECONDS PROTOCOL:PORT...
                                 connect over and over, alternating the
                                 listeners (echo:7 bytecount:50007); print
                                 "ready" after the first good echo, then the
                                 counts as JSON

Every connection sends its data, half-closes, and reads until the server
closes. The loop ends after SECONDS or at the first connection refused.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request


def exchange(port: int, data: bytes, host: str = "127.0.0.1", timeout: float = 30) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
        return received


def loop(seconds: float, listeners: list[tuple[str, int]]) -> dict:
    counts = {"ok": 0, "refused": 0, "wrong": 0, "errors": 0}
    problems: list[str] = []
    deadline = time.monotonic() + seconds
    for n in range(10**9):
        if time.monotonic() >= deadline:
            break
        protocol, port = listeners[n % len(listeners)]
        payload = f"{n} ping".encode()
        data = f"{len(payload)} ".encode() + payload if protocol == "bytecount" else payload
        try:
            got = exchange(port, data)
        except ConnectionRefusedError:
            counts["refused"] += 1
            problems.append(f"connection {n} to port {port} refused")
            break
        except OSError as e:
            counts["errors"] += 1
            problems.append(f"connection {n} to port {port}: {e!r}")
            continue
        if got == payload:
            counts["ok"] += 1
            if counts["ok"] == 1:
                print("ready", flush=True)
        else:
            counts["wrong"] += 1
            problems.append(f"connection {n} to port {port}: got {got[:80]!r}, wanted {payload!r}")
    counts["problems"] = problems[:10]
    return counts


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command in ("send", "send6"):
        host = "::1" if command == "send6" else "127.0.0.1"
        sys.stdout.write(exchange(int(args[0]), args[1].encode(), host=host).decode("latin-1"))
    elif command == "refused":
        try:
            # Nothing sent: a probe must not count as a bad request (nor be logged as one).
            exchange(int(args[0]), b"", timeout=5)
        except ConnectionRefusedError:
            return 0
        return 1
    elif command == "reset":
        try:
            got = exchange(int(args[0]), b"x", timeout=5)
        except (ConnectionResetError, BrokenPipeError):
            return 0
        except OSError as e:
            print(repr(e))
            return 1
        print(f"answered {got!r}")
        return 1
    elif command == "get":
        try:
            with urllib.request.urlopen(args[0], timeout=10) as response:
                sys.stdout.write(response.read().decode())
        except OSError as e:
            print(repr(e))
            return 1
    elif command == "loop":
        listeners = [(protocol, int(port)) for protocol, port in (a.split(":") for a in args[1:])]
        print(json.dumps(loop(float(args[0]), listeners)), flush=True)
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
