"""Exactly-once across sender retries: remember messages whose store outcome was unknown.

A message that got `451` because its write was not confirmed in time (a stalled primary,
a cut connection) may still land once the store resumes. The sender retries the same
message; without this, it would be stored twice. Each such message's fingerprint (a hash
of its envelope and raw bytes) is remembered with its id for a day, in a bounded table.
When the same fingerprint arrives again it is stored under the same id: if the first write
did land, the insert is a duplicate key, answered `250` with that id and nothing stored;
if it did not, it is stored now. Either way, one copy.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable

from cachetools import TTLCache

CAPACITY = 50_000  # unknown outcomes remembered; a store outage rarely leaves more
TTL = 86_400.0  # seconds: senders retry for days, but most within the hour


class RetryMemory:
    """Fingerprint -> message id, for messages whose outcome the sender never learnt."""

    __slots__ = ("_ids",)

    def __init__(
        self,
        capacity: int = CAPACITY,
        ttl: float = TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ids: TTLCache[bytes, str] = TTLCache(maxsize=capacity, ttl=ttl, timer=clock)

    @staticmethod
    def fingerprint(sender: str, recipients: Iterable[str], raw: bytes) -> bytes:
        """The same message from the same sender to the same recipients: one fingerprint."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update("\0".join([sender, *recipients]).encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
        digest.update(raw)
        return digest.digest()

    def remember(self, fingerprint: bytes, message_id: str) -> None:
        """The sender got 451 but the store may still write `message_id`."""
        self._ids[fingerprint] = message_id

    def recall(self, fingerprint: bytes) -> str | None:
        """The id to store a retried message under, or None if it is new."""
        return self._ids.get(fingerprint)

    def forget(self, fingerprint: bytes) -> None:
        """The message is stored: a later identical one is a new message."""
        self._ids.pop(fingerprint, None)

    def __len__(self) -> int:
        return len(self._ids)
