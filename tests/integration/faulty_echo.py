"""
A deliberately faulty echo server, for testing that `echod probe` reports each
fault exactly. One fault a server; it echoes faithfully otherwise.

    python -m tests.integration.faulty_echo tcp flip OFFSET       # flip the byte at OFFSET of each stream
    python -m tests.integration.faulty_echo tcp late OFFSET SECS  # from OFFSET on, hold the echo SECS once
    python -m tests.integration.faulty_echo tcp close AFTER       # echo AFTER bytes of a connection, close it
    python -m tests.integration.faulty_echo tcp junk SKIP BYTES   # BYTES of junk, no echo, for the first SKIP
    python -m tests.integration.faulty_echo tcp discard           # read everything, echo nothing
    python -m tests.integration.faulty_echo tcp deaf              # read nothing at all
    python -m tests.integration.faulty_echo udp flip N OFFSET     # flip a byte of the Nth datagram
    python -m tests.integration.faulty_echo udp drop EVERY        # drop every EVERYth datagram
    python -m tests.integration.faulty_echo udp late N SECS       # answer the Nth datagram SECS late
    python -m tests.integration.faulty_echo udp duplicate N       # answer the Nth datagram twice
    python -m tests.integration.faulty_echo udp swap N            # answer the Nth datagram after the next

It listens on 127.0.0.1, on a free port, and prints "listening on 127.0.0.1:PORT".
`junk` prints "sent BYTES bytes of junk" when it has written them.
Datagrams are counted from 1, in the order they arrive.
"""

from __future__ import annotations

import os
import sys

from twisted.internet import reactor
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from zope.interface import implementer


@implementer(IHalfCloseableProtocol)
class FaultyStream(Protocol):
    def __init__(self, fault: str, args: list[float]) -> None:
        self.fault, self.args = fault, args
        self.received = 0
        self.held: list[bytes] | None = None
        self.eof = False

    def connectionMade(self) -> None:
        if self.fault == "deaf":
            self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        start, self.received = self.received, self.received + len(data)
        if self.fault == "discard":
            return
        if self.fault == "flip":
            at = int(self.args[0]) - start
            if 0 <= at < len(data):
                data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
        elif self.fault == "close":
            room = int(self.args[0]) - start
            if room > 0:
                self.transport.write(data[:room])
            if self.received >= self.args[0]:
                self.transport.loseConnection()
            return
        elif self.fault == "junk":
            skip = int(self.args[0]) - start
            if skip > 0:
                # These bytes get no echo; once they are all in, the junk goes in their place.
                data = data[skip:]
                if self.received >= self.args[0]:
                    self.transport.write(os.urandom(int(self.args[1])))
                    print(f"sent {int(self.args[1])} bytes of junk", flush=True)
        elif self.fault == "late":
            if self.held is not None:
                self.held.append(data)
                return
            at = int(self.args[0]) - start
            if 0 <= at < len(data):
                self.transport.write(data[:at])
                self.held = [data[at:]]
                reactor.callLater(self.args[1], self.release)
                return
        self.transport.write(data)

    def release(self) -> None:
        self.transport.write(b"".join(self.held))
        self.held = None
        self.args = [-1, 0]  # held once only
        if self.eof:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        self.eof = True
        if self.held is None:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()


class FaultyDatagrams(DatagramProtocol):
    def __init__(self, fault: str, args: list[float]) -> None:
        self.fault, self.args = fault, args
        self.count = 0
        self.held = None

    def datagramReceived(self, data: bytes, addr) -> None:
        self.count += 1
        n, fault = self.count, self.fault
        if fault == "drop" and n % int(self.args[0]) == 0:
            return
        if n == self.args[0]:
            if fault == "flip":
                at = int(self.args[1])
                data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
            elif fault == "late":
                reactor.callLater(self.args[1], self.transport.write, data, addr)
                return
            elif fault == "duplicate":
                self.transport.write(data, addr)
            elif fault == "swap":
                self.held = (data, addr)
                return
        self.transport.write(data, addr)
        if self.held is not None:
            self.transport.write(*self.held)
            self.held = None


def main(argv: list[str]) -> None:
    transport, fault, *numbers = argv
    args = [float(number) for number in numbers]
    if transport == "tcp":
        factory = Factory.forProtocol(lambda: FaultyStream(fault, args))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    else:
        port = reactor.listenUDP(0, FaultyDatagrams(fault, args), interface="127.0.0.1", maxPacketSize=65536)
    print(f"listening on 127.0.0.1:{port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
