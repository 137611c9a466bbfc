"""
What a reload does to the listeners: the running ones and the new
configuration's, matched, as a L{Plan} of actions for L{echod.daemon.reconcile} to
carry out. Pure: no sockets, no Twisted.

Listeners are matched by their socket first (transport, address, port) and
by name only after that. A listener renamed in the file keeps its socket,
its open connections and its counters; matched by name alone, the new name
would try to bind a port its old self still holds, fail, and the old name
would then be removed, leaving the port unserved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from echod.config import ListenerSettings


@dataclass(frozen=True)
class Running:
    """A listener as it runs: its settings, and the port its socket is bound to."""

    name: str
    settings: ListenerSettings
    #: Differs from C{settings.port} when that is 0 (any free port).
    bound_port: int
    #: Whether its socket came from systemd, which alone can move it.
    inherited: bool = False


def same_socket(running: Running, settings: ListenerSettings) -> bool:
    """Whether C{settings} describe C{running}'s socket (port 0: whichever port it got)."""
    old = running.settings
    return (settings.transport, settings.address) == (old.transport, old.address) and settings.port in (
        old.port,
        running.bound_port,
    )


@dataclass(frozen=True)
class Plan:
    """
    The actions of one reload, each naming running listeners by their
    current name.
    """

    #: Same socket: apply the new settings to it (a new name, protocol or limits).
    keep: tuple[tuple[str, ListenerSettings], ...] = ()
    #: Same name, another socket: bind the new one, then retire the old one.
    move: tuple[tuple[str, ListenerSettings], ...] = ()
    #: Same name, another socket, but the socket is systemd's: keep it, say what to run.
    pin: tuple[tuple[str, ListenerSettings], ...] = ()
    #: New listeners, on new sockets.
    add: tuple[ListenerSettings, ...] = ()
    #: Listeners to stop, their sockets wanted by no one.
    remove: tuple[str, ...] = ()

    @property
    def renames(self) -> tuple[tuple[str, str], ...]:
        """(old name, new name) of each kept listener whose name changes."""
        return tuple((old, new.name) for old, new in self.keep if old != new.name)


def plan(running: Sequence[Running], new: Sequence[ListenerSettings]) -> Plan:
    """
    Match C{new} listeners to C{running} ones: same socket and name first,
    then same socket under another name, then same name on another socket.
    Whatever is left is added or removed.
    """
    unclaimed = list(running)
    matched: dict[str, Running] = {}  # new name -> running listener

    def claim(settings: ListenerSettings, candidates: list[Running]) -> None:
        if candidates:
            matched[settings.name] = candidates[0]
            unclaimed.remove(candidates[0])

    for settings in new:
        claim(settings, [r for r in unclaimed if r.name == settings.name and same_socket(r, settings)])
    for settings in new:
        if settings.name not in matched:
            claim(settings, [r for r in unclaimed if same_socket(r, settings)])
    same = set(matched)  # the new names whose socket is already open
    for settings in new:
        if settings.name not in matched:
            claim(settings, [r for r in unclaimed if r.name == settings.name])
    moved = [(matched[s.name], s) for s in new if s.name in matched and s.name not in same]
    return Plan(
        keep=tuple((matched[s.name].name, s) for s in new if s.name in same),
        move=tuple((r.name, s) for r, s in moved if not r.inherited),
        pin=tuple((r.name, s) for r, s in moved if r.inherited),
        add=tuple(s for s in new if s.name not in matched),
        remove=tuple(r.name for r in unclaimed),
    )
