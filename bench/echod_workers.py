"""
Several echod processes sharing each port with reuse_port, for the multi-core figure: what
echod@N.socket instances do under systemd, started here without systemd.

    python bench/echod_workers.py N CONFIG

Every listener's port is fixed (a free one) and reuse_port turned on in a copy of CONFIG; the
kernel spreads connections over the N processes. Prints "pids: A,B,..." (the load generator sums
their CPU time), the first worker's "listening on" lines, then "echod serving N workers"; SIGTERM
stops them all.
"""

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shared_config(path: Path) -> Path:
    text = re.sub(r"(?m)^port = 0$", lambda _: f"port = {free_port()}\nreuse_port = yes", path.read_text())
    shared = path.with_name("echod-workers.conf")
    shared.write_text(text)
    return shared


def main() -> None:
    count, config = int(sys.argv[1]), shared_config(Path(sys.argv[2]))
    command = [sys.executable, "-m", "echod", "run", "-c", str(config)]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(count)]
    signal.signal(signal.SIGTERM, lambda *_: [w.terminate() for w in workers])
    print("pids: " + ",".join(str(w.pid) for w in workers), flush=True)
    for i, worker in enumerate(workers):
        for line in worker.stdout:
            if i == 0 and "listening on" in line:
                print(line, end="", flush=True)
            if "echod serving" in line:
                break
    print(f"echod serving {count} workers", flush=True)
    for worker in workers:
        worker.stdout.close()  # their later lines are not needed; nothing blocks on a closed pipe
    for worker in workers:
        worker.wait()
    os._exit(0)


if __name__ == "__main__":
    main()
