"""DNS for the checks: cached, shared, never raising.

Every question goes through the receiver's resolver (receiver.resolver): one UDP query,
one timer. Answers and "no such record" are kept in a bounded TTL cache (the resolver does
not report record TTLs, so one fixed lifetime applies); failures are never cached, so a
resolver that recovers is asked again at once. Two messages asking the same question at
the same time share one query.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from receiver.resolver import Answer, Resolver

__all__ = ["ERROR", "FOUND", "VOID", "Lookups", "Result", "TtlCache"]

FOUND, VOID, ERROR = "found", "void", "error"
K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Result:
    """`found` (values), `void` (NXDOMAIN or no record of the type: RFC 7208 4.6.4), or
    `error` (timeout, SERVFAIL, garbage, throttled: a temporary failure)."""

    status: str
    values: tuple[str, ...] = ()
    why: str = ""


def _result(answer: Answer) -> Result:
    if answer.outcome == "answer":
        return Result(FOUND, answer.values)
    if answer.outcome == "nxdomain":
        return Result(VOID)
    return Result(ERROR, why=f"DNS {answer.outcome}")


class TtlCache(Generic[K, V]):
    """At most `size` entries, each for `ttl` seconds; when full, the oldest goes.

    A dict in insertion order and one clock read per access: cheaper per lookup than a
    general cache, and this runs for every message.
    """

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic):
        self._entries: dict[K, tuple[float, V]] = {}
        self._size = size
        self._ttl = ttl
        self._clock = clock

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] < self._clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        entries = self._entries
        entries.pop(key, None)
        if len(entries) >= self._size:
            del entries[next(iter(entries))]
        entries[key] = (self._clock() + self._ttl, value)

    def __len__(self) -> int:
        return len(self._entries)


class Lookups:
    """Cached questions to one resolver, each under `timeout` seconds."""

    def __init__(self, resolver: Resolver, *, timeout: float, size: int, ttl: float) -> None:
        self.resolver = resolver
        self.timeout = timeout
        self._cache: TtlCache[tuple[str, int], Result] = TtlCache(size, ttl)
        self._asking: dict[tuple[str, int], asyncio.Future[Answer]] = {}
        self.asked = 0  # queries sent (the cache missed): for tests and the bench

    async def ask(self, name: str, qtype: int) -> Result:
        key = (name.lower().rstrip("."), qtype)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        if not _askable(key[0]):
            return Result(VOID)  # no DNS name can be this: nothing to ask (RFC 1035 2.3.4)
        future = self._asking.get(key)
        if future is None:
            self.asked += 1
            future = self.resolver.lookup(key[0], qtype, self.timeout)
            self._asking[key] = future
            future.add_done_callback(lambda _: self._asking.pop(key, None))
        result = _result(await asyncio.shield(future))
        if result.status != ERROR:
            self._cache.put(key, result)
        return result


def _askable(name: str) -> bool:
    if not name or len(name) > 253 or not name.isascii():
        return False
    return all(0 < len(label) <= 63 for label in name.split("."))
