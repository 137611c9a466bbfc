"""Turning a reactor of a test's own (the C{reactor} fixture of tests/conftest.py) by hand."""

from __future__ import annotations

import time
from collections.abc import Callable

from twisted.internet.interfaces import IReactorCore

#: How long a condition may take to come about on a real reactor: far more than it does
#: (milliseconds), so that only a condition that never comes fails.
DEADLINE = 10.0


def turn_until(reactor: IReactorCore, condition: Callable[[], bool], seconds: float = DEADLINE) -> None:
    """Turn C{reactor}'s loop (timers, then I/O) until C{condition()} holds, failing after C{seconds}."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come about in time"
        reactor.iterate(0.01)
