"""
A UDP port of echod's own on the reactor: datagrams read with recvmsg(2),
each with what the kernel knows of it, and answered with sendmsg(2) from the
address it was sent to.

Twisted's UDP port reads with recvfrom(2) (22.4 through 26.10): no control
messages reach its protocol, so a listener bound to a wildcard address
cannot know which of the host's addresses a datagram was sent to, and
answers from whichever the route prefers; and the kernel's count of the
datagrams it dropped for a full receive buffer never shows. This port asks
for both (IP_PKTINFO or IPV6_RECVPKTINFO, and SO_RXQ_OVFL), and, for a
handler that wants them, the TTL, the TOS byte and the receive timestamp
(L{echod.ancillary.Facts}).

It is a plain reader on the reactor's public descriptor interface
(C{addReader}/C{removeReader}), so it runs on any of Twisted's posix
reactors, and it reads at most L{MAX_DATAGRAMS_PER_READ} datagrams or
L{MAX_BYTES_PER_READ} bytes a turn: no stream of datagrams, small or
empty, keeps the reactor from its other sockets and timers.
"""

from __future__ import annotations

import errno
import socket
from typing import Protocol

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IListeningPort, IReactorFDSet, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echod.ancillary import ANCILLARY_SPACE, ControlMessage, answer_from, kernel_drops
from echod.sockopts import (
    IP_PKTINFO,
    IP_RECVTOS,
    IP_RECVTTL,
    IPV6_RECVHOPLIMIT,
    IPV6_RECVPKTINFO,
    IPV6_RECVTCLASS,
    SO_RXQ_OVFL,
    SO_TIMESTAMPNS,
)
from echod.units import MAX_DATAGRAM

#: The most datagrams one read turn handles before the reactor serves its other sockets and timers.
#: Measured: Twisted's own port, bounded by bytes only, let a flood of empty datagrams keep the reactor
#: in one read for as long as it lasted (a TCP echo on the same daemon waited 3 to 5 seconds, the
#: watchdog went unfed). At a few microseconds each, a turn stays around a millisecond.
MAX_DATAGRAMS_PER_READ = 256
#: ... or this many bytes of payload, whichever comes first (Twisted's own bound, kept).
MAX_BYTES_PER_READ = 256 * 1024

#: The facts a handler may ask the kernel for with each datagram, beside the destination address.
FACTS = frozenset({"destination", "ttl", "tos", "timestamp"})

_READ_AGAIN = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR})
_U32 = 1 << 32


class DatagramHandler(Protocol):
    """What a L{DatagramPort} hands its datagrams to."""

    def started(self, port: DatagramPort) -> None:
        """The port reads from now on; C{port.answer} sends."""

    def datagram_received(self, data: bytes, peer: tuple, messages: list[ControlMessage]) -> None:
        """
        C{data} came from C{peer} (recvmsg's address: (host, port), or for
        IPv6 (host, port, flowinfo, scope_id)), with the kernel's control
        C{messages} (L{echod.ancillary.facts} reads them).
        """

    def kernel_dropped(self, count: int) -> None:
        """The kernel dropped C{count} more datagrams for this port's socket: its receive buffer was full."""

    def stopped(self) -> None:
        """The port stopped reading: nothing more will come."""


def ask_for(sock: socket.socket, facts: frozenset[str]) -> None:
    """
    Make C{sock} (a UDP socket, of either family) hand over C{facts} with
    each datagram, and the kernel's drop counter always. On an IPv6 socket
    the IPv4 options are set too, for the IPv4 clients of a dual-stack one:
    Linux gives those datagrams IPv4's TTL and TOS messages and IPv6's
    PKTINFO (with the IPv4-mapped address).
    """
    unknown = facts - FACTS
    if unknown:
        raise ValueError(f"unknown datagram facts: {', '.join(sorted(unknown))}")
    options = [(socket.SOL_SOCKET, SO_RXQ_OVFL)]
    ipv6 = sock.family == socket.AF_INET6
    if "destination" in facts:
        options.append((socket.IPPROTO_IPV6, IPV6_RECVPKTINFO) if ipv6 else (socket.IPPROTO_IP, IP_PKTINFO))
    if "ttl" in facts:
        options.append((socket.IPPROTO_IP, IP_RECVTTL))
        if ipv6:
            options.append((socket.IPPROTO_IPV6, IPV6_RECVHOPLIMIT))
    if "tos" in facts:
        options.append((socket.IPPROTO_IP, IP_RECVTOS))
        if ipv6:
            options.append((socket.IPPROTO_IPV6, IPV6_RECVTCLASS))
    if "timestamp" in facts:
        options.append((socket.SOL_SOCKET, SO_TIMESTAMPNS))
    for level, option in options:
        sock.setsockopt(level, option, 1)


def bound_to_wildcard(sock: socket.socket) -> bool:
    """Whether C{sock} is bound to every address of the host (C{0.0.0.0} or C{::})."""
    return sock.getsockname()[0] in ("0.0.0.0", "::")


@implementer(IListeningPort, IReadDescriptor)
class DatagramPort:
    """
    Reads the datagrams of a bound UDP socket and hands them to a
    L{DatagramHandler}; L{answer} sends one back from the address the
    datagram it answers was sent to.

    The port works on a duplicate of the socket it is given, so that the
    caller's stays open when the port stops (a listener keeps its socket
    across reloads).
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorFDSet,
        sock: socket.socket,
        handler: DatagramHandler,
        facts: frozenset[str] = frozenset(),
    ) -> None:
        self.reactor = reactor
        self.socket = sock.dup()
        self.socket.setblocking(False)
        self.handler = handler
        #: Only a socket bound to a wildcard address must be told the source of each answer.
        self.wildcard = bound_to_wildcard(self.socket)
        self.facts = facts | {"destination"} if self.wildcard else facts
        ask_for(self.socket, self.facts)
        #: The kernel's drop counter for this socket, as last seen.
        self.kernel_drops = 0
        self.reading = False
        self._stopped: defer.Deferred[None] | None = None
        #: How many control messages a datagram brings while the kernel has dropped none: one a fact.
        self._usual_messages = len(self.facts)

    # -- IListeningPort

    def startListening(self) -> None:
        """Start reading."""
        if self.reading:
            return
        self.reading = True
        self.handler.started(self)
        self.reactor.addReader(self)

    def stopListening(self) -> defer.Deferred[None] | None:
        """Stop reading and close the port's socket; the Deferred fires once it is closed."""
        if not self.reading:
            return self._stopped
        self.reading = False
        self.reactor.removeReader(self)
        self._stopped = defer.Deferred()
        # As Twisted's ports do: closed on the next turn, not inside the caller's.
        self.reactor.callLater(0, self.connectionLost, None)  # type: ignore[attr-defined]
        return self._stopped

    loseConnection = stopListening

    def getHost(self) -> IPv4Address | IPv6Address:
        """The address the socket is bound to."""
        address = self.socket.getsockname()
        if self.socket.family == socket.AF_INET6:
            return IPv6Address("UDP", address[0], address[1])
        return IPv4Address("UDP", address[0], address[1])

    # -- IReadDescriptor

    def fileno(self) -> int:
        return self.socket.fileno()

    def logPrefix(self) -> str:
        return "echod datagram port"

    def connectionLost(self, reason: Failure | None) -> None:
        """The port is done: its socket closes and its handler hears of it."""
        if self.reading:
            # The reactor gave up on the descriptor (closed under it).
            self.reading = False
            self.reactor.removeReader(self)
        if self.socket.fileno() == -1:
            return
        self.socket.close()
        try:
            self.handler.stopped()
        finally:
            stopped, self._stopped = self._stopped, None
            if stopped is not None:
                stopped.callback(None)

    def doRead(self) -> None:
        """Hand over at most L{MAX_DATAGRAMS_PER_READ} datagrams or L{MAX_BYTES_PER_READ} bytes; yield."""
        recvmsg, received = self.socket.recvmsg, self.handler.datagram_received
        read = 0
        for _ in range(MAX_DATAGRAMS_PER_READ):
            try:
                data, messages, _flags, peer = recvmsg(MAX_DATAGRAM, ANCILLARY_SPACE)
            except OSError as e:
                if e.errno not in _READ_AGAIN:
                    # ENOMEM, say: this datagram is lost; the port goes on.
                    self.log.warn("{port}: reading a datagram failed: {error}", port=self, error=e)
                return
            if len(messages) > self._usual_messages:
                # One more than the facts asked for: the drop counter, which
                # the kernel sends only once it is above zero.
                self._count_drops(messages)
            try:
                received(data, peer, messages)
            except Exception:
                # One datagram's failure is logged; the port goes on.
                self.log.failure("{port}: handling a datagram from {peer} failed", port=self, peer=peer)
            read += len(data)
            if read >= MAX_BYTES_PER_READ:
                return

    def _count_drops(self, messages: list[ControlMessage]) -> None:
        drops = kernel_drops(messages)
        if drops is None or drops == self.kernel_drops:
            return
        # A 32-bit counter: the difference modulo 2**32 is right across a wrap.
        more = (drops - self.kernel_drops) % _U32
        self.kernel_drops = drops
        self.handler.kernel_dropped(more)

    # -- sending

    def answer(self, data: bytes, peer: tuple, messages: list[ControlMessage]) -> None:
        """
        Send C{data} to C{peer}, from the address the datagram that came with
        C{messages} was sent to. Raises C{OSError} as sendmsg(2) does (a full
        send buffer: C{BlockingIOError}).
        """
        if self.wildcard:
            self.socket.sendmsg([data], answer_from(messages), 0, peer)
        else:
            self.socket.sendto(data, peer)

    def __repr__(self) -> str:
        if self.socket.fileno() == -1:
            return "<DatagramPort (closed)>"
        host = self.getHost()
        return f"<DatagramPort udp {host.host}:{host.port}>"
