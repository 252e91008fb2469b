"""Who is at the door right now: bounded live statistics of one receiver.

Prometheus counters carry no addresses (rightly: unbounded labels). This module keeps, in
fixed memory, the heaviest clients by refusals, accepted connections, stored messages and
bytes over sliding windows of 1 and 5 minutes, plus refusals by reason, and builds a
compact snapshot the receiver publishes to the store every few seconds. Nothing per
connection is ever written.

Heavy hitters use the Misra-Gries summary ("Frequent"): at most `capacity` counters; a
new key when all are taken lowers every counter by the smallest one and drops the zeros.
Refusals are also summarised per reason (smaller summaries), so the view can say why
each client is refused. For a stream of N events, a client's reported count is never more
than its true count and never less than true - N/(capacity + 1); any client with more
than N/(capacity + 1) events is present. Summaries merge (add, then cut back to `capacity`
the same way), which is how windows are built from 10-second buckets and receivers from
their snapshots. The cost per event is a dict update or two; the cut runs at most once per
`capacity` new keys.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any

BUCKET_SECONDS = 10
WINDOWS = {"1m": 6, "5m": 30}  # buckets per window
CAPACITY = 128  # counters per summary and bucket
REASON_CAPACITY = 32  # counters per refusal reason and bucket
TOP = 10  # clients per measure in a snapshot
TOP_PER_REASON = 5
# Connections are counted as admitted (before any SMTP): a client that opens and closes
# connections as fast as it can is named here, as Postfix's anvil reports the maximal
# connection rate per client.
MEASURES = ("refusals", "connections", "messages", "bytes")


class Frequent:
    """A Misra-Gries heavy-hitters summary (see the module docstring for the bound)."""

    __slots__ = ("capacity", "counts", "total")

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.counts: dict[str, int] = {}
        self.total = 0  # every weight added, for the error bound

    def add(self, key: str, weight: int = 1) -> None:
        self.total += weight
        counts = self.counts
        if key in counts:
            counts[key] += weight
            return
        counts[key] = weight
        if len(counts) > self.capacity:
            self._cut()

    def _cut(self) -> None:
        """Lower every counter by the (capacity+1)-th largest and drop those at zero."""
        counts = self.counts
        floor = heapq.nlargest(self.capacity + 1, counts.values())[-1]
        self.counts = {k: n - floor for k, n in counts.items() if n > floor}

    def merge(self, other: Frequent) -> None:
        self.total += other.total
        for key, count in other.counts.items():
            self.counts[key] = self.counts.get(key, 0) + count
        if len(self.counts) > self.capacity:
            self._cut()

    @property
    def error_bound(self) -> int:
        """No count here is short of the truth by more than this."""
        return self.total // (self.capacity + 1)

    def top(self, n: int = TOP) -> list[tuple[str, int]]:
        return heapq.nlargest(n, self.counts.items(), key=itemgetter(1))


class Bucket:
    __slots__ = ("by_reason", "bytes", "connections", "messages", "reasons", "refusals", "start")

    def __init__(self, start: int) -> None:
        self.start = start
        self.refusals = Frequent()
        self.connections = Frequent()
        self.messages = Frequent()
        self.bytes = Frequent()
        self.reasons: Counter[str] = Counter()  # a small fixed vocabulary
        self.by_reason: dict[str, Frequent] = {}  # who is refused for what


class LiveStats:
    """Per-receiver sliding-window heavy hitters; `record_*` are the hot path."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ring: list[Bucket] = []
        self._current = Bucket(self._slot())
        self.refused_total = 0  # monotonic, for rates
        self.stored_total = 0
        self.stored_bytes_total = 0

    def _slot(self) -> int:
        return int(self._clock()) // BUCKET_SECONDS

    def _bucket(self) -> Bucket:
        slot = self._slot()
        current = self._current
        if current.start != slot:
            self._ring.append(current)
            del self._ring[: max(0, len(self._ring) - max(WINDOWS.values()))]
            current = self._current = Bucket(slot)
        return current

    def record_refusal(self, key: str, reason: str) -> None:
        bucket = self._bucket()
        bucket.refusals.add(key)
        bucket.reasons[reason] += 1
        per_reason = bucket.by_reason.get(reason)
        if per_reason is None:
            per_reason = bucket.by_reason[reason] = Frequent(REASON_CAPACITY)
        per_reason.add(key)
        self.refused_total += 1

    def record_connection(self, key: str) -> None:
        """One connection from `key` admitted (refused ones go to `record_refusal`)."""
        self._bucket().connections.add(key)

    def record_stored(self, key: str, size: int) -> None:
        bucket = self._bucket()
        bucket.messages.add(key)
        bucket.bytes.add(key, size)
        self.stored_total += 1
        self.stored_bytes_total += size

    def window(self, buckets: int) -> dict[str, Any]:
        """Top clients per measure, and refusals by reason, over the last `buckets`."""
        self._bucket()
        recent = [*self._ring[-(buckets - 1) :], self._current] if buckets > 1 else [self._current]
        oldest = self._current.start - buckets + 1
        merged = {measure: Frequent() for measure in MEASURES}
        reasons: Counter[str] = Counter()
        by_reason: dict[str, Frequent] = {}
        for bucket in recent:
            if bucket.start < oldest:
                continue
            for measure in MEASURES:
                merged[measure].merge(getattr(bucket, measure))
            reasons.update(bucket.reasons)
            for reason, summary in bucket.by_reason.items():
                by_reason.setdefault(reason, Frequent(REASON_CAPACITY)).merge(summary)
        return {
            **{m: [[key, n] for key, n in merged[m].top()] for m in MEASURES},
            "error_bound": {m: merged[m].error_bound for m in MEASURES},
            "reasons": dict(reasons),
            "by_reason": {
                reason: [[key, n] for key, n in summary.top(TOP_PER_REASON)]
                for reason, summary in by_reason.items()
            },
        }


def top_open(counts: Mapping[str, int], n: int = TOP) -> list[list[Any]]:
    """The clients holding the most connections now (exact: from admission's table)."""
    return [[key, count] for key, count in heapq.nlargest(n, counts.items(), key=itemgetter(1))]


def snapshot(
    stats: LiveStats,
    *,
    receiver: str,
    open_counts: Mapping[str, int],
    open_total: int,
    stressed: bool,
    store_up: bool | None,
    store_reason: str,
    accepted_total: int,
    spool: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The compact document a receiver publishes (a few KB whatever the load)."""
    return {
        "_id": receiver,
        "receiver": receiver,
        "at": time.time(),
        "stress": stressed,
        "store_up": store_up,
        "store_reason": store_reason,
        "open_connections": open_total,
        # Messages held on this host's disk while the store is away (None: spool off).
        "spool": dict(spool) if spool is not None else None,
        "top_open": top_open(open_counts),
        "totals": {
            "accepted": accepted_total,
            "refused": stats.refused_total,
            "stored": stats.stored_total,
            "stored_bytes": stats.stored_bytes_total,
        },
        "windows": {name: stats.window(buckets) for name, buckets in WINDOWS.items()},
    }


def merge_top(lists: Iterable[list[list[Any]]], n: int = TOP) -> list[list[Any]]:
    """Sum per-receiver top lists into one (a client flooding two receivers adds up)."""
    total: Counter[str] = Counter()
    for entries in lists:
        for key, count in entries:
            total[str(key)] += int(count)
    return [[key, count] for key, count in total.most_common(n)]
