"""The accountant: counts connections and spends rate tokens per client key.

It only counts; `admission` compares the counts with the limits and decides. Every table
is bounded: concurrent-connection entries exist only while a connection is open, and the
rate and hit tables are LRU-capped, so an attacker rotating addresses costs a bounded
amount of memory.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Clock = Callable[[], float]


class ConnectionCounts:
    """Open connections, in all and per client key."""

    __slots__ = ("_per_key", "total")

    def __init__(self) -> None:
        self.total = 0
        self._per_key: dict[str, int] = {}

    def of(self, key: str) -> int:
        return self._per_key.get(key, 0)

    def acquire(self, key: str) -> None:
        self.total += 1
        self._per_key[key] = self._per_key.get(key, 0) + 1

    def release(self, key: str) -> None:
        self.total -= 1
        count = self._per_key.get(key, 0) - 1
        if count > 0:
            self._per_key[key] = count
        else:
            self._per_key.pop(key, None)

    @property
    def keys_tracked(self) -> int:
        return len(self._per_key)

    @property
    def per_key(self) -> Mapping[str, int]:
        """Open connections per client key (read-only use: live statistics)."""
        return self._per_key


class RateTable:
    """Token buckets per key: `rate` tokens per minute, bursting up to `rate`.

    Least recently used keys are dropped past `capacity`; a dropped key starts again
    with a full bucket, which errs on the side of legitimate senders.
    """

    __slots__ = ("_buckets", "_capacity", "_clock")

    def __init__(self, capacity: int, clock: Clock) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._capacity = capacity
        self._clock = clock

    def take(self, key: str, rate_per_minute: int, amount: int = 1) -> bool:
        """Spend `amount` tokens; False (and nothing spent) if the bucket lacks them."""
        if rate_per_minute <= 0:
            return True
        now = self._clock()
        tokens, stamp = self._buckets.pop(key, (float(rate_per_minute), now))
        tokens = min(float(rate_per_minute), tokens + (now - stamp) * rate_per_minute / 60.0)
        allowed = tokens >= amount
        if allowed:
            tokens -= amount
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._capacity:
            self._buckets.popitem(last=False)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)


class HitCounter:
    """How often each key hit a limit within a sliding window (for auto-ban)."""

    __slots__ = ("_capacity", "_clock", "_hits", "_window")

    def __init__(self, window: float, capacity: int, clock: Clock) -> None:
        self._hits: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._window = window
        self._capacity = capacity
        self._clock = clock

    def hit(self, key: str) -> int:
        """Record one hit; return the hits within the current window."""
        now = self._clock()
        count, start = self._hits.pop(key, (0, now))
        if now - start > self._window:
            count, start = 0, now
        count += 1
        self._hits[key] = (count, start)
        if len(self._hits) > self._capacity:
            self._hits.popitem(last=False)
        return count

    def count(self, key: str) -> int:
        """The hits within the current window, recording none."""
        count, start = self._hits.get(key, (0, 0.0))
        return count if self._clock() - start <= self._window else 0

    def forget(self, key: str) -> None:
        self._hits.pop(key, None)

    def __len__(self) -> int:
        return len(self._hits)


@dataclass(frozen=True, slots=True)
class Accountant:
    """Every count admission judges by, in one value handed to it (anvil's role).

    `Admission` only compares these with the limits. The door's accountant counts every
    connection of the host, whatever the number of workers; the dialogue's
    (receiver.smtp.policy) holds the per-client message, recipient and handshake rates and
    the violations of the clients its worker serves: the door sends every connection of
    one client to the same worker, so those are exact for the host too.
    """

    counts: ConnectionCounts
    rates: RateTable
    violations: HitCounter  # protocol violations, toward an auto-ban
    refusals: HitCounter  # connections refused at connect, toward an auto-ban

    @classmethod
    def local(cls, window: float, capacity: int, clock: Clock) -> Accountant:
        """Counts for the clients of this process alone, bounded by `capacity` keys."""
        return cls(
            ConnectionCounts(),
            RateTable(capacity, clock),
            HitCounter(window, capacity, clock),
            HitCounter(window, capacity, clock),
        )
