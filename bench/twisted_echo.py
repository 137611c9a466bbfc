"""
Twisted echo servers to compare echod with, on 127.0.0.1 and a free port.

    python bench/twisted_echo.py [--half-close | --udp]

Without options: the tutorial's echo, C{transport.write} in C{dataReceived} and nothing else. It loses
the echo of a client that half-closes: on end of file Twisted closes the connection with the echo still
queued. C{--half-close} adds the two methods that fix that, for the connection-rate scenario.
C{--udp}: the tutorial's UDP echo instead, a C{DatagramProtocol} writing each datagram back to its
source, on Twisted's own UDP port, with no checks at all.
"""

import sys

from twisted.internet import reactor
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from zope.interface import implementer


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


@implementer(IHalfCloseableProtocol)
class HalfCloseEcho(Echo):
    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()


class DatagramEcho(DatagramProtocol):
    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.write(data, addr)


def main() -> None:
    if "--udp" in sys.argv[1:]:
        port = reactor.listenUDP(0, DatagramEcho(), interface="127.0.0.1")
        print(f"listening on 127.0.0.1:{port.getHost().port}", flush=True)
        reactor.run()
        return
    factory = Factory.forProtocol(HalfCloseEcho if "--half-close" in sys.argv[1:] else Echo)
    factory.noisy = False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    print(f"listening on 127.0.0.1:{port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
