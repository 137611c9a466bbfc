"""
What the kernel says of each datagram it hands over (recvmsg(2)'s control
messages), and the one it takes back to answer from the right address; and
what it says of an error it queued for a socket (IP_RECVERR).

Pure: no socket is touched here. L{facts} reads the messages Python's
C{socket.recvmsg} returns; L{answer_from} turns them into the message that
makes sendmsg(2) answer from the address the datagram was sent to, which a
socket bound to a wildcard address would not do by itself: the kernel
would pick the route's preferred source, and a connected client drops an
answer from any other address than the one it sent to. L{queued_error}
reads the message a read of the error queue (MSG_ERRQUEUE) brings: the
ICMP error a router or the destination sent back, and who sent it.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from echod.sockopts import (
    IP_PKTINFO,
    IP_RECVERR,
    IP_TOS,
    IP_TTL,
    IPV6_HOPLIMIT,
    IPV6_PKTINFO,
    IPV6_RECVERR,
    IPV6_TCLASS,
    SCM_TIMESTAMPNS,
    SO_RXQ_OVFL,
)

#: One control message as Python's socket module passes them: (level, type, data).
ControlMessage = tuple[int, int, bytes]

_IN_PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: ipi_ifindex, ipi_spec_dst, ipi_addr
_IN6_PKTINFO = struct.Struct("=16sI")  # struct in6_pktinfo: ipi6_addr, ipi6_ifindex
_INT = struct.Struct("=i")
_U32 = struct.Struct("=I")
# struct timespec as SO_TIMESTAMPNS (the "old" one, 35) gives it: tv_sec and tv_nsec, each a native C long,
# so native sizes ("@"), unlike the fixed-size structs above.
_TIMESPEC = struct.Struct("@ll")
# struct sock_extended_err (linux/errqueue.h): ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info,
# ee_data; the offender's struct sockaddr follows it (SO_EE_OFFENDER).
_EXTENDED_ERR = struct.Struct("=IBBBBII")
_SA_FAMILY = struct.Struct("=H")
# struct sockaddr_in and sockaddr_in6 up to their address: the family, the port, (IPv6's flow
# information,) the address; what follows (padding, IPv6's scope) is not read.
_SOCKADDR_IN = struct.Struct("=2s2s4s")
_SOCKADDR_IN6 = struct.Struct("=2s2s4s16s")
_NO_ADDRESS = bytes(4)
_IPV4_MAPPED = bytes(10) + b"\xff\xff"

#: Room for every control message echod asks for, on either family (a datagram on a dual-stack
#: socket may bring IPv6's PKTINFO and IPv4's TTL and TOS): recvmsg's ancillary buffer size.
ANCILLARY_SPACE = (
    socket.CMSG_SPACE(_IN6_PKTINFO.size)
    + socket.CMSG_SPACE(_IN_PKTINFO.size)
    + 4 * socket.CMSG_SPACE(_INT.size)
    + socket.CMSG_SPACE(_TIMESPEC.size)
    + socket.CMSG_SPACE(_U32.size)
)

#: linux/errqueue.h: where a queued error comes from (sock_extended_err's ee_origin): the socket's own
#: send, an ICMP message, an ICMPv6 message.
SO_EE_ORIGIN_LOCAL, SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 1, 2, 3
#: Room for the one message a read of the error queue brings: its ancillary buffer size.
ERROR_SPACE = socket.CMSG_SPACE(_EXTENDED_ERR.size + 28)  # + sizeof(struct sockaddr_in6)


@dataclass(frozen=True, slots=True)
class Facts:
    """
    What the kernel knew of one datagram; C{None} where it did not say
    (the socket did not ask, or the message was cut short).
    """

    #: The address the datagram was sent to (IPv4-mapped ones as IPv4), and the interface it came in on.
    destination: str | None = None
    interface: int | None = None
    #: The IPv4 TTL or IPv6 hop limit it arrived with.
    ttl: int | None = None
    #: The IPv4 TOS byte or IPv6 traffic class: DSCP in the upper six bits, ECN in the lower two.
    tos: int | None = None
    #: When the kernel received it, in nanoseconds of CLOCK_REALTIME (SO_TIMESTAMPNS).
    received_ns: int | None = None
    #: The socket's count of datagrams the kernel dropped so far (SO_RXQ_OVFL), if above zero.
    drops: int | None = None

    @property
    def dscp(self) -> int | None:
        """The Differentiated Services code point (RFC 2474), e.g. 46 for EF."""
        return None if self.tos is None else self.tos >> 2

    @property
    def ecn(self) -> int | None:
        """The ECN field (RFC 3168): 0 not ECN-capable, 1 or 2 ECT, 3 CE."""
        return None if self.tos is None else self.tos & 3


def facts(messages: list[ControlMessage]) -> Facts:
    """
    The facts C{messages} (from C{socket.recvmsg}) carry. Messages of other
    kinds, and those too short for their kind, are passed over.
    """
    found: dict[str, int | str] = {}
    for level, kind, data in messages:
        if level == socket.IPPROTO_IP:
            if kind == IP_PKTINFO and len(data) >= _IN_PKTINFO.size:
                index, _, address = _IN_PKTINFO.unpack_from(data)
                found["destination"] = socket.inet_ntop(socket.AF_INET, address)
                found["interface"] = index
            elif kind == IP_TTL and len(data) >= _INT.size:
                found["ttl"] = _INT.unpack_from(data)[0]
            elif kind == IP_TOS and data:
                # One byte, not an int: the kernel copies the header's TOS field as it is.
                found["tos"] = data[0]
        elif level == socket.IPPROTO_IPV6:
            if kind == IPV6_PKTINFO and len(data) >= _IN6_PKTINFO.size:
                address, index = _IN6_PKTINFO.unpack_from(data)
                if address.startswith(_IPV4_MAPPED):
                    found["destination"] = socket.inet_ntop(socket.AF_INET, address[12:])
                else:
                    found["destination"] = socket.inet_ntop(socket.AF_INET6, address)
                found["interface"] = index
            elif kind == IPV6_HOPLIMIT and len(data) >= _INT.size:
                found["ttl"] = _INT.unpack_from(data)[0]
            elif kind == IPV6_TCLASS and len(data) >= _INT.size:
                found["tos"] = _INT.unpack_from(data)[0]
        elif level == socket.SOL_SOCKET:
            if kind == SCM_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(data)
                found["received_ns"] = seconds * 1_000_000_000 + nanoseconds
            elif kind == SO_RXQ_OVFL and len(data) >= _U32.size:
                found["drops"] = _U32.unpack_from(data)[0]
    return Facts(**found)  # type: ignore[arg-type]


def kernel_drops(messages: list[ControlMessage]) -> int | None:
    """The socket's drop counter if C{messages} carry it (SO_RXQ_OVFL), else C{None}."""
    for level, kind, data in messages:
        if kind == SO_RXQ_OVFL and level == socket.SOL_SOCKET and len(data) >= _U32.size:
            return _U32.unpack_from(data)[0]
    return None


def answer_from(messages: list[ControlMessage]) -> list[ControlMessage]:
    """
    The control message that makes sendmsg(2) answer from the address the
    datagram of C{messages} was sent to; none if they do not say it.

    IPv4: the source in C{ipi_spec_dst}, the interface left to routing
    (C{ipi_ifindex} 0), as for any other datagram this host sends. IPv6:
    the received C{in6_pktinfo} as it is, address and interface, which a
    link-local destination needs; for an IPv4 client of a dual-stack socket
    it holds the IPv4-mapped address, which Linux's IPv4 path takes as the
    source (ip_cmsg_send; checked on this project's kernels in its tests).
    """
    for level, kind, data in messages:
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(data) >= _IN6_PKTINFO.size:
            return [(level, kind, data[: _IN6_PKTINFO.size])]
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _IN_PKTINFO.size:
            return [(level, kind, _NO_ADDRESS + data[8:12] + _NO_ADDRESS)]
    return []


@dataclass(frozen=True, slots=True)
class QueuedError:
    """One error of a socket's error queue: its struct sock_extended_err, and who sent it."""

    #: The errno it stands for (EHOSTUNREACH for a time exceeded, ECONNREFUSED, EMSGSIZE, ...).
    errno: int
    #: SO_EE_ORIGIN_LOCAL (the socket's own send), SO_EE_ORIGIN_ICMP or SO_EE_ORIGIN_ICMP6.
    origin: int
    #: The ICMP or ICMPv6 type and code (0 for a local error).
    type: int
    code: int
    #: The MTU, for "fragmentation needed", "packet too big" and a local EMSGSIZE; else 0.
    info: int
    #: The address of the host that sent the ICMP message (a router, or the destination itself);
    #: None for a local error. IPv4-mapped addresses are given as IPv4.
    offender: str | None


def queued_error(messages: list[ControlMessage]) -> QueuedError | None:
    """
    The error a read of a socket's error queue (recvmsg with MSG_ERRQUEUE,
    after IP_RECVERR or IPV6_RECVERR) brought in C{messages}, or None if they
    hold none whole. Either family's message is read on either socket: an
    IPv6 socket gets IPv4's for an IPv4-mapped destination.
    """
    for level, kind, data in messages:
        if (level, kind) not in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
            continue
        if len(data) < _EXTENDED_ERR.size:
            continue
        code_errno, origin, icmp_type, code, _, info, _ = _EXTENDED_ERR.unpack_from(data)
        return QueuedError(code_errno, origin, icmp_type, code, info, _offender(data[_EXTENDED_ERR.size :]))
    return None


def _offender(sockaddr: bytes) -> str | None:
    """The address in the struct sockaddr C{sockaddr} (a queued error's offender), if whole and set."""
    if len(sockaddr) < _SA_FAMILY.size:
        return None
    family = _SA_FAMILY.unpack_from(sockaddr)[0]
    if family == socket.AF_INET and len(sockaddr) >= _SOCKADDR_IN.size:
        return socket.inet_ntop(socket.AF_INET, _SOCKADDR_IN.unpack_from(sockaddr)[2])
    if family == socket.AF_INET6 and len(sockaddr) >= _SOCKADDR_IN6.size:
        address = _SOCKADDR_IN6.unpack_from(sockaddr)[3]
        if address.startswith(_IPV4_MAPPED):
            return socket.inet_ntop(socket.AF_INET, address[12:])
        return socket.inet_ntop(socket.AF_INET6, address)
    return None
