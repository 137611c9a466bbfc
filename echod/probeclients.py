"""
How `echod probe`'s probes travel: the client protocols on the reactor.

One protocol for the persistent TCP connection (--tcp), one per probe's
connection (--connect, --bytecount), one datagram protocol (--udp), each
behind a channel with the same face for the run (L{echod.probe.Run}): open,
send a probe, a probe expired, close. Each compares every byte that comes
back with what was sent and tells the run what became of the probe.
"""

from __future__ import annotations

import errno
import os
import socket
from array import array
from collections import deque
from typing import TYPE_CHECKING

from twisted.internet import error, udp
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from echod.probepayload import SEQ_BYTES, Mismatch, Probe, compare_whole, make_payload

if TYPE_CHECKING:
    from echod.probe import Run

#: Over one persistent connection, at most this much (or four probes' worth, if more) may be sent
#: without its echo: a server that stops reading must not make the probe hold all it ever sent.
MAX_UNECHOED = 64 << 20
#: Datagrams up to the largest IPv6 payload; Twisted's default (8192) would cut them silently.
MAX_DATAGRAM = 65536


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
                self.run.stray(end - position, "after every probe's echo")
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
