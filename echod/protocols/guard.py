"""
The rules that keep a UDP service of echod's from being a reflector, for
every one that answers datagrams (the echo, and any that comes after it).

A UDP port answers forged sources: an attacker sends datagrams "from" a
victim, or from another UDP service to start a loop (echo to chargen, echo
to echo). So, as careful inetds do, echod never answers privileged or
listed source ports, nor broadcast, multicast or unspecified sources, nor
its own listening addresses (answering itself, or one of its listeners
another, would loop), and rate-limits the rest per source and in total,
with token buckets whose excess is dropped and counted, never queued. Two
different echo servers on unblocked ports can still loop through each
other: the rate limits bound that, and blocked_source_ports can name the
other's port.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from echod.accounting.rates import PeerBuckets, TokenBucket
from echod.accounting.stats import DROP_REASONS, ListenerStats
from echod.accounting.throttle import Summary, WarningThrottle
from echod.addresses import DEFAULT_PREFIX_IPV4, DEFAULT_PREFIX_IPV6, host_port, peer_key
from echod.config import LISTENER_PREFIX
from echod.units import MAX_DATAGRAM, format_port_ranges, format_size

#: The drops of each reason, as the warnings count them: by the key that decides them.
_COUNTED_AS = {
    "blocked_source_ports": "from blocked_source_ports",
    "unanswerable_source": "from sources never answered",
    "own_listener": "from echod's own listeners",
    "datagram_rate_per_peer": "over datagram_rate_per_peer",
    "datagram_rate": "over datagram_rate",
    "byte_rate": "over byte_rate",
    "send_buffer_full": "with the send buffer full",
    "receive_buffer_full": "by the kernel, the receive buffer full",
}

#: The most sources whose per-source key L{UDPEcho} remembers; past it, it forgets them all and starts
#: again, so that a flood of forged sources costs what it would without the memory, and no more.
MAX_REMEMBERED_SOURCES = 4096

#: Drops that are counted but never warned about: no source is to blame.
_ONLY_COUNTED = frozenset({"send_buffer_full", "receive_buffer_full"})


def plain_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """C{host} as an address, without its IPv6 scope, IPv4-mapped ones as IPv4; C{None} if it is none."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def unanswerable_source(host: str) -> bool:
    """Whether C{host} is an address no echo may be sent to: broadcast, multicast or unspecified."""
    address = plain_address(host)
    if address is None:
        return True
    return (
        address.is_multicast or address.is_unspecified or address == ipaddress.IPv4Address("255.255.255.255")
    )


def is_local_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """
    Whether C{address} is one of this host's, now: loopback, or one a socket
    can be bound to. Asked afresh each time, as addresses come and go.
    """
    if address.is_loopback:
        return True
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
    except OSError as e:
        # Only "not an address here" says it is foreign. Any other failure (a
        # link-local address without its scope, say) counts as local: the
        # datagram already comes from one of echod's own ports, and dropping
        # it is the safe side.
        return e.errno != errno.EADDRNOTAVAIL
    return True


class OwnEndpoints:
    """
    The addresses and ports echod's own UDP listeners are bound to. A
    datagram from one of them is forged, or an echo from another of echod's
    listeners; answering it would start a loop.

    A listener bound to a wildcard (C{::}, C{0.0.0.0}) owns its port on every
    address of the host: on those, a source with that port is its own.
    """

    def __init__(self) -> None:
        #: Every port some listener is bound to: the cheap first test, on every datagram.
        self.ports: frozenset[int] = frozenset()
        self._exact: frozenset[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = frozenset()
        self._wildcard_ports: frozenset[int] = frozenset()

    def update(self, bound: Iterable[tuple[str, int]]) -> None:
        """Replace the endpoints with C{bound}, the (host, port) each listener's socket is bound to."""
        exact, wildcard = set(), set()
        for host, port in bound:
            address = plain_address(host)
            if address is None:
                continue
            if address.is_unspecified:
                wildcard.add(port)
            else:
                exact.add((address, port))
        self._exact = frozenset(exact)
        self._wildcard_ports = frozenset(wildcard)
        self.ports = frozenset(port for _, port in exact) | self._wildcard_ports

    def includes(self, host: str, port: int) -> bool:
        """Whether (C{host}, C{port}) is one of echod's own listening endpoints."""
        if port not in self.ports:
            return False
        address = plain_address(host)
        if address is None:
            return False
        if (address, port) in self._exact:
            return True
        return port in self._wildcard_ports and is_local_address(address)


class ReflectionGuard:
    """
    Whether a datagram may be answered; each one that may not is counted by
    reason in the listener's stats, and warned about (throttled by source).
    """

    log = Logger()

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
        self.name = name
        self.stats = stats
        self.clock = clock
        #: Each recent source host's per-source key, or None for one never answered (L{_source_key}).
        self._keys: dict[str, str | None] = {}
        #: Sources never answered: echod's own listeners. The service shares one among all listeners.
        self.own = OwnEndpoints()
        self._peers: PeerBuckets | None = None
        self.configure(blocked_source_ports, datagram_rate_per_peer, datagram_rate, byte_rate, peer_prefixes)
        #: Drops are client-made, as many as datagrams can be forged: the first is
        #: logged in full, those that follow summed up by source (echod.accounting.throttle).
        self._drop_warnings = WarningThrottle(clock, self._summarise_drops)
        #: The drops by reason when the last warning was logged: a summary says those since.
        self._said: dict[str, int] = {}

    def configure(
        self,
        blocked_source_ports: tuple[tuple[int, int], ...],
        datagram_rate_per_peer: int,
        datagram_rate: int,
        byte_rate: int,
        peer_prefixes: tuple[int, int] = (DEFAULT_PREFIX_IPV4, DEFAULT_PREFIX_IPV6),
    ) -> None:
        """
        Set the limits, and C{peer_prefixes} (peer_prefix_ipv4 and
        peer_prefix_ipv6): the sources that share one per-source bucket.
        The buckets start full; on reload they keep what they hold (at most
        the new burst), so that a SIGHUP never hands a flooder a fresh burst.
        """
        now = self.clock.seconds()
        self.peer_prefixes = peer_prefixes
        self.blocked_source_ports = blocked_source_ports
        #: The rates as configured, for the warnings that name them.
        self.rates = {
            "datagram_rate_per_peer": datagram_rate_per_peer,
            "datagram_rate": datagram_rate,
            "byte_rate": byte_rate,
        }
        self._blocked_below = next((high + 1 for low, high in blocked_source_ports if low == 0), 0)
        #: The ranges not covered by the cheap "below" test (none, as shipped: 0-1023).
        self._blocked_ranges = tuple((low, high) for low, high in blocked_source_ports if low != 0)
        # The keys depend on the prefixes.
        self._keys = {}
        # One second of bytes, but never less than one largest datagram.
        byte_burst = max(byte_rate, MAX_DATAGRAM)
        if self._peers is None:
            self._peers = PeerBuckets(datagram_rate_per_peer)
            self._datagrams = TokenBucket(datagram_rate, datagram_rate, now)
            self._bytes = TokenBucket(byte_rate, byte_burst, now)
        else:
            self._peers.retune(datagram_rate_per_peer, now)
            self._datagrams.retune(datagram_rate, datagram_rate, now)
            self._bytes.retune(byte_rate, byte_burst, now)

    def _blocked_port(self, port: int) -> bool:
        if port < self._blocked_below:
            return True
        return any(low <= port <= high for low, high in self._blocked_ranges)

    def _source_key(self, host: str) -> str | None:
        """
        C{host}'s per-source key, or C{None} if it is never answered; from
        memory for a recent source. Measured, per datagram: the checks of an
        unremembered source 4.7 µs (mostly C{ipaddress}), a remembered one 0.05 µs.
        """
        key = None if unanswerable_source(host) else peer_key(host, *self.peer_prefixes)
        if len(self._keys) >= MAX_REMEMBERED_SOURCES:
            self._keys.clear()
        self._keys[host] = key
        return key

    def admit(self, host: str, port: int, size: int) -> bool:
        """
        Whether a datagram of C{size} bytes from C{host}:C{port} may be
        answered; if not, it is counted and warned about here.
        """
        stats = self.stats
        if port < self._blocked_below or (self._blocked_ranges and self._blocked_port(port)):
            stats.dropped_port += 1
            self._dropped(host, port, None, "blocked_source_ports")
            return False
        keys = self._keys
        key = keys[host] if host in keys else self._source_key(host)
        if key is None:
            stats.dropped_address += 1
            self._dropped(host, port, None, "unanswerable_source")
            return False
        now = self.clock.seconds()
        if not self._peers.take(key, now):
            stats.dropped_peer_rate += 1
            self._dropped(host, port, key, "datagram_rate_per_peer")
            return False
        if not self._datagrams.take(now):
            stats.dropped_datagram_rate += 1
            self._dropped(host, port, key, "datagram_rate")
            return False
        if not self._bytes.take(now, size):
            stats.dropped_byte_rate += 1
            self._dropped(host, port, key, "byte_rate")
            return False
        own = self.own
        # Most datagrams stop at the set lookup: only one from a port echod
        # listens on is looked at further. After the rate limits, because for
        # a wildcard listener that look binds a probe socket: a flood forged
        # from that port costs at most datagram_rate probes a second.
        if port in own.ports and own.includes(host, port):
            stats.dropped_own += 1
            self._dropped(host, port, key, "own_listener")
            return False
        return True

    def flush(self) -> None:
        """The drops held back for a summary are said now: the listener stops."""
        self._drop_warnings.flush()

    def _dropped(self, host: str, port: int, key: str | None, reason: str) -> None:
        """
        Warn that a datagram from C{host}:C{port} was dropped for C{reason}
        (one of L{DROP_REASONS}), unless the throttle counts it for a summary
        under C{key}, its source's per-source bucket (computed here if the
        datagram never got that far).
        """
        if key is None:
            key = peer_key(host, *self.peer_prefixes)
        if not self._drop_warnings.allow(key):
            return
        self._said = self._drops()
        self.log.warn(
            "{listener}: dropped a datagram from {peer}: {why} (dropped so far: {totals})",
            listener=self.name,
            peer=host_port(host, port),
            reason=reason,
            why=self._why(reason, port, key),
            totals=_count_by_reason(self._said),
        )

    def _why(self, reason: str, port: int, key: str) -> str:
        """Why a datagram was dropped, and the key that would let the next one through, if any."""
        section = f"[{LISTENER_PREFIX}{self.name}]"
        if reason == "blocked_source_ports":
            blocked = format_port_ranges(self.blocked_source_ports)
            return (
                f"its source port {port} is in blocked_source_ports ({blocked}); "
                f"to answer that port, take it out of blocked_source_ports in {section}"
            )
        if reason == "unanswerable_source":
            return "a broadcast, multicast or unspecified source is never answered"
        if reason == "own_listener":
            return "it comes from one of echod's own listeners, and answering would loop"
        rate = self.rates[reason]
        if reason == "datagram_rate_per_peer":
            return (
                f"over datagram_rate_per_peer = {rate} a second from {key}; "
                f"if that source is wanted, raise datagram_rate_per_peer in {section}"
            )
        shown = format_size(rate) if reason == "byte_rate" else str(rate)
        return (
            f"over {reason} = {shown} a second from all sources together; "
            f"if they are wanted, raise {reason} in {section}"
        )

    def _drops(self) -> dict[str, int]:
        """The datagrams dropped so far, by reason."""
        stats = self.stats
        return {reason: getattr(stats, attribute) for reason, attribute in DROP_REASONS}

    def _summarise_drops(self, summary: Summary) -> None:
        said, now = self._said, self._drops()
        self._said = now
        # The drops the summary counts: full buffers are not warned about, only counted.
        since = {reason: now[reason] - said.get(reason, 0) for reason in now if reason not in _ONLY_COUNTED}
        self.log.warn(
            "{listener}: ... and {summary}: {since} (dropped so far: {totals})",
            listener=self.name,
            summary=summary.describe("datagrams dropped"),
            since=_count_by_reason(since),
            totals=_count_by_reason(now),
        )


def _count_by_reason(counts: dict[str, int]) -> str:
    """C{"2,995 over datagram_rate_per_peer, 3 from blocked_source_ports"}: the reasons that have any."""
    return (
        ", ".join(f"{count:,} {_COUNTED_AS[reason]}" for reason, count in counts.items() if count) or "none"
    )
