"""
The one line C{systemctl status} shows: the listeners, what was echoed, and
the alerts that stand (L{echod.accounting.alerts}) at its head.
"""

from __future__ import annotations

from collections.abc import Sequence


def human_bytes(count: int) -> str:
    """C{count} bytes in the largest binary unit it reaches, e.g. C{2.9 KiB}."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def status_line(listeners: Sequence[tuple[str, str]], echoed: int, alerts: Sequence[str] = ()) -> str:
    """
    The status line: C{alerts} first, then each listener's C{(name,
    counters)}, then the bytes echoed in all.
    """
    served = "; ".join(f"{name} {counters}" for name, counters in listeners) or "no listener"
    line = f"{served}; {human_bytes(echoed)} echoed"
    if alerts:
        line = "WARNING: " + "; ".join(alerts) + " | " + line
    return line


def stopping_line(open_connections: int) -> str:
    """The status line while stopping."""
    return f"stopping: {open_connections} connection(s) still open"
