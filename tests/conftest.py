"""Fixtures for tests anywhere in the tree."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.internet import error
from twisted.internet.epollreactor import EPollReactor
from twisted.python.failure import Failure


@pytest.fixture
def reactor() -> Iterator[EPollReactor]:
    """
    A real reactor of the test's own: made, never installed nor run. The
    test turns it (L{tests.reactors.turn_until}) or calls a port's
    C{doRead} itself. Twisted's epoll reactor, the one twistd gives the
    daemon on Linux. Afterwards whatever is still on it is closed, then its
    waker and its epoll descriptor, so that a test leaves no descriptor open.
    """
    reactor = EPollReactor()
    yield reactor
    for selectable in reactor.removeAll():
        selectable.connectionLost(Failure(error.ConnectionDone()))
    reactor.removeReader(reactor.waker)
    reactor.waker.connectionLost(None)
    reactor._poller.close()  # the reactor has no public way to close its epoll descriptor
