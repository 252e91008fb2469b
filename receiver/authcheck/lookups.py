"""DNS for the checks: cached, shared, never raising.

Every question goes through the receiver's resolver (receiver.resolver): one UDP query,
one timer. Answers and "no such record" are kept in a bounded TTL cache (the resolver does
not report record TTLs, so one fixed lifetime applies); failures are never cached, so a
resolver that recovers is asked again at once. Two messages asking the same question at
the same time share one query.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cachetools import TTLCache

from receiver.resolver import Answer, Resolver

__all__ = ["ERROR", "FOUND", "VOID", "Lookups", "Result"]

FOUND, VOID, ERROR = "found", "void", "error"


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


class Lookups:
    """Cached questions to one resolver, each under `timeout` seconds."""

    def __init__(self, resolver: Resolver, *, timeout: float, size: int, ttl: float) -> None:
        self.resolver = resolver
        self.timeout = timeout
        self._cache: TTLCache[tuple[str, int], Result] = TTLCache(maxsize=size, ttl=ttl)
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
            self._cache[key] = result
        return result


def _askable(name: str) -> bool:
    if not name or len(name) > 253 or not name.isascii():
        return False
    return all(0 < len(label) <= 63 for label in name.split("."))
