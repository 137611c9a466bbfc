"""
The Echo Protocol, RFC 862, over UDP: each datagram goes back whole to where
it came from, unless answering would make echod a reflector
(L{echod.protocols.guard}).

The port that reads the datagrams is echod's own (L{echod.protocols.datagram.DatagramPort}):
it answers from the address each datagram was sent to, counts what the kernel
dropped, and lets no stream of datagrams keep the reactor from its other sockets.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from echod.accounting.stats import ListenerStats
from echod.addresses import DEFAULT_PREFIX_IPV4, DEFAULT_PREFIX_IPV6
from echod.ancillary import ControlMessage
from echod.protocols.datagram import DatagramPort
from echod.protocols.guard import ReflectionGuard


class UDPEcho:
    """Echo each datagram the guard admits back to its source, whole (a L{DatagramHandler})."""

    #: The port it answers through, once started.
    port: DatagramPort | None = None

    def __init__(
        self,
        name: str,
        blocked_source_ports: tuple[tuple[int, int], ...],
        datagram_rate_per_peer: int,
        datagram_rate: int,
        byte_rate: int,
        stats: ListenerStats,
        clock: IReactorTime,
        peer_prefixes: tuple[int, int] = (DEFAULT_PREFIX_IPV4, DEFAULT_PREFIX_IPV6),
    ) -> None:
        self.stats = stats
        #: The anti-reflection rules: what the listener's keys set, and echod's own listeners.
        self.guard = ReflectionGuard(
            name,
            blocked_source_ports,
            datagram_rate_per_peer,
            datagram_rate,
            byte_rate,
            stats,
            clock,
            peer_prefixes,
        )

    @property
    def name(self) -> str:
        """The listener's name, as its warnings say it."""
        return self.guard.name

    @name.setter
    def name(self, name: str) -> None:
        self.guard.name = name

    def started(self, port: DatagramPort) -> None:
        """Answer through C{port} from now on."""
        self.port = port

    def datagram_received(self, data: bytes, peer: tuple, messages: list[ControlMessage]) -> None:
        """Echo C{data} to C{peer}, from the address it was sent to, unless the guard says not to."""
        stats = self.stats
        size = len(data)
        stats.bytes_received += size
        if not self.guard.admit(peer[0], peer[1], size):
            return
        try:
            self.port.answer(data, peer, messages)
        except OSError:
            # The socket's send buffer is full (or the address it was sent to
            # is gone): dropping is what UDP does.
            stats.dropped_send_buffer += 1
            return
        stats.datagrams += 1
        stats.bytes_sent += size

    def kernel_dropped(self, count: int) -> None:
        """The kernel dropped C{count} datagrams that came for this listener: counted, never warned about."""
        self.stats.dropped_kernel += count

    def stopped(self) -> None:
        """The port stops listening: the drops held back are said now, not lost."""
        self.port = None
        self.guard.flush()
