"""A listener's factory and connections on a fake clock and string transports, for the tests of protocols/."""

import dataclasses

from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from echod.accounting.stats import ListenerStats
from echod.protocols.echo import EchoFactory
from echod.protocols.limits import ConnectionLimits, LimitedFactory


def limited(inner: Factory | None = None, **limits) -> LimitedFactory:
    options = {"max_connections": 100, "max_connections_per_peer": 100, "idle_timeout": 0}
    options.update(limits)
    return LimitedFactory(
        inner or EchoFactory(),
        name="l",
        limits=ConnectionLimits(**options),
        stats=ListenerStats(),
        clock=Clock(),
    )


def change(factory: LimitedFactory, **limits) -> None:
    """Replace C{factory}'s limits with a copy with C{limits} changed, as a reload does."""
    factory.limits = dataclasses.replace(factory.limits, **limits)


def closed_at(factory, transport, until: int) -> int | None:
    """Advance the clock a second at a time; when was the connection aborted?"""
    for second in range(int(factory.clock.seconds()) + 1, until + 1):
        factory.clock.advance(1)
        if transport.disconnected:  # aborted, not politely closed
            return second
    return None


def logged(tmp_path, **limits):
    from echod.accounting.accesslog import AccessLog

    factory = limited(**limits)
    factory.context.access_log = AccessLog(str(tmp_path / "access.log"), factory.clock)
    return factory


def entries(factory, tmp_path) -> list[list[str]]:
    factory.access_log.flush()
    return [line.split()[1:] for line in (tmp_path / "access.log").read_text().splitlines()]


class SocketLikeTransport(StringTransport):
    """
    Just enough of Twisted's TCP transport for what limits does with it: a
    write buffer it can be told holds C{unsent} bytes, and half-close.
    """

    offset = 0
    _tempDataLen = 0
    write_closed = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dataBuffer = b""

    def writeSomeData(self, data: bytes) -> int:
        self.io.write(data)
        return len(data)

    def hold(self, unsent: int) -> None:
        """Pretend that C{unsent} bytes written are still in Twisted's buffer."""
        self.dataBuffer, self.offset = b"x" * unsent, 0

    def loseWriteConnection(self) -> None:
        self.write_closed = True
