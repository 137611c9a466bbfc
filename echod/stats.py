"""
Counters kept per listener, read by the log and by whoever reports status.
"""

from dataclasses import dataclass


@dataclass(slots=True)
class ListenerStats:
    """What one listener has done since the daemon started."""

    active: int = 0
    accepted: int = 0
    refused: int = 0
    timed_out: int = 0
    protocol_errors: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0

    def summary(self) -> str:
        """A short human line, e.g. for C{systemctl status}."""
        return (
            f"{self.active} open, {self.accepted} accepted, {self.refused} refused, "
            f"{self.timed_out} timed out, {self.protocol_errors} bad requests, "
            f"{self.bytes_sent} bytes echoed"
        )
