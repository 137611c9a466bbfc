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
    #: Connections closed at once, coming from outside trusted_proxies, and
    #: those closed for a bad or late PROXY header.
    untrusted_proxies: int = 0
    bad_proxy_headers: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    datagrams: int = 0
    dropped_source: int = 0
    dropped_own: int = 0
    dropped_rate: int = 0

    def stream_summary(self) -> str:
        """The counters of a TCP listener, for the status line."""
        text = f"{self.active} open, {self.accepted} served, {self.refused} refused"
        if self.timed_out:
            text += f", {self.timed_out} timed out"
        if self.protocol_errors:
            text += f", {self.protocol_errors} bad"
        if self.untrusted_proxies:
            text += f", {self.untrusted_proxies} from untrusted proxies"
        if self.bad_proxy_headers:
            text += f", {self.bad_proxy_headers} bad PROXY headers"
        return text

    def datagram_summary(self) -> str:
        """The counters of a UDP listener, for the status line."""
        return (
            f"{self.datagrams} echoed, {self.dropped_source + self.dropped_own + self.dropped_rate} dropped"
        )
