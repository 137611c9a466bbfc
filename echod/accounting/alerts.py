"""
The alerts that stand now: problems an admin must act on (a reload that
failed, a socket that could not be bound), logged once in full when raised,
and summed up at the head of the status line until cleared. Alerts are
keyed by C{(family, name)}, e.g. C{("bind", "echo")}, and cleared by exact
key or by whole family: never by a prefix of a name, which would let
listener C{a} clear the alert of listener C{ab}.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.logger import Logger

#: An alert's key: its family (C{"bind"}, C{"reload"}, ...) and what it is about, or C{None}.
AlertKey = tuple[str, str | None]


class Alerts:
    """The alerts standing now, in the order they were first raised."""

    def __init__(self, log: Logger | None = None) -> None:
        #: Whose log the warnings go to: the daemon's, by default this module's.
        self.log = log if log is not None else Logger()
        self._summaries: dict[AlertKey, str] = {}
        #: Every family ever raised, for the metrics: one whose alerts were cleared counts 0.
        self._families: dict[str, None] = {}

    def raise_(self, family: str, name: str | None, summary: str, *, log: str | None = None) -> None:
        """
        Keep C{summary} in the status line until cleared; and log C{log}, the
        whole story, as a warning. C{log=None} logs nothing: for a caller that
        tells it its own way (with fields of its own, or as an error).
        """
        self._summaries[(family, name)] = summary
        self._families[family] = None
        if log is not None:
            self.log.warn("{message}", message=log)

    def clear(self, family: str, name: str | None = None) -> None:
        """Clear the one alert C{(family, name)}, if it stands."""
        self._summaries.pop((family, name), None)

    def clear_family(self, family: str) -> None:
        """Clear every alert of C{family}."""
        for key in [key for key in self._summaries if key[0] == family]:
            del self._summaries[key]

    def keep_only(self, family: str, names: Iterable[str]) -> None:
        """Clear the alerts of C{family} about anything but C{names} (e.g. listeners gone)."""
        keep = set(names)
        for key in [key for key in self._summaries if key[0] == family and key[1] not in keep]:
            del self._summaries[key]

    def keys(self) -> list[AlertKey]:
        """The keys of the alerts standing."""
        return list(self._summaries)

    def counts(self) -> dict[str, int]:
        """How many alerts stand, by family: every family ever raised, 0 for those cleared since."""
        counts = dict.fromkeys(self._families, 0)
        for family, _ in self._summaries:
            counts[family] += 1
        return counts

    def summaries(self) -> list[str]:
        """Each distinct summary once, in the order first raised."""
        return list(dict.fromkeys(self._summaries.values()))
