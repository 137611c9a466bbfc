"""
How `echod probe`'s probes travel over TCP, and which channel a mode takes.

One protocol for the persistent TCP connection (--tcp), one per probe's
connection (--connect, --bytecount), and the datagram one (--udp,
L{echod.probe.datagram}), each behind a channel with the same face for the
run (L{echod.probe.interfaces}): open, send a probe, a probe expired, close.
Each compares every byte that comes back with what was sent and tells the
run what became of the probe.
"""

from __future__ import annotations

import functools
import os
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet import error
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from echod._twisted import connect_tcp, send_at_once, sends_at_once
from echod.probe.datagram import DatagramChannel
from echod.probe.interfaces import late_probe, probes_in
from echod.probe.packets import PacketOptions
from echod.probe.payload import Mismatch, Probe
from echod.probe.sockets import prepare

if TYPE_CHECKING:
    from echod.probe.interfaces import RunView

#: Over one persistent connection, at most this much (or four probes' worth, if more) may be sent
#: without its echo: a server that stops reading must not make the probe hold all it ever sent.
MAX_UNECHOED = 64 << 20
#: And at most this many probes (or those of two timeouts, if more): each keeps its send time
#: until its echo, however late, so that a server that reads and never echoes is given up on
#: instead of growing the probe for ever.
MAX_UNECHOED_PROBES = 1 << 16
#: What a refused connection is told as (the run adds a hint when the port was the default).
REFUSED = "connection refused"


def describe_failure(reason: Failure, what: str = "connection") -> str:
    """A connection's end or failure in a few words."""
    if reason.check(error.ConnectionRefusedError):
        return REFUSED
    if reason.check(error.ConnectionLost):
        # What Twisted reports for ECONNRESET (and EPIPE): not a clean end of file.
        return f"{what} reset by the server"
    if reason.check(error.TimeoutError, error.TCPTimedOutError):
        return "connection timed out"
    if reason.check(error.ConnectBindError):
        text = reason.value.args[0] or os.strerror(reason.value.osError)
        # The socket could not be set up as the options ask: echod.probe.sockets begins with the option.
        return text if text.startswith("-") else f"{what} failed: {text}"
    failed = reason.value
    if isinstance(failed, error.ConnectError) and isinstance(failed.osError, int) and failed.osError:
        # The connect()'s errno, as the kernel gave it (EHOSTUNREACH for an ICMP error to the SYN).
        return f"{what} failed: {os.strerror(failed.osError)}"
    text = reason.getErrorMessage().rstrip(".")
    return f"{what} failed: {text}"


def preparing(run: RunView) -> Callable[[socket.socket], None] | None:
    """What sets each new socket of C{run}'s connections as its options ask, or None if they ask nothing."""
    packets = run.options.packets
    return None if packets == PacketOptions() else functools.partial(prepare, packets=packets)


@implementer(IHalfCloseableProtocol, IPushProducer)
class StreamProbe(Protocol):
    """
    --tcp: every probe on one connection. The echo is one ordered stream, so
    each byte that comes back is compared with the byte at the same position
    of what was sent: a corrupted byte is told from a late answer, which
    arrives in its place, only later.

    The probes awaiting their echo are consecutive sequence numbers from
    L{head}; of each only its send time is kept here (a lost one's payload is
    made again from its number when its echo comes), and their number is
    bounded. The protocol is the transport's producer only to learn whether
    the kernel takes what is sent: whether the server reads.
    """

    def __init__(self, run: RunView) -> None:
        self.run = run
        #: The sequence number of the first probe not wholly echoed, and the send times of it
        #: and of every later one sent.
        self.head = 1
        self.sent_times: deque[float] = deque()
        self.offset = 0  # into the head's payload
        self._payload: bytes | None = None  # the head's, while its echo comes in
        self.mismatch = Mismatch()
        self.closing = False
        #: Whether the transport holds more than the kernel would take (Twisted paused us).
        self.paused = False
        #: Whether the transport is one of Twisted's own, to which a probe is sent at once.
        self._direct = False

    def connectionMade(self) -> None:
        self.run.connected(None, self.run.received())
        self.transport.setTcpNoDelay(True)
        self.transport.registerProducer(self, True)
        self._direct = sends_at_once(self.transport)
        self.run.ready()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass

    def send(self, probe: Probe) -> None:
        size = probe.size
        awaited = len(self.sent_times)
        if (awaited + 1) * size > max(MAX_UNECHOED, 4 * size) or awaited + 1 > max(
            MAX_UNECHOED_PROBES, probes_in(self.run, 2)
        ):
            self._give_up(awaited, size)
            return
        if not awaited:
            self.head = probe.seq
        probe.sent_at = self.run.timer()
        self.sent_times.append(probe.sent_at)
        send_at_once(self.transport, probe.payload, self._direct)

    def _give_up(self, awaited: int, size: int) -> None:
        # Twisted pauses its producer when the kernel would take no more: the server's receive
        # window is closed. Else the kernel took every byte, and the server read them.
        if self.paused:
            why = "the server is not reading them, or not as fast as they are sent"
        else:
            why = "the server reads them but does not echo"
        self.run.fatal(f"{awaited} probes ({awaited * size} bytes) sent without their echo: {why}; giving up")

    def _head_payload(self) -> bytes:
        if self._payload is None:
            self._payload = self.run.expected(self.head)
        return self._payload

    def dataReceived(self, data: bytes) -> None:
        now = self.run.received()
        position, end = 0, len(data)
        view = memoryview(data)
        size = self.run.options.size
        while position < end:
            if not self.sent_times:
                self.run.stray(end - position, "after every probe's echo")
                return
            take = min(size - self.offset, end - position)
            self.mismatch.compare(self._head_payload(), self.offset, view[position : position + take])
            self.offset += take
            position += take
            if self.offset == size:
                self._echoed(now)

    def _echoed(self, now: float) -> None:
        """The head's whole echo is in: decide it, and the next probe is the head."""
        seq, sent_at = self.head, self.sent_times.popleft()
        self.head += 1
        mismatch, self.mismatch, self.offset, self._payload = self.mismatch, Mismatch(), 0, None
        probe = self.run.awaited(seq) or late_probe(self.run, seq, sent_at)
        probe.payload = None
        self.run.answer(probe, now, mismatch)

    def expired(self, probe: Probe) -> str:
        if self.sent_times and self.head == probe.seq and self.offset:
            return f"{self.offset} of {probe.size} bytes so far"
        return ""

    def _partial(self) -> str:
        if self.sent_times and self.offset:
            return f" with {self.offset} of {self.run.options.size} bytes of seq={self.head} echoed"
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
        # Twisted's own timeout is the probe's -W: told as the time waited.
        self.channel.run.unreachable(None if reason.check(error.TimeoutError) else describe_failure(reason))


class StreamChannel:
    """--tcp: connect once, within the probe timeout, then hand every probe to L{StreamProbe}."""

    def __init__(self, run: RunView) -> None:
        self.run = run
        self.protocol: StreamProbe | None = None
        self.connector = None
        self.factory = _StreamFactory(self)

    def open(self) -> None:
        run = self.run
        self.connector = connect_tcp(
            run.reactor, run.address, run.options.port, self.factory, run.options.timeout, preparing(run)
        )

    def send(self, probe: Probe) -> None:
        self.protocol.send(probe)

    def expired(self, probe: Probe) -> str:
        return self.protocol.expired(probe) if self.protocol else ""

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.closing = True
            # A paused producer would keep Twisted from closing once its buffer drains.
            self.protocol.transport.unregisterProducer()
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

    def __init__(self, run: RunView, probe: Probe, bytecount: bool) -> None:
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
        send_at_once(self.transport, data, sends_at_once(self.transport))
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

    def __init__(self, run: RunView, probe: Probe, bytecount: bool) -> None:
        self.run, self.probe, self.bytecount = run, probe, bytecount
        self.connector = None

    def attempting(self) -> None:
        """The connection attempt starts now: the probe's connect time counts from here."""
        self.probe.started = self.run.timer()

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

    def __init__(self, run: RunView) -> None:
        self.run = run
        #: The factories of the probes still awaited, by sequence number.
        self.factories: dict[int, _ConnectionFactory] = {}
        self.prepare = preparing(run)

    def open(self) -> None:
        self.run.ready()

    def send(self, probe: Probe) -> None:
        run = self.run
        factory = _ConnectionFactory(run, probe, self.bytecount)
        self.factories[probe.seq] = factory
        # The probe's own timer ends the attempt; Twisted's connect timeout only backs it up.
        timeout = run.options.timeout + 1
        factory.connector = connect_tcp(
            run.reactor, run.address, run.options.port, factory, timeout, self.prepare
        )
        for seq in [seq for seq in self.factories if run.awaited(seq) is None]:
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
            if self.run.awaited(seq) is not None:
                factory.abandon()
        self.factories.clear()


class BytecountChannel(ConnectionChannel):
    bytecount = True


def channel_for(mode: str) -> type:
    return {
        "tcp": StreamChannel,
        "connect": ConnectionChannel,
        "bytecount": BytecountChannel,
        "udp": DatagramChannel,
    }[mode]
