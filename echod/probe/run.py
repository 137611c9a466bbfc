"""
`echod probe`: the client end. Sends probes to an echo server (echod or any
RFC 862 server) and checks every byte that comes back, as ping(8) does with
ICMP echo.

Everything runs on the reactor: the client protocols (L{echod.probe.channels})
carry the probes, and the run here sends one every interval and decides each
one as its answer, its timeout or its failure comes; probes and timeouts are
reactor timers, so that no thread stands between a reply and its timestamp.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.python.failure import Failure

from echod._twisted import ReceiveClock
from echod.addresses import host_port
from echod.probe.channels import REFUSED, channel_for
from echod.probe.options import ProbeOptions, check_size
from echod.probe.output import UNKNOWN
from echod.probe.payload import Mismatch, Probe, make_payload
from echod.probe.resolve import ResolveError, resolve_in_thread
from echod.probe.sockets import problem
from echod.probe.tally import STATUS_ERROR, Tally, Verdict

#: Bytes on a stream that match no probe are told at most once in this many seconds: a server
#: that floods the connection must not flood the output with a line per read().
STRAY_REPORT_INTERVAL = 1.0


class Reporter(TypingProtocol):
    """What L{Run} tells as it goes (see L{echod.probe.output})."""

    def started(self, address: str) -> None: ...
    def answered(self, seq: int, verdict: Verdict, **details) -> None: ...
    def timed_out(self, seq: int, detail: str = "") -> None: ...
    def duplicate(self, seq: int, size: int, rtt: float | None) -> None: ...
    def unexpected(self, size: int, detail: str) -> None: ...
    def finished(self, tally: Tally, elapsed: float, error: str | None) -> int: ...


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
        #: The time of sends (and of a run's course); L{received} that of answers (see
        #: L{echod._twisted.ReceiveClock}).
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
        #: timer() when L{start} was called: the deadline, and any wait told, count from there.
        self.started_at: float | None = None
        #: Whether the deadline (-w) ended the run.
        self._deadline_passed = False
        #: The name's resolution while it is under way (see L{start}).
        self.resolving: defer.Deferred | None = None
        #: Whether any connection to the server was ever made (the stream modes).
        self.reached = False
        #: Why the latest connection attempt failed, while none succeeded.
        self._attempt_failed: str | None = None
        self._stray_untold = 0
        self._stray_told_at: float | None = None
        self.channel = channel_for(options.mode)(self)

    # -- the run's course ---------------------------------------------------

    def start(self, resolving: defer.Deferred | None = None) -> defer.Deferred:
        """
        Report, open the channel, then probe; returns L{done}.

        @param resolving: fires with the family and the address to probe (see
            L{resolve_in_thread}), or with L{ResolveError}; the deadline and
            an interruption end the run while it is under way too. Without
            it, the address the run was made with.
        """
        if self.finished:  # interrupted before it began
            return self.done
        self.started_at = self.timer()
        if self.options.deadline is not None:
            self._deadline = self.reactor.callLater(self.options.deadline, self._deadline_reached)
        if resolving is None:
            self._open()
        else:
            self.resolving = resolving
            resolving.addCallbacks(self._resolved, self._unresolved)
        return self.done

    def _resolved(self, found: tuple[int, str]) -> None:
        self.resolving = None
        if self.finished:
            return
        family, self.address = found
        try:
            check_size(self.options.mode, self.options.size, family)
        except ValueError as e:
            self.error = str(e)
            self._finish()
            return
        self._open()

    def _unresolved(self, failure: Failure) -> None:
        self.resolving = None
        if self.finished:
            return
        message = failure.getErrorMessage()
        if not failure.check(ResolveError):
            message = f"cannot resolve {self.options.host}: {message}"
        self.error = message
        self._finish()

    def _open(self) -> None:
        # What the options ask of the sockets is tried on one first: a source address the host does not
        # have, an interface it lacks, end the run at once, as ping's bind error does, before any probe.
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        kind = socket.SOCK_STREAM if self.options.stream else socket.SOCK_DGRAM
        refused = problem(family, kind, self.options.packets)
        if refused is not None:
            self.error = refused
            self._finish()
            return
        self.reporter.started(self.address)
        self.channel.open()

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
        # With a deadline, -c counts answers, as ping's: probes go on until that many came back.
        last = self.options.count is not None and self.options.deadline is None and seq >= self.options.count
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
        self._deadline_passed = True
        self.stop()

    def _waited(self) -> float:
        """
        How long the run has waited: the deadline itself when that is what
        ended the wait (on a busy machine the clock reads 1.01 s at a 1 s
        deadline), else the time since the start (Ctrl-C, the last timeout).
        """
        if self._deadline_passed:
            return self.options.deadline
        return self.timer() - self.started_at if self.started_at is not None else 0.0

    def stop(self) -> None:
        """The deadline, or an interruption: end now, with the probes still awaited left undecided."""
        self._finish()

    def unreachable(self, reason: str | None) -> None:
        """The run's one connection (--tcp) failed: C{reason}, or None for no answer within the timeout."""
        self.fatal(self._no_connection(reason, self.options.timeout if reason is None else None))

    def _no_connection(self, reason: str | None, waited: float | None = None) -> str:
        where = host_port(self.options.host, self.options.port)
        if reason is None:
            return f"no connection to {where} within {self._waited() if waited is None else waited:.3g} s"
        if reason != REFUSED:
            return f"no connection to {where}: {reason}"
        text = f"connection refused by {where}"
        if self.options.default_port:
            # Most often the server listens elsewhere (`make run` on 7007): say how to name its port.
            example = host_port(self.options.host, 7007)
            text += f" ({self.options.port} is the default port; give the server's as HOST:PORT"
            text += f", e.g. {example} for `make run`)" if self.options.mode != "bytecount" else ")"
        return text

    def _left_unsaid(self) -> str | None:
        """
        The error of a run that ends without one, yet never reached the
        server: nothing answered is never a success.
        """
        if self.started_at is None and self.began is None:
            return "interrupted before the run began"
        if self.resolving is not None:
            return f"cannot resolve {self.options.host}: no answer within {self._waited():.3g} s"
        if self.options.stream and not self.reached:
            return self._no_connection(self._attempt_failed)
        return None

    def fatal(self, message: str) -> None:
        """The run cannot go on (the connection failed or closed): every probe awaited fails."""
        if self.finished:
            return
        self.error = message
        for probe in list(self.pending.values()):
            self._decide(probe, Verdict.FAILED, report=False)
        self._finish()

    def _maybe_finish(self) -> None:
        if self.finished:
            return
        if self.all_sent and not self.pending:
            self._finish()
        elif self.options.count is not None and self.options.deadline is not None:
            tally = self.tally
            if tally.decided - tally.lost >= self.options.count:  # COUNT answers before the deadline
                self._finish()

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.error is None:
            self.error = self._left_unsaid()
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

    def awaited(self, seq: int) -> Probe | None:
        """Probe C{seq}, if it is still awaited (neither decided nor timed out)."""
        return self.pending.get(seq)

    def latest_awaited(self) -> Probe | None:
        """The probe sent last of those still awaited, if any."""
        return self.pending[max(self.pending)] if self.pending else None

    def expected(self, seq: int) -> bytes:
        """The payload probe C{seq} was sent with, made again from its number if it was let go."""
        probe = self.pending.get(seq)
        if probe is not None and probe.payload is not None:
            return probe.payload
        return make_payload(self.key, seq, self.options.size)

    def connected(self, probe: Probe | None, now: float) -> None:
        """A probe's own connection is made (--connect, --bytecount), or with None the run's (--tcp)."""
        self.reached = True
        if probe is None:
            return
        probe.connect = (now if now >= probe.started else self.timer()) - probe.started
        self.tally.connect.add(probe.connect)

    def answer(
        self, probe: Probe, now: float, mismatch: Mismatch | None = None, reordered: bool = False
    ) -> None:
        """The whole answer to C{probe} came back at C{now}; C{mismatch} if its bytes differ."""
        if self.finished:
            return
        if probe.sent_at is not None and now < probe.sent_at:
            # Stamped in a turn that began before the send (see echod._twisted.ReceiveClock).
            now = self.timer()
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
            self._maybe_finish()
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
        if not self.reached:
            self._attempt_failed = detail
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

    def stray(self, size: int, detail: str) -> None:
        """
        C{size} bytes on a stream that match no probe: counted in bytes, told
        when they begin and then at most once every L{STRAY_REPORT_INTERVAL}
        (each line with the bytes since the last one).
        """
        if self.finished:
            return
        self.tally.unexpected_bytes += size
        self._stray_untold += size
        now = self.timer()
        if self._stray_told_at is not None and now - self._stray_told_at < STRAY_REPORT_INTERVAL:
            return
        if self._stray_told_at is None:
            detail += "; more are told at most once a second"
        else:
            detail += f" ({self.tally.unexpected_bytes} bytes so far)"
        self._stray_told_at = now
        size, self._stray_untold = self._stray_untold, 0
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


def run(options: ProbeOptions, reporter: Reporter) -> int:
    """
    Resolve the target, probe it on the global reactor until the run ends,
    and return the exit status the reporter gives.

    SIGINT and SIGTERM end the run as its deadline does, with the summary
    (ping's Ctrl-C), instead of killing the process; they and the deadline
    are in place before the name is resolved, and resolving it takes no
    part of the reactor's thread (L{resolve_in_thread}).
    """
    import signal

    from twisted.internet import reactor

    probe_run = Run(options, options.host, reporter, reactor, received=ReceiveClock(reactor).now)

    status: list[int] = []
    # A failure of the probe itself (a bug) is neither loss nor corruption: an error, or a
    # monitoring check's UNKNOWN, the plugin's own failure.
    internal = UNKNOWN if options.monitoring else STATUS_ERROR

    def stop() -> None:
        if not probe_run.finished:
            probe_run.stop()
        elif not status and reactor.running:
            # Ended, yet never reported (a bug on the way out): the signal still ends the process.
            status.append(internal)
            reactor.stop()

    def interrupted(signum, frame) -> None:
        reactor.callFromThread(stop)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupted)

    def broken(failure) -> None:
        failure.printTraceback()
        if options.monitoring:
            from echod.probe.output import unknown_line

            print(unknown_line(f"internal error: {failure.getErrorMessage()}"), flush=True)
        status.append(internal)

    def begin() -> None:
        done = defer.maybeDeferred(probe_run.start, resolve_in_thread(reactor, options))
        done.addCallbacks(status.append, broken)
        done.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(begin)
    reactor.run(installSignalHandlers=False)
    return status[0] if status else internal
