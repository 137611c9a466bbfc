"""
What the probe's tests share: a recording reporter, test transports, and a
run started on a clock with its first connection made by hand.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

from twisted.internet.testing import MemoryReactorClock, StringTransport

from echod.probe.datagram import DatagramProbe
from echod.probe.options import make_options
from echod.probe.payload import make_payload
from echod.probe.run import Run
from echod.probe.tally import Tally, exit_status

KEY = b"k" * 16
ADDRESS = "192.0.2.1"


class Recorder:
    """A reporter that keeps what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.tally: Tally | None = None
        self.error: str | None = None
        self.status: int | None = None

    def started(self, address: str) -> None:
        self.events.append(("started", address))

    def answered(self, seq: int, verdict, **details) -> None:
        self.events.append((verdict.value, seq, details))

    def timed_out(self, seq: int, detail: str = "") -> None:
        self.events.append(("timeout", seq, detail))

    def duplicate(self, seq: int, size: int, rtt: float | None) -> None:
        self.events.append(("duplicate", seq, rtt))

    def unexpected(self, size: int, detail: str) -> None:
        self.events.append(("unexpected", size, detail))

    def finished(self, tally: Tally, elapsed: float, error: str | None) -> int:
        self.tally, self.error = tally, error
        self.status = exit_status(tally, error is not None)
        return self.status

    def kinds(self) -> list[tuple[str, int]]:
        return [(event[0], event[1]) for event in self.events if event[0] != "started"]

    def detail(self, kind: str) -> dict | str:
        return next(event[2] for event in self.events if event[0] == kind)


class Silent(Recorder):
    """A recorder that keeps only the end: for runs of thousands of probes."""

    def answered(self, seq: int, verdict, **details) -> None:
        pass

    def timed_out(self, seq: int, detail: str = "") -> None:
        pass


class ProbeTransport(StringTransport):
    """A TCP transport's few extras over StringTransport: Nagle, half-close."""

    nodelay = False
    write_closed = False
    aborted = False

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


class DatagramTransport:
    """A connected UDP port's face to its protocol."""

    def __init__(self, handle: object = None) -> None:
        self.sent: list[bytes] = []
        self.connected_to = None
        self.fail_with: OSError | None = None
        #: What getHandle() gives: the socket, or a stand-in for one.
        self.handle = handle

    def getHandle(self) -> object:
        return self.handle

    def connect(self, host: str, port: int) -> None:
        self.connected_to = (host, port)

    def write(self, data: bytes) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(data)


def made(
    target: str = ADDRESS,
    reporter: Recorder | None = None,
    received: Callable[[], float] | None = None,
    **kwargs,
) -> tuple[Run, Recorder, MemoryReactorClock]:
    """
    A run of the options C{target} and C{kwargs} make, on a clock, not yet
    started: its host (L{ADDRESS}, or a name to resolve) as the options have it.
    """
    reactor = MemoryReactorClock()
    recorder = reporter or Recorder()
    options = make_options(target, **kwargs)
    run = Run(options, options.host, recorder, reactor, reactor.seconds, KEY, received=received)
    return run, recorder, reactor


def start(
    mode: str = "tcp", reporter: Recorder | None = None, **kwargs
) -> tuple[Run, Recorder, MemoryReactorClock]:
    """A run of C{kwargs}' options to L{ADDRESS} over C{mode}, started, its channel set up."""
    run, recorder, reactor = made(ADDRESS, reporter, mode=mode, **kwargs)
    if mode == "udp":
        # The real channel binds a real socket; the protocol is what is tested here.
        run.channel.protocol.makeConnection(DatagramTransport())
        recorder.started(ADDRESS)
        run.ready()
    else:
        run.start()
    return run, recorder, reactor


def connect(reactor: MemoryReactorClock, index: int = -1) -> tuple[object, ProbeTransport]:
    """Let the latest (or the INDEXth) connection attempt succeed; its protocol and transport."""
    factory = reactor.tcpClients[index][2]
    protocol = factory.buildProtocol(None)
    transport = ProbeTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def expected(seq: int, size: int = 64) -> bytes:
    return make_payload(KEY, seq, size)


def udp(**kwargs) -> tuple[Run, Recorder, MemoryReactorClock, DatagramProbe]:
    run, recorder, reactor = start("udp", **kwargs)
    return run, recorder, reactor, run.channel.protocol


def retained_per_probe(reactor, step: float, probes: int, answer=None) -> float:
    """The memory the run keeps a probe, traced over C{probes} more probes (each answered by C{answer})."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(probes):
            reactor.advance(step)
            if answer is not None:
                answer()
        return (tracemalloc.get_traced_memory()[0] - before) / probes
    finally:
        tracemalloc.stop()
