"""
Every use echod makes of Twisted's insides (and of prometheus_client's), in
one place: the steps the library has no hook for, each taken on its private
attributes or by subclassing one of its classes. Each was checked against
Twisted 22.4, 24.11 and 26.10 (prometheus_client as Debian and PyPI ship it);
a new release that changes one breaks it here, and only here.

The probe's client transports (the time of a connect(), an ICMP error that
must not close a datagram port, an IPv6 scope kept) and the time of its
answers (the reactor's wake-up); the direct send of the echo and of the
probe, and what a connection still holds unsent; the log of a TCP port;
and the daemon's ports that yield to the reactor: a paced accept loop and
a bounded datagram read; the process metrics' boot time.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Protocol as TypingProtocol

from prometheus_client import ProcessCollector
from twisted.internet import error, tcp, udp
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import ClientFactory, DatagramProtocol, Factory
from twisted.logger import ILogObserver, Logger
from twisted.python import log
from twisted.python.failure import Failure

from echod.ancillary import ERROR_SPACE, SO_EE_ORIGIN_LOCAL, queued_error
from echod.sockopts import MSG_ERRQUEUE

# -- the direct send ------------------------------------------------------------------------------


def sends_at_once(transport) -> bool:
    """
    Whether C{transport} is one of Twisted's socket transports, which
    L{send_at_once} can hand to the kernel itself (a test's cannot): once a
    connection, to be passed to every L{send_at_once} on it.
    """
    return hasattr(transport, "writeSomeData") and hasattr(transport, "_tempDataLen")


def send_at_once(transport, data: bytes, direct: bool) -> None:
    """
    Write C{data}, sending it in this turn of the loop if C{direct} (see
    L{sends_at_once}) and nothing is queued before it. Twisted's write()
    always queues and waits for the next turn of the loop to send: for the
    echo that costs two epoll_ctl calls and a turn a reply (measured: 1 KiB
    echo 1.7 times the requests/s sent at once), and for the probe the time
    between its timestamp and its send would count in every round trip (see
    README, "Benchmark"). Whatever the kernel does not take, or an error,
    goes Twisted's usual way.
    """
    if direct and not transport.dataBuffer and not transport._tempDataLen and not transport.disconnecting:
        sent = transport.writeSomeData(data)
        if sent == len(data):
            return
        if isinstance(sent, int) and sent > 0:
            data = data[sent:]
    transport.write(data)


def unsent(transport) -> int:
    """
    Bytes written to C{transport} that Twisted still holds, not yet given
    to the kernel (0 if it is not one of Twisted's socket transports).

    Twisted has no public count of them: a write waits in C{_tempDataBuffer}
    (C{_tempDataLen} bytes) and then in C{dataBuffer} from C{offset} until a
    turn of the loop hands it over (C{abstract.FileDescriptor}, the same in
    Twisted 22.4, 24.11 and 26.10). The idle sweep needs it to tell a client
    that reads its echo from one that stopped, and the access log to count
    as sent only what was handed over.
    """
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:  # not one of Twisted's socket transports
        return 0


# -- the log of a TCP port -------------------------------------------------------------------------


def route_port_log(port: object, observer_for: Callable[[ILogObserver], ILogObserver]) -> bool:
    """
    Send the log events of Twisted TCP C{port} to the observer
    C{observer_for(forward)} gives, C{forward} being the observer they went
    to until now; say whether C{port} is such a port (if not, nothing is
    changed: it logs no EMFILE recovery).

    Twisted's C{tcp.Port} logs its accept errors and its EMFILE recovery
    through its own private C{_logger}, a class attribute, and buffers them
    through that logger's namespace and observer until the accepts of a turn
    are done (C{tcp.Port.doRead}, the same in Twisted 22.4, 24.11 and 26.10);
    there is no other way to hear of them, and none to tell them apart from
    another port's. Hence an instance attribute of the same name, a logger
    in the same namespace with echod's observer.
    """
    logger = getattr(port, "_logger", None)
    if not isinstance(logger, Logger):
        return False
    port._logger = Logger(namespace=logger.namespace, observer=observer_for(logger.observer))
    return True


# -- the probe's client transports ----------------------------------------------------------------


class _TimedClient(tcp.Client):
    """
    Twisted's TCP client transport, which has its connector prepare the new
    socket before anything else (options, a bind) and tells its factory when
    it is about to connect().
    """

    _attempted = False

    def createInternetSocket(self) -> socket.socket:
        # Twisted makes the socket in the transport's constructor, then binds it (only when given a
        # bindAddress) and connects it a turn later: this is the one place to set options that the
        # SYN must carry (the same in Twisted 22.4, 24.11 and 26.10). An OSError raised here is
        # Twisted's ConnectBindError, through the factory's clientConnectionFailed.
        sock = super().createInternetSocket()
        prepare = getattr(self.connector, "prepare", None)
        if prepare is not None:
            try:
                prepare(sock)
            except BaseException:
                sock.close()
                raise
        return sock

    def doConnect(self) -> None:
        # Twisted calls this a turn of the loop after the connector is made, and again when the
        # socket is writable; the first call makes the connect() (after one getsockopt()).
        if not self._attempted and hasattr(self, "connector"):
            self._attempted = True
            attempting = getattr(self.connector.factory, "attempting", None)
            if attempting is not None:
                attempting()
        super().doConnect()

    def connectionLost(self, reason: Failure) -> None:
        # An ICMP error to the SYN (a time to live exceeded, a host unreachable) ends the attempt with
        # EPOLLERR, which Twisted's epoll reactor takes for the end of the descriptor (see
        # ConnectedDatagramPort): its connectionLost then fails the attempt with a ConnectionDone
        # inside a ConnectError, never reading the socket's error. The errno the kernel gave the
        # connect() is read here instead (Twisted 22.4, 24.11 and 26.10 alike).
        if not self.connected and hasattr(self, "socket"):
            code = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.failIfNotConnected(error.getConnectError((code, os.strerror(code))))
                return
        super().connectionLost(reason)


class _TimedConnector(tcp.Connector):
    #: What L{_TimedClient} does with each new socket before it connects, if anything.
    prepare: Callable[[socket.socket], None] | None = None

    def _makeTransport(self) -> _TimedClient:
        return _TimedClient(self.host, self.port, self.bindAddress, self, self.reactor)


def connect_tcp(
    reactor,
    host: str,
    port: int,
    factory: ClientFactory,
    timeout: float,
    prepare: Callable[[socket.socket], None] | None = None,
):
    """
    C{reactor.connectTCP}, but C{prepare(socket)}, if given, is called on
    each new socket before it connects (to set options, to bind it: an
    C{OSError} from it fails the attempt as Twisted's C{ConnectBindError}),
    and a factory's C{attempting()}, if it has one, just before the socket's
    connect(), so that a connect time is the handshake's and not also
    Twisted's set-up: the connector, the socket, and the turn of the loop
    Twisted waits before connecting. Measured here on loopback, the server
    on the other CPU: a p50 of 0.33 ms with the clock started at the send,
    0.15 ms from the connect(), 0.14 ms for a plain non-blocking connect()
    and epoll in Python. Twisted has no hook at either place, hence its own
    connector and transport with those steps; on a reactor that is not
    Twisted's POSIX one (a test's), its connectTCP, no C{prepare}, and a
    connect time from the send.
    """
    if not isinstance(reactor, PosixReactorBase):
        return reactor.connectTCP(host, port, factory, timeout=timeout)
    connector = _TimedConnector(host, port, factory, timeout, None, reactor)
    connector.prepare = prepare
    connector.connect()
    return connector


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


class ErrorQueueReader(TypingProtocol):
    """What a L{ConnectedDatagramPort} tells its protocol, besides C{datagramReceived}."""

    def errorQueued(self, data: bytes, messages: list[tuple[int, int, bytes]]) -> None:
        """
        One error of the socket's error queue: C{data}, what it holds of the
        datagram it is about (for an ICMP error, as much of it as the sender
        quoted, from past its UDP header), and the control C{messages} that
        say what it is (L{echod.ancillary.queued_error} reads them).
        """

    def socketError(self, code: int) -> None:
        """An error C{code} with nothing queued about it (a socket without IP_RECVERR)."""


class ConnectedDatagramPort(udp.Port):
    """
    Twisted's UDP port, on which an ICMP error about an earlier datagram
    (a time to live exceeded, a port or host unreachable, fragmentation
    needed) fails a probe instead of closing the port, with what the
    kernel says of it on the socket's error queue when the socket asks for
    that (IP_RECVERR, IPV6_RECVERR): the error, its sender, and the start of
    the datagram it is about.

    The kernel queues such an error on a connected UDP socket and sets the
    socket's pending error. Then:

      - epoll reports the socket with EPOLLERR, alone or with EPOLLIN while
        the queue is not empty. Twisted's epoll reactor takes EPOLLERR alone
        for the end of the descriptor: it stops reading and calls
        C{readConnectionLost} (C{_doReadOrWrite} and C{_disconnectSelectable}
        in twisted/internet/posixbase.py, C{_POLL_DISCONNECTED = EPOLLHUP |
        EPOLLERR} in epollreactor.py: the same in Twisted 22.4, 24.11 and
        26.10). Here that reads the queue and reading goes on.
      - recvfrom() raises the pending error even with datagrams waiting,
        and so does the next send(), which then sends nothing. Twisted's
        C{doRead} passes ECONNREFUSED to C{connectionRefused} and raises
        the rest (closing the port), its C{write} does the same for
        ECONNREFUSED and drops the datagram: so this port reads and writes
        itself, reads the queue on any error, and sends again once when
        the error was one the queue explained (an earlier datagram's).

    Each error read from the queue goes to the protocol's C{errorQueued},
    an error with nothing queued (no IP_RECVERR) to its C{socketError}; the
    protocol is an L{ErrorQueueReader}. Reading the queue clears the
    pending error with it (sock_dequeue_err_skb in Linux's net/core/skbuff.c).
    """

    #: How much of the datagram an error is about is read with it: all an ICMP error quotes (576
    #: bytes at most in all, RFC 1812), the start of what an ICMPv6 one does (up to 1232 bytes of
    #: payload, RFC 4443), far more than the probe's sequence number needs; the rest is cut.
    ERROR_DATA = 1024

    @classmethod
    def adopt(cls, sock: socket.socket, protocol: DatagramProtocol, reactor, max_packet: int):
        """
        A port (started) on C{sock}, a non-blocking UDP socket the caller made
        and set up (options, a bind), which stays the caller's to close: the
        port reads and writes a duplicate of it.
        """
        # _fromListeningDescriptor is the constructor adoptDatagramPort itself uses, the same in
        # Twisted 22.4, 24.11 and 26.10; adoptDatagramPort would make a plain udp.Port.
        port = cls._fromListeningDescriptor(reactor, sock.fileno(), sock.family, protocol, max_packet)
        port.startListening()
        return port

    def connect(self, host: str, port: int) -> None:
        """
        Twisted's connect(), keeping an IPv6 address's scope: Twisted hands
        the socket C{(host, port)}, in which Python drops C{%eth0}, and the
        kernel refuses a link-local address without its interface (EINVAL).
        """
        if self.addressFamily != socket.AF_INET6 or "%" not in host:
            super().connect(host, port)
            return
        sockaddr = socket.getaddrinfo(
            host, port, socket.AF_INET6, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST
        )
        self._connectedAddr = (host, port)
        self.socket.connect(sockaddr[0][4])

    def readConnectionLost(self, reason: Failure) -> None:
        code = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        queued = self._read_errors()
        if not queued and not code:
            super().readConnectionLost(reason)  # no error: the socket's own end
            return
        self.startReading()
        if not queued:
            self.protocol.socketError(code)

    def doRead(self) -> None:
        """Twisted's read loop (up to C{maxThroughput} bytes a turn), and an error told, not raised."""
        read = 0
        while read < self.maxThroughput:
            try:
                data, addr = self.socket.recvfrom(self.maxPacketSize)
            except BlockingIOError:
                return
            except OSError as e:
                # The pending error (now taken): the queue says what it was about, if it is asked for.
                # The datagrams behind it are read in the next turn.
                if not self._read_errors():
                    self.protocol.socketError(e.errno)
                return
            read += len(data)
            try:
                self.protocol.datagramReceived(data, addr[:2])
            except BaseException:
                # As Twisted's own read loop: a protocol's bug is logged, the port reads on.
                log.err()

    def write(self, datagram: bytes, addr: object = None) -> None:
        """
        Send C{datagram} to the connected address. When the send fails with
        an error that an earlier datagram's ICMP error explains, that is told
        (to the protocol's C{errorQueued}) and the send made again, once; any
        other error is raised as it is, an C{OSError}.
        """
        try:
            self.socket.send(datagram)
            return
        except OSError:
            if not self._read_errors(icmp_only=True):
                raise
        self.socket.send(datagram)

    def _read_errors(self, icmp_only: bool = False) -> bool:
        """
        Read the socket's error queue to its end, each error to the
        protocol's C{errorQueued}; say whether any was there (with
        C{icmp_only}: any from ICMP, so about an earlier datagram, as a
        local one is about the send just made).
        """
        found = icmp = False
        while True:
            try:
                data, messages, _, _ = self.socket.recvmsg(self.ERROR_DATA, ERROR_SPACE, MSG_ERRQUEUE)
            except OSError:  # EAGAIN: the queue is empty
                break
            found = True
            error = queued_error(messages)
            icmp = icmp or (error is not None and error.origin != SO_EE_ORIGIN_LOCAL)
            self.protocol.errorQueued(data, messages)
        return icmp if icmp_only else found


# -- the sockets systemd passed -------------------------------------------------------------------


def twisteds_systemd_descriptors() -> dict[int, str | None]:
    """
    The descriptors Twisted's own C{systemd:} endpoint parser took from the
    environment (by fd, with their LISTEN_FDNAMES name, None before Twisted
    22.10), when it took them before echod could: its private copy, made as
    C{twisted.internet.endpoints} is first imported. Imported here only when
    asked, so as not to be the importer that takes them.
    """
    try:
        from twisted.internet.endpoints import _SystemdParser
    except ImportError:
        return {}
    daemon = _SystemdParser._sddaemon
    names = getattr(daemon, "inheritedNamedDescriptors", dict)()
    by_fd = {fd: name for name, fd in names.items()}
    return {fd: by_fd.get(fd) for fd in daemon.inheritedDescriptors()}


# -- the daemon's ports, which yield to the reactor ------------------------------------------------


class Bucket(TypingProtocol):
    """What paces a L{PacedPort}: C{rate} tokens a second (L{echod.accounting.rates.TokenBucket})."""

    rate: float

    def take(self, now: float) -> bool:
        """Spend a token if there is one; say whether there was."""


class PacedPort(tcp.Port):
    """
    Twisted's TCP port, accepting one connection a reactor turn and one a
    token of its L{Bucket}. Twisted's own accepts up to 100 a turn, and 20
    more after every turn that took all it could, without end: a flood of
    connections, even of ones closed at once, then held the reactor from
    the echo listeners longer and longer (an echo took 15 ms at the median
    against 16 clients connecting as fast as they could, with 50% of a core
    spent refusing them).
    """

    bucket: Bucket
    _resume: IDelayedCall | None = None

    def doRead(self) -> None:
        if not self.bucket.take(self.reactor.seconds()):
            # Back when the next token is due; the connections wait in the kernel's queue.
            self.stopReading()
            self._resume = self.reactor.callLater(1 / self.bucket.rate, self._read_again)
            return
        # numberAccepts: how many tcp.Port.doRead accepts a turn (the same in Twisted 22.4 to 26.10).
        self.numberAccepts = 1
        super().doRead()

    def _read_again(self) -> None:
        self._resume = None
        if self.connected and not self.disconnecting:
            self.startReading()

    def connectionLost(self, reason: object) -> None:
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        self._resume = None
        super().connectionLost(reason)


def adopt_paced_port(
    reactor: IReactorTime, fd: int, family: int, factory: Factory, bucket: Bucket
) -> PacedPort:
    """
    What C{reactor.adoptStreamPort} does, with a L{PacedPort} paced by
    C{bucket}: the port listens on a duplicate of C{fd}, which must be
    non-blocking and stays the caller's.
    """
    # _fromListeningDescriptor is the constructor adoptStreamPort itself uses, the same in
    # Twisted 22.4, 24.11 and 26.10.
    port = PacedPort._fromListeningDescriptor(reactor, fd, family, factory)
    port.bucket = bucket
    port.startListening()
    return port


# -- prometheus_client ---------------------------------------------------------------------------


class EchodProcessCollector(ProcessCollector):
    """
    The client library's process metrics (C{process_*}: memory, CPU, open
    files, start time), which need the boot time to give the start time.

    The library reads it from /proc/stat, and exports nothing at all when it
    cannot; echod's systemd unit (C{ProcSubset=pid}) hides /proc/stat. The
    same time is the clock's now less the time since boot (CLOCK_BOOTTIME).
    """

    def _boot_time(self) -> float:
        try:
            boot = super()._boot_time()
        except OSError:
            boot = None
        if not boot:
            boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
        return boot
