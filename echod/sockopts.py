"""
The Linux socket options and control-message types echod uses that
Python's C{socket} module does not name (3.11 and 3.13 alike).

Each value is Linux's, from the header named beside it; they are part of
the kernel's ABI and the same on every architecture Debian builds for
(asm-generic/socket.h covers all of them but alpha, mips, parisc and
sparc, which Debian does not ship as release architectures). Where Python
has the name, echod takes Python's.
"""

from __future__ import annotations

import socket

#: linux/in.h: ask for an IP_PKTINFO message (struct in_pktinfo) with each datagram.
IP_PKTINFO: int = getattr(socket, "IP_PKTINFO", 8)
#: linux/in.h: ask for an IP_TTL message (an int) with each datagram.
IP_RECVTTL: int = getattr(socket, "IP_RECVTTL", 12)
#: linux/in.h: the type of the message IP_RECVTTL brings (the option that sets a socket's TTL).
IP_TTL: int = socket.IP_TTL
#: linux/in.h: ask for an IP_TOS message (one byte) with each datagram.
IP_RECVTOS: int = getattr(socket, "IP_RECVTOS", 13)
#: linux/in.h: the type of the message IP_RECVTOS brings.
IP_TOS: int = socket.IP_TOS
#: linux/in.h: path-MTU discovery for a socket (IP_PMTUDISC_DO sets Don't Fragment).
IP_MTU_DISCOVER: int = getattr(socket, "IP_MTU_DISCOVER", 10)
#: linux/in.h: IP_MTU_DISCOVER's values: never set DF; set it unless the route says not to, and
#: fragment locally above the path MTU learnt; always set it, and refuse (EMSGSIZE) above that MTU.
IP_PMTUDISC_DONT: int = getattr(socket, "IP_PMTUDISC_DONT", 0)
IP_PMTUDISC_WANT: int = getattr(socket, "IP_PMTUDISC_WANT", 1)
IP_PMTUDISC_DO: int = getattr(socket, "IP_PMTUDISC_DO", 2)
#: linux/in.h: queue the ICMP errors of a socket's datagrams, with the offender's address, on its
#: error queue (recvmsg's MSG_ERRQUEUE, struct sock_extended_err), instead of only an errno.
IP_RECVERR: int = getattr(socket, "IP_RECVERR", 11)
#: linux/in.h: the path MTU the kernel knows for a connected socket's destination (getsockopt).
IP_MTU: int = getattr(socket, "IP_MTU", 14)

#: linux/in6.h: ask for an IPV6_PKTINFO message (struct in6_pktinfo) with each datagram.
IPV6_RECVPKTINFO: int = getattr(socket, "IPV6_RECVPKTINFO", 49)
#: linux/in6.h: the type of the message IPV6_RECVPKTINFO brings, and of the one sendmsg takes.
IPV6_PKTINFO: int = getattr(socket, "IPV6_PKTINFO", 50)
#: linux/in6.h: ask for an IPV6_HOPLIMIT message (an int) with each datagram.
IPV6_RECVHOPLIMIT: int = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
#: linux/in6.h: the type of the message IPV6_RECVHOPLIMIT brings.
IPV6_HOPLIMIT: int = getattr(socket, "IPV6_HOPLIMIT", 52)
#: linux/in6.h: ask for an IPV6_TCLASS message (an int) with each datagram.
IPV6_RECVTCLASS: int = getattr(socket, "IPV6_RECVTCLASS", 66)
#: linux/in6.h: the type of the message IPV6_RECVTCLASS brings, and the option that sets a socket's
#: traffic class.
IPV6_TCLASS: int = getattr(socket, "IPV6_TCLASS", 67)
#: linux/in6.h: the hop limit of a socket's unicast packets.
IPV6_UNICAST_HOPS: int = getattr(socket, "IPV6_UNICAST_HOPS", 16)
#: linux/in6.h: path-MTU discovery for a socket, with IP_MTU_DISCOVER's values (IPV6_PMTUDISC_DONT,
#: _WANT and _DO are 0, 1 and 2 there too).
IPV6_MTU_DISCOVER: int = getattr(socket, "IPV6_MTU_DISCOVER", 23)
#: linux/in6.h: the path MTU of a connected socket's destination (getsockopt).
IPV6_MTU: int = getattr(socket, "IPV6_MTU", 24)
#: linux/in6.h: IP_RECVERR for IPv6 (ICMPv6 errors on the error queue).
IPV6_RECVERR: int = getattr(socket, "IPV6_RECVERR", 25)

#: asm-generic/socket.h: ask for an SCM_TIMESTAMPNS message (struct timespec, CLOCK_REALTIME) with each
#: datagram: when the kernel received it.
SO_TIMESTAMPNS: int = getattr(socket, "SO_TIMESTAMPNS", 35)
#: asm-generic/socket.h: the type of the message SO_TIMESTAMPNS brings.
SCM_TIMESTAMPNS: int = getattr(socket, "SCM_TIMESTAMPNS", SO_TIMESTAMPNS)
#: asm-generic/socket.h: ask for the socket's drop counter (a __u32) with each datagram. The kernel
#: sends it only once it is above zero.
SO_RXQ_OVFL: int = getattr(socket, "SO_RXQ_OVFL", 40)
#: bits/socket.h (glibc, from the kernel's linux/socket.h): recvmsg() from the socket's error queue.
MSG_ERRQUEUE: int = getattr(socket, "MSG_ERRQUEUE", 0x2000)

#: asm-generic/socket.h: SO_RCVBUF without net.core.rmem_max's cap, for a process with CAP_NET_ADMIN.
SO_RCVBUFFORCE: int = getattr(socket, "SO_RCVBUFFORCE", 33)
