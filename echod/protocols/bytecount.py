"""
The bytecount echo: a decimal length, one space, then that many bytes, which
are echoed before the server closes.

The header is parsed incrementally by L{HeaderParser}, which does no I/O and
buffers at most C{max_header_length} bytes, so a client cannot make the
server hold more than that before the length is known, nor ask for more than
C{max_message_size}.
"""

from __future__ import annotations

from twisted.internet.interfaces import IHalfCloseableProtocol, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from echod.accounting.stats import ListenerStats
from echod.accounting.throttle import Summary, WarningThrottle
from echod.addresses import format_peer, peer_host
from echod.protocols.echo import apply_backpressure, close_when_sent


class HeaderError(ValueError):
    """The length header is not acceptable; the text says why."""


class HeaderParser:
    """
    Incremental parser of the C{b"<digits> "} header.

    Digits only: no sign, no leading whitespace, at most C{max_header_length}
    of them before the space, and a value of at most C{max_message_size}. A
    header is rejected as soon as it is certain to be bad, not when the space
    finally arrives.
    """

    __slots__ = ("_digits", "max_header_length", "max_message_size")

    def __init__(self, max_header_length: int, max_message_size: int) -> None:
        self.max_header_length = max_header_length
        self.max_message_size = max_message_size
        self._digits = b""

    @property
    def pending(self) -> int:
        """How many header bytes are buffered, waiting for the rest."""
        return len(self._digits)

    def feed(self, data: bytes) -> tuple[int, bytes] | None:
        """
        Consume C{data}.

        @return: C{None} while the header is incomplete; then the length and
            the bytes that followed the space.
        @raise HeaderError: as soon as the header cannot be valid.
        """
        room = self.max_header_length - len(self._digits)
        space = data.find(b" ", 0, room + 1)
        head = data[: room + 1] if space < 0 else data[:space]
        if not head.isdigit() and head:
            offset = next(i for i, byte in enumerate(head) if not 0x30 <= byte <= 0x39)
            raise HeaderError(
                f"byte {head[offset : offset + 1]!r} at header offset {len(self._digits) + offset}"
                " is not a digit; the header is a decimal length and one space"
            )
        digits = self._digits + head
        if digits and int(digits) > self.max_message_size:
            raise HeaderError(
                f"length {digits.decode()}{'' if space >= 0 else '...'} exceeds "
                f"max_message_size ({self.max_message_size} bytes)"
            )
        if space < 0:
            if len(digits) > self.max_header_length:
                raise HeaderError(f"no space after {self.max_header_length} header bytes (max_header_length)")
            self._digits = digits
            return None
        if not digits:
            raise HeaderError("the header has no digits before the space")
        self._digits = b""
        return int(digits), data[space + 1 :]


@implementer(IHalfCloseableProtocol)
class Bytecount(Protocol):
    """
    Echo exactly the announced number of bytes, then close.

    Bytes after the payload are not echoed. A bad header closes the connection
    with a warning naming the peer and the reason; those that follow it
    within an interval are summed up instead (see L{echod.accounting.throttle}).
    """

    log = Logger()
    factory: BytecountFactory
    #: Why the request was refused, if it was.
    rejected: str | None = None

    def __init__(self) -> None:
        self._parser: HeaderParser | None = None
        self._remaining = -1  # -1: header not complete yet; 0: done

    def connectionMade(self) -> None:
        apply_backpressure(self)
        self._parser = HeaderParser(self.factory.max_header_length, self.factory.max_message_size)

    def dataReceived(self, data: bytes) -> None:
        if self._remaining < 0:
            try:
                header = self._parser.feed(data)
            except HeaderError as e:
                self._reject(str(e))
                return
            if header is None:
                return
            self._remaining, data = header
            self._parser = None
            if self._remaining == 0:
                close_when_sent(self)
                return
        if self._remaining > 0 and data:
            if len(data) > self._remaining:
                data = data[: self._remaining]
            self._remaining -= len(data)
            self.transport.write(data)
            if self._remaining == 0:
                close_when_sent(self)

    def readConnectionLost(self) -> None:
        if self._remaining > 0:
            self._reject(f"the client stopped sending with {self._remaining} payload bytes still due")
        elif self._remaining < 0 and self._parser.pending:
            self._reject(f"the client stopped sending after {self._parser.pending} header bytes")
        else:
            close_when_sent(self)

    def writeConnectionLost(self) -> None:
        close_when_sent(self)

    def _reject(self, reason: str) -> None:
        self.rejected = reason
        self._remaining = 0
        self.factory.stats.protocol_errors += 1
        peer = self.transport.getPeer()
        if not self.factory.warnings.allow(peer_host(peer)):
            close_when_sent(self)
            return
        self.log.warn(
            "{listener}: bad request from {peer}, closing: {reason}",
            listener=self.factory.name,
            peer=format_peer(peer),
            reason=reason,
        )
        close_when_sent(self)


class BytecountFactory(Factory):
    """Builds L{Bytecount} protocols sharing one listener's limits and counters."""

    protocol = Bytecount
    noisy = False
    log = Logger()

    def __init__(
        self,
        name: str,
        max_header_length: int,
        max_message_size: int,
        stats: ListenerStats,
        clock: IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.name = name
        self.max_header_length = max_header_length
        self.max_message_size = max_message_size
        self.stats = stats
        #: Bad requests are client-made: their warnings are throttled.
        self.warnings = WarningThrottle(clock, self._summarise)

    def _summarise(self, summary: Summary) -> None:
        self.log.warn(
            "{listener}: ... and {summary}", listener=self.name, summary=summary.describe("bad requests")
        )

    def stopFactory(self) -> None:
        # The listener stops: what is held back is said now, not lost.
        self.warnings.flush()
