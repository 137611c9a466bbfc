"""
Listeners: one configured socket each, and what serves on it.

A L{ListenerService} holds its socket (inherited from systemd or bound
here) for as long as it lives and hands Twisted a port on a duplicate, so
that a reload can replace what serves on it, or its name, without the socket
ever closing. L{EchodService} (service.py) composes them.
"""

from __future__ import annotations

import socket

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from echod.accounting.stats import ListenerStats
from echod.addresses import host_port
from echod.config import ListenerSettings
from echod.daemon.reload import Running
from echod.protocols.bytecount import BytecountFactory
from echod.protocols.datagram import DatagramPort
from echod.protocols.echo import EchoFactory
from echod.protocols.limits import ConnectionLimits, LimitedFactory, ListenerContext
from echod.protocols.udp import UDPEcho
from echod.sockets import bind_datagram, bind_stream, receive_buffer, rmem_max, set_receive_buffer
from echod.units import format_size


def protocol_factory(
    settings: ListenerSettings, stats: ListenerStats, clock: IReactorTime | None = None
) -> Factory:
    """The bare protocol factory a listener serves, before limits are applied; C{clock} times its warnings."""
    if settings.protocol == "bytecount":
        return BytecountFactory(
            settings.name, settings.max_header_length, settings.max_message_size, stats, clock
        )
    return EchoFactory()


def bind_for(settings: ListenerSettings) -> socket.socket:
    """A new socket for C{settings}: its transport, address, port and reuse_port."""
    bind = bind_datagram if settings.transport == "udp" else bind_stream
    return bind(settings.address, settings.port, settings.reuse_port)


def endpoint(settings: ListenerSettings) -> str:
    """E.g. C{tcp [::]:7}: the transport, address and port C{settings} name."""
    return f"{settings.transport} {host_port(settings.address, settings.port)}"


class ListenerService(Service):
    """
    One configured listener: its socket (bound here or inherited from
    systemd), what serves on it, and its counters.

    The socket is kept open for as long as the listener lives, and Twisted
    is handed a port on a duplicate of it; so what serves on it can be
    replaced on reload without the socket ever closing.
    """

    log = Logger()
    #: The connection factory, for listeners that have connections.
    factory: LimitedFactory | None = None

    def __init__(
        self,
        settings: ListenerSettings,
        reactor: IReactorCore,
        stats: ListenerStats | None = None,
        sock: socket.socket | None = None,
        inherited: bool = False,
        context: ListenerContext | None = None,
    ) -> None:
        self.settings = settings
        #: What the daemon shares with every listener (the access log, ...), read when wanted.
        self.context = context if context is not None else ListenerContext()
        self.name = settings.name
        self.stats = stats if stats is not None else ListenerStats()
        self.socket = sock
        self.inherited = inherited
        self._reactor = reactor
        self.port = None

    def _adopt(self) -> None:
        raise NotImplementedError

    def counters(self) -> str:
        """This listener's part of the status line."""
        raise NotImplementedError

    def bytes_sent(self) -> int:
        return self.stats.bytes_sent

    def totals(self) -> tuple[int, int]:
        """Bytes received and sent, open connections included."""
        return self.stats.bytes_received, self.stats.bytes_sent

    def reconfigure(self, settings: ListenerSettings) -> None:
        """Apply C{settings}, which keep this listener's socket and name, to what it serves from now on."""
        raise NotImplementedError

    def rename(self, name: str) -> None:
        """Go by C{name} from now on, in the log, the status line and the access log."""
        self.name = name

    def as_running(self) -> Running:
        """What a reload needs to know of this listener."""
        return Running(self.name, self.settings, self.bound_port(), self.inherited)

    def bound_port(self) -> int:
        """The port its socket is bound to (the one it got, for port 0), or else the configured one."""
        # Once closed (while the daemon stops) a socket no longer says.
        if self.socket is not None and self.socket.fileno() != -1:
            return self.socket.getsockname()[1]
        return self.settings.port

    def holds_port(self, settings: ListenerSettings) -> bool:
        """Whether this listener's socket is bound to the transport and port C{settings} name."""
        return settings.transport == self.settings.transport and settings.port == self.as_running().bound_port

    def take_over(self, old: ListenerService) -> None:
        """Serve with what C{old} (same transport) served with: its counts and limits carry on."""
        raise NotImplementedError

    def privilegedStartService(self) -> None:
        # Binding here rather than in startService lets twistd bind a
        # privileged port before it drops root for --uid. A listener added
        # on reload is started before it joins the daemon (see
        # Reconciler._start in reconcile.py); it is not started twice.
        if self.port is None:
            self._start_listening()
        super().privilegedStartService()

    def _start_listening(self) -> None:
        if self.socket is None:
            self.socket = bind_for(self.settings)
        # Twisted neither sets O_NONBLOCK on an adopted descriptor nor closes
        # ours; it uses a duplicate.
        self.socket.setblocking(False)
        self._adopt()
        host = self.port.getHost()
        self.log.info(
            "{name}: {protocol}/{transport} listening on {address}{origin}",
            name=self.name,
            protocol=self.settings.protocol,
            transport=self.settings.transport,
            address=host_port(host.host, host.port),
            origin=" (socket from systemd)" if self.inherited else "",
        )

    def stopService(self) -> defer.Deferred:
        super().stopService()
        port, self.port = self.port, None
        stopped = port.stopListening() if port is not None else None
        stopped = stopped if stopped is not None else defer.succeed(None)
        # Closing our copy too is what makes new connections be refused; an
        # inherited socket stays open in systemd, queueing them for the next start.
        stopped.addBoth(lambda _: self.socket.close() if self.socket is not None else None)
        return stopped


class StreamListener(ListenerService):
    """A TCP listener: connections, each served by the protocol inside the limits."""

    def __init__(self, settings: ListenerSettings, reactor: IReactorCore, **kwargs) -> None:
        super().__init__(settings, reactor, **kwargs)
        self.factory = self._factory(settings)

    def _factory(self, settings: ListenerSettings) -> LimitedFactory:
        return LimitedFactory(
            protocol_factory(settings, self.stats, self._reactor),
            name=settings.name,
            limits=ConnectionLimits.of(settings),
            stats=self.stats,
            clock=self._reactor,
            context=self.context,
        )

    def take_over(self, old: ListenerService) -> None:
        # The old factory, so that a host at its per-peer cap stays there:
        # it counts the connections still open on the old port.
        settings, self.settings, self.factory = self.settings, old.settings, old.factory
        self.reconfigure(settings)
        self.rename(settings.name)

    def _adopt(self) -> None:
        self.port = self._reactor.adoptStreamPort(self.socket.fileno(), self.socket.family, self.factory)
        if self.context.shortage is not None:
            self.context.shortage.install(self.port, self.factory)

    def counters(self) -> str:
        return self.stats.stream_summary()

    def bytes_sent(self) -> int:
        return self.factory.totals()[1]

    def totals(self) -> tuple[int, int]:
        return self.factory.totals()

    def rename(self, name: str) -> None:
        super().rename(name)
        self.factory.name = name
        if isinstance(self.factory.wrappedFactory, BytecountFactory):
            self.factory.wrappedFactory.name = name

    def reconfigure(self, settings: ListenerSettings) -> None:
        old, self.settings = self.settings, settings
        factory = self.factory
        if settings.protocol != old.protocol:
            # The same factory serves the new protocol, so that the caps keep
            # counting the connections open under the old one.
            factory.serve(protocol_factory(settings, self.stats, self._reactor))
        factory.limits = ConnectionLimits.of(settings)  # for those open too, as far as they can
        if isinstance(factory.wrappedFactory, BytecountFactory):
            factory.wrappedFactory.max_message_size = settings.max_message_size
            factory.wrappedFactory.max_header_length = settings.max_header_length


class DatagramListener(ListenerService):
    """A UDP listener: datagrams echoed by one L{UDPEcho}."""

    def __init__(self, settings: ListenerSettings, reactor: IReactorCore, **kwargs) -> None:
        super().__init__(settings, reactor, **kwargs)
        self.protocol = UDPEcho(
            settings.name,
            settings.blocked_source_ports,
            settings.datagram_rate_per_peer,
            settings.datagram_rate,
            settings.byte_rate,
            self.stats,
            reactor,
            (settings.peer_prefix_ipv4, settings.peer_prefix_ipv6),
        )

    def rename(self, name: str) -> None:
        super().rename(name)
        self.protocol.name = name

    def take_over(self, old: ListenerService) -> None:
        # The old protocol: its token buckets keep what they hold.
        settings, self.settings, self.protocol = self.settings, old.settings, old.protocol
        self.reconfigure(settings)
        self.rename(settings.name)

    def _adopt(self) -> None:
        # Not reactor.adoptDatagramPort: Twisted's port reads with recvfrom,
        # so it could neither answer from the address a datagram was sent to
        # nor see the kernel's drops (echod.protocols.datagram).
        self._size_receive_buffer(self.settings)
        self.port = DatagramPort(self._reactor, self.socket, self.protocol)
        self.port.startListening()

    def _size_receive_buffer(self, settings: ListenerSettings) -> None:
        """Ask for receive_buffer, if set, and say so if the kernel gave less."""
        wanted = settings.receive_buffer
        if wanted is None:
            self.stats.receive_buffer = receive_buffer(self.socket)
            return
        granted = self.stats.receive_buffer = set_receive_buffer(self.socket, wanted)
        if granted < 2 * wanted:
            cap = rmem_max()
            self.log.warn(
                "{name}: receive_buffer = {wanted} asked, the kernel gave {granted} (it reports twice "
                "what it grants): without CAP_NET_ADMIN, a buffer is capped at net.core.rmem_max ({cap}); "
                "raise it (sysctl net.core.rmem_max) or set ReceiveBuffer= in echod.socket",
                name=self.name,
                wanted=format_size(wanted),
                granted=format_size(granted),
                cap="unknown" if cap is None else cap,
            )

    def counters(self) -> str:
        return self.stats.datagram_summary()

    def reconfigure(self, settings: ListenerSettings) -> None:
        old, self.settings = self.settings, settings
        if settings.receive_buffer != old.receive_buffer and self.port is not None:
            # On the socket itself: its datagrams stay queued.
            self._size_receive_buffer(settings)
        self.protocol.guard.configure(
            settings.blocked_source_ports,
            settings.datagram_rate_per_peer,
            settings.datagram_rate,
            settings.byte_rate,
            (settings.peer_prefix_ipv4, settings.peer_prefix_ipv6),
        )


def make_listener(settings: ListenerSettings, reactor: IReactorCore, **kwargs) -> ListenerService:
    """The listener service for C{settings}'s transport."""
    kind = DatagramListener if settings.transport == "udp" else StreamListener
    return kind(settings, reactor, **kwargs)


def successor(
    old: ListenerService, settings: ListenerSettings, reactor: IReactorCore, **kwargs
) -> ListenerService:
    """
    The listener for C{settings} that replaces C{old} on another socket: it
    keeps C{old}'s counters and, on the same transport, its limits' state
    (open connections per peer, token buckets). C{old} must stop before a
    UDP successor starts: one UDP echo answers through one port.
    """
    new = make_listener(settings, reactor, stats=old.stats, **kwargs)
    if type(new) is type(old):
        new.take_over(old)
    return new
