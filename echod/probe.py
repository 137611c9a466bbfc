"""
`echod probe`: the client end. Sends probes to an echo server (echod or any
RFC 862 server) and checks every byte that comes back, as ping(8) does with
ICMP echo.

Everything runs on the reactor: one client protocol for the persistent TCP
connection (--tcp), one per probe's connection (--connect, --bytecount), one
datagram protocol (--udp); probes and their timeouts are reactor timers, so
that no thread stands between a reply and its timestamp.

A probe's payload is its sequence number (8 bytes, big-endian) and bytes from
SHAKE-128 keyed with a random key of the run: unique to the probe, random to
the network, and remade from the number alone when a late answer must be
checked after the payload itself was let go.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol as TypingProtocol

from twisted.internet import defer, error, udp
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from echod.probeoptions import ProbeOptions, check_size
from echod.probestats import Tally, Verdict

SEQ_BYTES = 8
#: Over one persistent connection, at most this much (or four probes' worth, if more) may be sent
#: without its echo: a server that stops reading must not make the probe hold all it ever sent.
MAX_UNECHOED = 64 << 20
#: Datagrams up to the largest IPv6 payload; Twisted's default (8192) would cut them silently.
MAX_DATAGRAM = 65536


def make_payload(key: bytes, seq: int, size: int) -> bytes:
    """The C{size} bytes of probe C{seq}: its number, then SHAKE-128 of the run's C{key} and the number."""
    head = seq.to_bytes(SEQ_BYTES, "big")
    if size <= SEQ_BYTES:
        return head[SEQ_BYTES - size :]
    return head + hashlib.shake_128(key + head).digest(size - SEQ_BYTES)


@dataclass
class Mismatch:
    """How the bytes that came back for one probe differ from those sent."""

    count: int = 0
    first: int = -1
    got: int = 0
    wanted: int = 0
    missing: int = 0
    extra: int = 0

    def compare(self, sent: bytes, offset: int, got: bytes) -> None:
        """Compare C{got} with C{sent} from C{offset} on; C{got} must fit within C{sent}."""
        if sent.startswith(got, offset):
            return
        for index, (want, have) in enumerate(zip(sent[offset : offset + len(got)], got, strict=True)):
            if want != have:
                if self.first < 0:
                    self.first, self.got, self.wanted = offset + index, have, want
                self.count += 1

    def __bool__(self) -> bool:
        return bool(self.count or self.missing or self.extra)

    def describe(self, size: int) -> str:
        parts = []
        if self.count:
            parts.append(
                f"{self.count} of {size} bytes differ, the first at offset {self.first} "
                f"(0x{self.got:02x} for 0x{self.wanted:02x})"
            )
        if self.missing:
            parts.append(f"{self.missing} bytes short")
        if self.extra:
            parts.append(f"{self.extra} bytes more than sent")
        return ", ".join(parts)


def compare_whole(sent: bytes, got: bytes) -> Mismatch:
    """The mismatch between a whole answer and its probe (a datagram's)."""
    mismatch = Mismatch()
    common = min(len(sent), len(got))
    mismatch.compare(sent, 0, got[:common])
    mismatch.missing = max(0, len(sent) - len(got))
    mismatch.extra = max(0, len(got) - len(sent))
    return mismatch


@dataclass(eq=False)
class Probe:
    """One probe sent: its payload while it may still be compared, its times, its state."""

    seq: int
    payload: bytes | None
    size: int
    #: timer() when the probe began: its connection attempt, or its send.
    started: float
    sent_at: float | None = None
    connect: float | None = None
    timeout: object | None = None  # the IDelayedCall of its timeout
    timed_out: bool = False
    decided: bool = False
    #: Per-probe channel state (its connection, for --connect).
    channel_state: object | None = field(default=None, repr=False)


class Reporter(TypingProtocol):
    """What L{Run} tells as it goes (see L{echod.probeoutput})."""

    def started(self, address: str) -> None: ...
    def answered(self, seq: int, verdict: Verdict, **details) -> None: ...
    def timed_out(self, seq: int, detail: str = "") -> None: ...
    def duplicate(self, seq: int, size: int, rtt: float | None) -> None: ...
    def unexpected(self, size: int, detail: str) -> None: ...
    def finished(self, tally: Tally, elapsed: float, error: str | None) -> int: ...


def send_at_once(transport, data: bytes) -> None:
    """
    Write C{data}, sending it in this turn of the loop if nothing is queued
    before it. Twisted's write() always queues until the next turn; the time
    between the probe's timestamp and its send would count in every round
    trip (see README, "Benchmark", for what it measured). Whatever the kernel
    does not take, or an error, goes Twisted's usual way.
    """
    direct = (
        hasattr(transport, "writeSomeData")
        and not getattr(transport, "dataBuffer", b"")
        and not getattr(transport, "_tempDataLen", 1)
        and not transport.disconnecting
    )
    if direct:
        sent = transport.writeSomeData(data)
        if sent == len(data):
            return
        if isinstance(sent, int) and sent > 0:
            data = data[sent:]
    transport.write(data)


def describe_failure(reason: Failure, what: str = "connection") -> str:
    """A connection's end or failure in a few words."""
    if reason.check(error.ConnectionRefusedError):
        return "connection refused"
    if reason.check(error.ConnectionLost):
        # What Twisted reports for ECONNRESET (and EPIPE): not a clean end of file.
        return f"{what} reset by the server"
    if reason.check(error.TimeoutError, error.TCPTimedOutError):
        return "connection timed out"
    text = reason.getErrorMessage().rstrip(".")
    return f"{what} failed: {text}"


class Run:
    """
    One probe run: sends a probe every interval until the count, the deadline
    or an interruption, decides each probe, and reports.

    @ivar done: fires with the exit status when the run is over.
    """

    def __init__(
        self,
        options: ProbeOptions,
        address: str,
        reporter: Reporter,
        reactor,
        timer: Callable[[], float] = time.monotonic,
        key: bytes | None = None,
        received: Callable[[], float] | None = None,
    ) -> None:
        self.options = options
        self.address = address
        self.reporter = reporter
        self.reactor = reactor
        #: The time of sends (and of a run's course); L{received} that of answers (see L{ReceiveClock}).
        self.timer = timer
        self.received = received or timer
        self.key = os.urandom(16) if key is None else key
        self.tally = Tally()
        self.pending: dict[int, Probe] = {}
        self.next_seq = 1
        self.all_sent = False
        self.error: str | None = None
        self.done: defer.Deferred = defer.Deferred()
        self.finished = False
        self.began: float | None = None
        self._schedule_origin = 0.0
        self._scheduled = 0
        self._tick = None
        self._deadline = None
        self.channel = channel_for(options.mode)(self)

    # -- the run's course ---------------------------------------------------

    def start(self) -> defer.Deferred:
        """Report, open the channel, then probe; returns L{done}."""
        self.reporter.started(self.address)
        if self.options.deadline is not None:
            self._deadline = self.reactor.callLater(self.options.deadline, self._deadline_reached)
        self.channel.open()
        return self.done

    def ready(self) -> None:
        """The channel can carry probes: begin."""
        if self.finished:
            return
        self.began = self.timer()
        self._schedule_origin = self.reactor.seconds()
        self._send_next()

    def _send_next(self) -> None:
        self._tick = None
        if self.finished:
            return
        seq = self.next_seq
        self.next_seq += 1
        size = self.options.size
        probe = Probe(seq, make_payload(self.key, seq, size), size, self.timer())
        self.pending[seq] = probe
        self.tally.sent += 1
        probe.timeout = self.reactor.callLater(self.options.timeout, self._expire, probe)
        # Everything else before the send: what follows it until the reactor waits again is
        # counted in the round trip whenever the answer is back sooner.
        last = self.options.count is not None and seq >= self.options.count
        if last:
            self.all_sent = True
        else:
            self._schedule()
        self.channel.send(probe)
        if last:
            self._maybe_finish()

    def _schedule(self) -> None:
        # On a fixed grid from the first probe, so that the time spent sending does not stretch the
        # interval; a run that fell more than an interval behind (a stalled machine) restarts the grid
        # from now rather than sending the missed probes in a burst.
        interval = self.options.interval
        self._scheduled += 1
        now = self.reactor.seconds()
        due = self._schedule_origin + self._scheduled * interval
        if due < now - interval:
            self._schedule_origin, self._scheduled = now, 1
            due = now + interval
        self._tick = self.reactor.callLater(max(0.0, due - now), self._send_next)

    def _deadline_reached(self) -> None:
        self._deadline = None
        self.stop()

    def stop(self) -> None:
        """The deadline, or an interruption: end now, with the probes still awaited left undecided."""
        self._finish()

    def fatal(self, message: str) -> None:
        """The run cannot go on (the connection failed or closed): every probe awaited fails."""
        if self.finished:
            return
        self.error = message
        for probe in list(self.pending.values()):
            self._decide(probe, Verdict.FAILED, report=False)
        self._finish()

    def _maybe_finish(self) -> None:
        if self.all_sent and not self.pending and not self.finished:
            self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        for call in (self._tick, self._deadline):
            if call is not None and call.active():
                call.cancel()
        for probe in self.pending.values():
            if probe.timeout is not None and probe.timeout.active():
                probe.timeout.cancel()
        self.channel.close()
        elapsed = self.timer() - self.began if self.began is not None else 0.0
        status = self.reporter.finished(self.tally, elapsed, self.error)
        self.done.callback(status)

    # -- verdicts, told by the channels -------------------------------------

    def _decide(self, probe: Probe, verdict: Verdict, report: bool = True, **details) -> None:
        probe.decided = True
        self.pending.pop(probe.seq, None)
        if probe.timeout is not None and probe.timeout.active():
            probe.timeout.cancel()
        probe.timeout = None
        self.tally.decide(verdict)
        if report:
            self.reporter.answered(probe.seq, verdict, **details)

    def connected(self, probe: Probe, now: float) -> None:
        """A probe's own connection is established (--connect, --bytecount)."""
        probe.connect = (now if now >= probe.started else self.timer()) - probe.started
        self.tally.connect.add(probe.connect)

    def answer(
        self, probe: Probe, now: float, mismatch: Mismatch | None = None, reordered: bool = False
    ) -> None:
        """The whole answer to C{probe} came back at C{now}; C{mismatch} if its bytes differ."""
        if self.finished:
            return
        if probe.sent_at is not None and now < probe.sent_at:
            now = self.timer()  # stamped in a turn that began before the send (see ReceiveClock)
        rtt = now - probe.sent_at if probe.sent_at is not None else None
        corrupt = bool(mismatch)
        detail = mismatch.describe(probe.size) if corrupt else ""
        connect = probe.connect if self.options.new_connections else None
        if probe.timed_out:
            # Counted lost at its timeout; now it is known to be late (or corrupted after all).
            if corrupt:
                self.tally.lost_turned_corrupted()
            else:
                self.tally.lost_turned_late()
            verdict = Verdict.CORRUPTED if corrupt else Verdict.LATE
            self.reporter.answered(probe.seq, verdict, rtt=rtt, connect=connect, detail=detail)
            probe.decided = True
            return
        if corrupt:
            self._decide(probe, Verdict.CORRUPTED, rtt=rtt, connect=connect, detail=detail)
        else:
            if reordered:
                self.tally.reordered += 1
            self.tally.rtt.add(rtt)
            self._decide(probe, Verdict.OK, rtt=rtt, connect=connect, reordered=reordered)
        self._maybe_finish()

    def failed(self, probe: Probe, detail: str) -> None:
        """C{probe}'s own connection failed (refused, reset, closed short)."""
        if self.finished or probe.decided or probe.timed_out:
            return
        self._decide(probe, Verdict.FAILED, detail=detail)
        self._maybe_finish()

    def duplicate(self, seq: int, size: int, rtt: float | None) -> None:
        if self.finished:
            return
        self.tally.duplicates += 1
        self.reporter.duplicate(seq, size, rtt)

    def unexpected(self, size: int, detail: str) -> None:
        if self.finished:
            return
        self.tally.unexpected += 1
        self.reporter.unexpected(size, detail)

    def _expire(self, probe: Probe) -> None:
        probe.timeout = None
        if probe.decided or self.finished:
            return
        probe.timed_out = True
        self.pending.pop(probe.seq, None)
        self.tally.decide(Verdict.LOST)
        self.reporter.timed_out(probe.seq, self.channel.expired(probe))
        self._maybe_finish()


# -- the channels: how probes travel ---------------------------------------------------------


@implementer(IHalfCloseableProtocol)
class StreamProbe(Protocol):
    """
    --tcp: every probe on one connection. The echo is one ordered stream, so
    each byte that comes back is compared with the byte at the same position
    of what was sent: a corrupted byte is told from a late answer, which
    arrives in its place, only later.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.queue: deque[Probe] = deque()
        self.offset = 0  # into queue[0].payload
        self.mismatch = Mismatch()
        self.unechoed = 0
        self.closing = False

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.run.ready()

    def send(self, probe: Probe) -> None:
        limit = max(MAX_UNECHOED, 4 * probe.size)
        if self.unechoed + probe.size > limit:
            self.run.fatal(
                f"{self.unechoed} bytes sent without their echo: the server is not reading; giving up"
            )
            return
        self.queue.append(probe)
        self.unechoed += probe.size
        probe.sent_at = self.run.timer()
        send_at_once(self.transport, probe.payload)

    def dataReceived(self, data: bytes) -> None:
        now = self.run.received()
        position, end = 0, len(data)
        view = memoryview(data)
        while position < end:
            if not self.queue:
                self.run.unexpected(end - position, f"{end - position} bytes after every probe's echo")
                return
            probe = self.queue[0]
            take = min(probe.size - self.offset, end - position)
            self.mismatch.compare(probe.payload, self.offset, view[position : position + take])
            self.offset += take
            position += take
            if self.offset == probe.size:
                self.queue.popleft()
                self.unechoed -= probe.size
                mismatch, self.mismatch, self.offset = self.mismatch, Mismatch(), 0
                probe.payload = None
                self.run.answer(probe, now, mismatch)

    def expired(self, probe: Probe) -> str:
        if self.queue and self.queue[0] is probe and self.offset:
            return f"{self.offset} of {probe.size} bytes so far"
        return ""

    def _partial(self) -> str:
        if self.queue and self.offset:
            return f" with {self.offset} of {self.queue[0].size} bytes of seq={self.queue[0].seq} echoed"
        return ""

    def readConnectionLost(self) -> None:
        if not self.closing:
            self.run.fatal(f"the server closed the connection{self._partial()}")
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:
        if not self.closing and not self.run.finished:
            if reason is not None and not reason.check(error.ConnectionDone):
                self.run.fatal(describe_failure(reason) + self._partial())
            else:
                self.run.fatal(f"the server closed the connection{self._partial()}")


class _StreamFactory(ClientFactory):
    noisy = False
    #: Until the connection succeeds or fails (Twisted refuses to stop connecting after that).
    connecting = True

    def __init__(self, channel: StreamChannel) -> None:
        self.channel = channel

    def buildProtocol(self, addr) -> StreamProbe:
        self.connecting = False
        self.channel.protocol = StreamProbe(self.channel.run)
        return self.channel.protocol

    def clientConnectionFailed(self, connector, reason: Failure) -> None:
        self.connecting = False
        self.channel.run.fatal(describe_failure(reason))


class StreamChannel:
    """--tcp: connect once, within the probe timeout, then hand every probe to L{StreamProbe}."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.protocol: StreamProbe | None = None
        self.connector = None
        self.factory = _StreamFactory(self)

    def open(self) -> None:
        options = self.run.options
        self.connector = self.run.reactor.connectTCP(
            self.run.address, options.port, self.factory, timeout=options.timeout
        )

    def send(self, probe: Probe) -> None:
        self.protocol.send(probe)

    def expired(self, probe: Probe) -> str:
        return self.protocol.expired(probe) if self.protocol else ""

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.closing = True
            self.protocol.transport.loseConnection()
        elif self.factory.connecting and self.connector is not None:
            self.connector.stopConnecting()


@implementer(IHalfCloseableProtocol)
class ConnectionProbe(Protocol):
    """
    --connect and --bytecount: one probe on a connection of its own. Echo:
    send, half-close, read to end of file. Bytecount: send C{"SIZE "} and the
    payload, read to the server's end of file. Either way the answer is whole
    at end of file: every byte, and not one more.
    """

    def __init__(self, run: Run, probe: Probe, bytecount: bool) -> None:
        self.run = run
        self.probe = probe
        self.bytecount = bytecount
        self.offset = 0
        self.last_byte_at: float | None = None
        self.mismatch = Mismatch()
        self.settled = False

    def connectionMade(self) -> None:
        now = self.run.received()
        self.run.connected(self.probe, now)
        self.transport.setTcpNoDelay(True)
        payload = self.probe.payload
        data = b"%d %s" % (len(payload), payload) if self.bytecount else payload
        self.probe.sent_at = self.run.timer()
        send_at_once(self.transport, data)
        if not self.bytecount:
            self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        now = self.run.received()
        size = self.probe.size
        fits = min(len(data), size - self.offset)
        if fits:
            self.mismatch.compare(self.probe.payload, self.offset, memoryview(data)[:fits])
            self.offset += fits
            if self.offset == size:
                self.last_byte_at = now
        self.mismatch.extra += len(data) - fits

    def _settle(self, reset: Failure | None) -> None:
        if self.settled:
            return
        self.settled = True
        size = self.probe.size
        if reset is not None and self.offset < size:
            self.run.failed(self.probe, describe_failure(reset) + f" after {self.offset} of {size} bytes")
        elif self.offset < size:
            self.run.failed(
                self.probe, f"the server closed the connection after {self.offset} of {size} bytes"
            )
        else:
            self.run.answer(self.probe, self.last_byte_at, self.mismatch)

    def readConnectionLost(self) -> None:
        self._settle(None)
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:
        clean = reason is None or reason.check(error.ConnectionDone)
        self._settle(None if clean else reason)


class _ConnectionFactory(ClientFactory):
    noisy = False
    connecting = True

    def __init__(self, run: Run, probe: Probe, bytecount: bool) -> None:
        self.run, self.probe, self.bytecount = run, probe, bytecount
        self.connector = None

    def buildProtocol(self, addr) -> ConnectionProbe:
        self.connecting = False
        protocol = ConnectionProbe(self.run, self.probe, self.bytecount)
        self.probe.channel_state = protocol
        return protocol

    def clientConnectionFailed(self, connector, reason: Failure) -> None:
        self.connecting = False
        self.run.failed(self.probe, describe_failure(reason))

    def abandon(self) -> None:
        """Give up the connection or the attempt."""
        protocol = self.probe.channel_state
        if isinstance(protocol, ConnectionProbe) and protocol.transport is not None:
            protocol.settled = True
            protocol.transport.abortConnection()
        elif self.connecting and self.connector is not None:
            self.connecting = False
            self.connector.stopConnecting()


class ConnectionChannel:
    """--connect and --bytecount: a connection a probe."""

    bytecount = False

    def __init__(self, run: Run) -> None:
        self.run = run
        #: The factories of the probes still awaited, by sequence number.
        self.factories: dict[int, _ConnectionFactory] = {}

    def open(self) -> None:
        self.run.ready()

    def send(self, probe: Probe) -> None:
        run = self.run
        factory = _ConnectionFactory(run, probe, self.bytecount)
        self.factories[probe.seq] = factory
        # The probe's own timer ends the attempt; Twisted's connect timeout only backs it up.
        timeout = run.options.timeout + 1
        factory.connector = run.reactor.connectTCP(run.address, run.options.port, factory, timeout=timeout)
        for seq in [seq for seq in self.factories if seq not in run.pending]:
            del self.factories[seq]

    def expired(self, probe: Probe) -> str:
        """No whole answer in time: abandon the connection (a late echo cannot come on it any more)."""
        factory = self.factories.pop(probe.seq, None)
        protocol = probe.channel_state
        if factory is not None:
            factory.abandon()
        if isinstance(protocol, ConnectionProbe):
            return (
                f"{protocol.offset} of {probe.size} bytes so far" if protocol.offset else "connected, no echo"
            )
        return "not connected"

    def close(self) -> None:
        for seq, factory in self.factories.items():
            if seq in self.run.pending:
                factory.abandon()
        self.factories.clear()


class BytecountChannel(ConnectionChannel):
    bytecount = True


# States of a datagram probe, by sequence number (see DatagramProbe.states).
_IN_FLIGHT, _ANSWERED, _TIMED_OUT, _FAILED = 0, 1, 2, 3


class DatagramProbe(DatagramProtocol):
    """
    --udp: a datagram a probe on one connected socket. Answers are matched by
    the sequence number they carry, so that each one is told apart: in time
    and intact, late, a duplicate, out of order, or corrupted; a datagram that
    never comes back is lost.

    Each probe's send time and state stay known for the whole run, in two
    compact arrays (9 bytes a probe), so that an answer or a duplicate that
    arrives however late is still counted as what it is.
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.sent_at = array("d", [0.0])  # by seq; seq 0 is never sent
        self.states = bytearray(1)
        self.highest_answered = 0

    def startProtocol(self) -> None:
        self.transport.connect(self.run.address, self.run.options.port)

    def send(self, probe: Probe) -> None:
        assert probe.seq == len(self.states), "probes are sent in order"
        self.sent_at.append(0.0)
        self.states.append(_IN_FLIGHT)
        probe.sent_at = self.sent_at[probe.seq] = self.run.timer()
        try:
            self.transport.write(probe.payload)
        except (OSError, error.MessageLengthError) as e:
            # As ping does on a failed send (a full buffer, a local firewall's EPERM): this probe
            # failed, the run goes on.
            self.states[probe.seq] = _FAILED
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self.run.failed(probe, f"not sent: {reason}")

    def datagramReceived(self, data: bytes, addr) -> None:
        now = self.run.received()
        run = self.run
        seq = int.from_bytes(data[:SEQ_BYTES], "big") if len(data) >= SEQ_BYTES else 0
        if not 0 < seq < len(self.states):
            run.unexpected(len(data), "no sequence number of this run")
            return
        state = self.states[seq]
        probe = run.pending.get(seq)
        if state == _ANSWERED or state == _FAILED:
            run.duplicate(seq, len(data), now - self.sent_at[seq])
            return
        expected = probe.payload if probe is not None else make_payload(run.key, seq, run.options.size)
        mismatch = compare_whole(expected, data)
        if probe is None:  # timed out already: late, or corrupted
            probe = Probe(seq, None, run.options.size, self.sent_at[seq], sent_at=self.sent_at[seq])
            probe.timed_out = True
        self.states[seq] = _ANSWERED
        reordered = not probe.timed_out and not mismatch and seq < self.highest_answered
        if not probe.timed_out and not mismatch:
            self.highest_answered = max(self.highest_answered, seq)
        probe.payload = None
        run.answer(probe, now, mismatch, reordered)

    def connectionRefused(self) -> None:
        self.socketError(errno.ECONNREFUSED)

    def socketError(self, code: int) -> None:
        """
        An ICMP error about an earlier datagram (see L{_ConnectedDatagramPort}): it
        names no datagram, so it fails the latest probe still awaited.
        """
        run = self.run
        if run.pending:
            probe = run.pending[max(run.pending)]
            self.states[probe.seq] = _FAILED
            reason = "port unreachable" if code == errno.ECONNREFUSED else os.strerror(code).lower()
            run.failed(probe, reason)

    def expired(self, probe: Probe) -> str:
        self.states[probe.seq] = _TIMED_OUT
        probe.payload = None
        return ""


class _ConnectedDatagramPort(udp.Port):
    """
    Twisted's UDP port, on which an ICMP error about an earlier datagram
    (port or host unreachable) fails a probe instead of closing the port.

    The kernel queues such an error on a connected UDP socket; epoll then
    reports the socket with EPOLLERR alone, which Twisted's reactor (22.4 to
    26.10) takes for the end of the descriptor, and recvfrom() raises it,
    which Twisted passes on (and closes the port) for every error but
    ECONNREFUSED. Neither ends anything: reading SO_ERROR takes the error, the
    protocol hears of it, and reading goes on.
    """

    def readConnectionLost(self, reason: Failure) -> None:
        code = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if not code:
            super().readConnectionLost(reason)
            return
        self.startReading()
        self.protocol.socketError(code)

    def doRead(self) -> None:
        try:
            return super().doRead()
        except OSError as e:
            self.protocol.socketError(e.errno)
            return None


class DatagramChannel:
    """--udp: one socket, connected to the server (so that the kernel drops datagrams from anyone else)."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.protocol = DatagramProbe(run)
        self.port = None

    def open(self) -> None:
        interface = "::" if ":" in self.run.address else "0.0.0.0"
        try:
            self.port = _ConnectedDatagramPort(0, self.protocol, interface, MAX_DATAGRAM, self.run.reactor)
            self.port.startListening()
        except error.CannotListenError as e:
            self.run.fatal(f"cannot open a UDP socket: {e.socketError}")
            return
        self.run.ready()

    def send(self, probe: Probe) -> None:
        self.protocol.send(probe)

    def expired(self, probe: Probe) -> str:
        return self.protocol.expired(probe)

    def close(self) -> None:
        if self.port is not None:
            self.port.stopListening()


def channel_for(mode: str) -> type:
    return {
        "tcp": StreamChannel,
        "connect": ConnectionChannel,
        "bytecount": BytecountChannel,
        "udp": DatagramChannel,
    }[mode]


class ResolveError(Exception):
    """The target's name has no address (of the family asked for)."""


def resolve(options: ProbeOptions) -> tuple[int, str]:
    """
    The family and the address to probe: the first that getaddrinfo() gives
    for the host (an address is its own), in the order the system prefers
    (gai.conf). Resolved once, before the run, and without the reactor: the
    run cannot start before it is known, so there is nothing to do meanwhile.

    @raise ResolveError: if the name does not resolve, or not to the family asked for.
    """
    kind = socket.SOCK_DGRAM if options.mode == "udp" else socket.SOCK_STREAM
    try:
        found = socket.getaddrinfo(options.host, options.port, options.family or socket.AF_UNSPEC, kind)
    except (socket.gaierror, UnicodeError) as e:
        reason = e.strerror if isinstance(e, socket.gaierror) else str(e)
        raise ResolveError(f"cannot resolve {options.host}: {reason}") from None
    for family, _, _, _, sockaddr in found:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = sockaddr[0]
            if family == socket.AF_INET6 and sockaddr[3]:
                address = f"{address.split('%')[0]}%{sockaddr[3]}"
            return family, address
    raise ResolveError(f"cannot resolve {options.host}: no IPv4 or IPv6 address")


class ReceiveClock:
    """
    The time at which the reactor last came back from waiting for events:
    the time an answer is stamped with.

    In Python the path from the kernel's wake-up to a protocol's
    dataReceived is long, and longest after an idle interval, when the
    interpreter's working set has left the CPU caches: measured here, 17 µs
    at one probe a millisecond, 45 to 50 µs at one every 10 ms, all of it
    counted in every round trip. Stamped when epoll returns, an answer's time
    is when the process learned of it, as a C client's is when its recv()
    returns; the cost is that bytes arriving while that turn is processed
    and read in it count as having come at its start. Twisted has no hook
    there, so the reactor's poller is wrapped; a reactor without one (or a
    test's clock) stamps answers when they are handled.
    """

    def __init__(self, reactor, timer: Callable[[], float] = time.monotonic) -> None:
        self.timer = timer
        self.last = timer()
        poller = getattr(reactor, "_poller", None)
        if poller is not None and callable(getattr(poller, "poll", None)):
            reactor._poller = _StampingPoller(poller, self)
        else:
            self.now = timer

    def now(self) -> float:
        return self.last


class _StampingPoller:
    """An epoll object that notes the time each wait returns; everything else is the epoll's own."""

    def __init__(self, poller, clock: ReceiveClock) -> None:
        self._poller = poller
        self._clock = clock

    def poll(self, *args, **kwargs):
        events = self._poller.poll(*args, **kwargs)
        self._clock.last = self._clock.timer()
        return events

    def __getattr__(self, name: str):
        return getattr(self._poller, name)


def run(options: ProbeOptions, reporter: Reporter) -> int:
    """
    Resolve the target, probe it on the global reactor until the run ends,
    and return the exit status the reporter gives.

    SIGINT and SIGTERM end the run as its deadline does, with the summary
    (ping's Ctrl-C), instead of killing the process.
    """
    import signal

    from twisted.internet import reactor

    try:
        family, address = resolve(options)
        check_size(options.mode, options.size, family)
    except (ResolveError, ValueError) as e:
        return reporter.finished(Tally(), 0.0, str(e))
    probe_run = Run(options, address, reporter, reactor, received=ReceiveClock(reactor).now)

    def interrupted(signum, frame) -> None:
        reactor.callFromThread(probe_run.stop)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupted)
    status: list[int] = []

    def begin() -> None:
        done = probe_run.start()
        done.addCallback(status.append)
        done.addErrback(lambda failure: (failure.printTraceback(), status.append(3)))
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(begin)
    reactor.run(installSignalHandlers=False)
    return status[0] if status else 3
