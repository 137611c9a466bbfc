"""
How `echod probe --udp`'s probes travel: a datagram a probe, on one socket
connected to the server, each answer matched to its probe by the sequence
number it carries, and each ICMP error by the sequence number in the part
of the datagram it quotes; behind the channel face of
L{echod.probe.interfaces}.
"""

from __future__ import annotations

import errno
import os
import socket
from array import array
from typing import TYPE_CHECKING

from twisted.internet import error
from twisted.internet.protocol import DatagramProtocol

from echod._twisted import ConnectedDatagramPort
from echod.addresses import host_port
from echod.ancillary import SO_EE_ORIGIN_LOCAL, ControlMessage, queued_error
from echod.probe.icmp import describe
from echod.probe.interfaces import late_probe, probes_in
from echod.probe.payload import SEQ_BYTES, Probe, compare_whole
from echod.probe.sockets import datagram_socket, path_mtu
from echod.units import MAX_DATAGRAM

if TYPE_CHECKING:
    from echod.probe.interfaces import RunView

#: Over UDP the state of the last this many probes (or those of two timeouts, if more) is kept, to
#: tell a late answer or a duplicate; as ping(8)'s table of the last 65536 sequence numbers.
DATAGRAM_WINDOW = 1 << 16

# States of a datagram probe, by sequence number (see DatagramProbe.states).
_IN_FLIGHT, _ANSWERED, _TIMED_OUT, _FAILED = 0, 1, 2, 3


class DatagramProbe(DatagramProtocol):
    """
    --udp: a datagram a probe on one connected socket. Answers are matched by
    the sequence number they carry, so that each one is told apart: in time
    and intact, late, a duplicate, out of order, or corrupted; a datagram that
    never comes back is lost.

    The send time and state of the last L{window} probes are kept, in two
    compact rings (9 bytes a probe), so that an answer or a duplicate that
    arrives late is still counted as what it is; the window is at least two
    timeouts' probes, so every probe still awaited is in it. An answer to an
    older probe, whose verdict is long final, changes none: it counts as a
    duplicate (or, with bytes not its own, as matching no probe).
    """

    def __init__(self, run: RunView) -> None:
        self.run = run
        self.window = max(DATAGRAM_WINDOW, probes_in(run, 2))
        # By seq modulo the window; slot 0 (seq 0 is never sent) until the window wraps.
        self.sent_at = array("d", [0.0])
        self.states = bytearray(1)
        self.highest_sent = 0
        self.highest_answered = 0
        #: Why the socket could not be connected to the server (EINVAL, ENETUNREACH, ...), if so.
        self.unconnected: OSError | None = None

    def startProtocol(self) -> None:
        try:
            self.transport.connect(self.run.address, self.run.options.port)
        except OSError as e:
            # Told by the channel once the port is up: raised here, it would leave Twisted's
            # port half started, failing again as it is closed.
            self.unconnected = e

    def _slot(self, seq: int) -> int | None:
        """Where probe C{seq}'s state is, or None if it is not one of the last L{window} sent."""
        if max(0, self.highest_sent - self.window) < seq <= self.highest_sent:
            return seq % self.window
        return None

    def send(self, probe: Probe) -> None:
        assert probe.seq == self.highest_sent + 1, "probes are sent in order"
        self.highest_sent = probe.seq
        slot = probe.seq % self.window
        if slot == len(self.states):
            self.sent_at.append(0.0)
            self.states.append(_IN_FLIGHT)
        self.states[slot] = _IN_FLIGHT
        probe.sent_at = self.sent_at[slot] = self.run.timer()
        try:
            self.transport.write(probe.payload)
        except (OSError, error.MessageLengthError) as e:
            # As ping does on a failed send (a full buffer, a local firewall's EPERM, a datagram
            # larger than the path with -M do): this probe failed, the run goes on.
            self.states[slot] = _FAILED
            self.run.failed(probe, self._not_sent(e))

    def _not_sent(self, failure: Exception) -> str:
        if isinstance(failure, error.MessageLengthError) or getattr(failure, "errno", None) == errno.EMSGSIZE:
            # Too large for the path MTU the kernel knows, and not to be fragmented (-M do): the MTU
            # it learnt, from a router's "fragmentation needed" or the route's own.
            handle = getattr(self.transport, "getHandle", lambda: None)()
            mtu = path_mtu(handle) if handle is not None else None
            return "message too long" + (f": path MTU {mtu}" if mtu else "")
        reason = failure.strerror if isinstance(failure, OSError) and failure.strerror else str(failure)
        return f"not sent: {reason}"

    def datagramReceived(self, data: bytes, addr) -> None:
        now = self.run.received()
        run = self.run
        seq = int.from_bytes(data[:SEQ_BYTES], "big") if len(data) >= SEQ_BYTES else 0
        if not 0 < seq <= self.highest_sent:
            run.unexpected(len(data), "no sequence number of this run")
            return
        slot = self._slot(seq)
        if slot is not None and self.states[slot] in (_ANSWERED, _FAILED):
            run.duplicate(seq, len(data), now - self.sent_at[slot])
            return
        probe = run.awaited(seq)
        mismatch = compare_whole(run.expected(seq), data)
        if slot is None:
            # Older than the window: whatever became of its probe is final, and no longer known.
            if mismatch:
                run.unexpected(
                    len(data), f"seq={seq}, older than the last {self.window} probes, not its bytes"
                )
            else:
                run.duplicate(seq, len(data), None)
            return
        if probe is None:  # timed out already: late, or corrupted
            probe = late_probe(run, seq, self.sent_at[slot])
        self.states[slot] = _ANSWERED
        reordered = not probe.timed_out and not mismatch and seq < self.highest_answered
        if not probe.timed_out and not mismatch:
            self.highest_answered = max(self.highest_answered, seq)
        probe.payload = None
        run.answer(probe, now, mismatch, reordered)

    def connectionRefused(self) -> None:
        self.socketError(errno.ECONNREFUSED)

    def socketError(self, code: int) -> None:
        """
        An error about an earlier datagram with nothing queued about it (see
        L{echod._twisted.ConnectedDatagramPort}): it names no datagram, so it
        fails the latest probe still awaited.
        """
        reason = "port unreachable" if code == errno.ECONNREFUSED else os.strerror(code).lower()
        self._fail(self.run.latest_awaited(), reason)

    def errorQueued(self, data: bytes, messages: list[ControlMessage]) -> None:
        """
        An error read from the socket's error queue: an ICMP error fails the
        probe whose sequence number the datagram it quotes begins with (the
        latest still awaited if it quotes too little to tell), told with its
        sender, as ping tells it (L{echod.probe.icmp}). An error of the
        socket's own sends was told as that send failed.
        """
        queued = queued_error(messages)
        if queued is None or queued.origin == SO_EE_ORIGIN_LOCAL:
            return
        run = self.run
        if len(data) >= SEQ_BYTES:
            probe = run.awaited(int.from_bytes(data[:SEQ_BYTES], "big"))
        else:
            probe = run.latest_awaited()
        self._fail(probe, describe(queued))

    def _fail(self, probe: Probe | None, reason: str) -> None:
        # None: the probe the error is about is no longer awaited (answered, timed out): its verdict stays.
        if probe is not None:
            self.states[probe.seq % self.window] = _FAILED
            self.run.failed(probe, reason)

    def expired(self, probe: Probe) -> str:
        self.states[probe.seq % self.window] = _TIMED_OUT
        probe.payload = None
        return ""


class DatagramChannel:
    """--udp: one socket, connected to the server (so that the kernel drops datagrams from anyone else)."""

    def __init__(self, run: RunView) -> None:
        self.run = run
        self.protocol = DatagramProbe(run)
        self.port = None

    def open(self) -> None:
        run = self.run
        family = socket.AF_INET6 if ":" in run.address else socket.AF_INET
        try:
            sock = datagram_socket(family, run.options.packets)
        except OSError as e:
            run.fatal(f"cannot open a UDP socket: {e.strerror or e}")
            return
        with sock:
            # Which connects it (DatagramProbe.startProtocol); the port reads and writes a duplicate.
            self.port = ConnectedDatagramPort.adopt(sock, self.protocol, run.reactor, MAX_DATAGRAM)
        failure = self.protocol.unconnected
        if failure is not None:
            where = host_port(run.address, run.options.port)
            run.fatal(f"cannot send to {where}: {failure.strerror or failure}")
            return
        run.ready()

    def send(self, probe: Probe) -> None:
        self.protocol.send(probe)

    def expired(self, probe: Probe) -> str:
        return self.protocol.expired(probe)

    def close(self) -> None:
        if self.port is not None:
            self.port.stopListening()
