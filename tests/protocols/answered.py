"""A stand-in for a datagram port that records what a datagram handler answers, for tests without sockets."""

from __future__ import annotations


class RecordingPort:
    """Records each answer, (data, peer), in C{sent}."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple]] = []

    def answer(self, data: bytes, peer: tuple, messages: list) -> None:
        self.sent.append((data, peer))
