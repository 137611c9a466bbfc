"""
Rates: token buckets, one for a whole flow or one per source host, for the
limits that keep one client from taking what belongs to all (the UDP echo's
datagram and byte rates, the metrics port's connection rates).
"""

from __future__ import annotations

from collections import OrderedDict

#: How many sources have their own bucket at once; the least recently seen go first.
MAX_TRACKED_PEERS = 65536


class TokenBucket:
    """C{rate} tokens a second, at most C{burst} saved up."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Spend C{amount} tokens if there are that many; say whether there were."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False

    def retune(self, rate: float, burst: float, now: float) -> None:
        """
        Change the rate and burst from C{now} on, keeping the tokens saved
        (at most the new burst): a new rate is never a refill.
        """
        if (rate, burst) == (self.rate, self.burst):
            return
        # What accrued until now accrued at the old rate.
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate, burst)
        self.stamp = now
        self.rate = rate
        self.burst = burst


class PeerBuckets:
    """A token bucket per source host, for the most recently seen L{MAX_TRACKED_PEERS} hosts."""

    def __init__(self, rate: float, limit: int = MAX_TRACKED_PEERS) -> None:
        self.rate = rate
        self._limit = limit
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, host: str, now: float) -> bool:
        """Spend one of C{host}'s tokens if it has one; say whether it had."""
        bucket = self._buckets.get(host)
        if bucket is None:
            bucket = self._buckets[host] = TokenBucket(self.rate, self.rate, now)
            if len(self._buckets) > self._limit:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(host)
        return bucket.take(now)

    def retune(self, rate: float, now: float) -> None:
        """Change every host's rate and burst, each keeping what it saved (L{TokenBucket.retune})."""
        if rate == self.rate:
            return
        self.rate = rate
        for bucket in self._buckets.values():
            bucket.retune(rate, rate, now)

    def __len__(self) -> int:
        return len(self._buckets)
