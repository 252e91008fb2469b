"""Answers of successful render jobs, kept: a stored message never changes, so a job asked
again (a view reloaded, the links polled by a test script, an attachment downloaded twice)
is answered from memory instead of a worker. Bounded in bytes (least recently used out
first; an answer larger than an eighth of the cache is not kept) and forgotten when its
message is deleted."""

from __future__ import annotations

from typing import Any

from cachetools import LRUCache

__all__ = ["RenderCache", "size_of"]

SLOT = 64  # bytes counted for a number, None, or the bookkeeping of an entry


def size_of(value: Any) -> int:
    """Roughly the bytes `value` (a worker's JSON-like answer) holds: characters of its
    strings and bytes, plus a slot for everything else. Linear in the answer, which the
    worker bounded."""
    if isinstance(value, str | bytes):
        return len(value) + SLOT
    if isinstance(value, dict):
        return SLOT + sum(size_of(k) + size_of(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return SLOT + sum(size_of(item) for item in value)
    return SLOT


class _Entries(LRUCache[str, Any]):
    """An LRU cache that tells its owner what it evicts (so the per-message index stays
    exact)."""

    def __init__(self, maxsize: int, owner: RenderCache) -> None:
        super().__init__(maxsize, getsizeof=lambda entry: entry[0])
        self._owner = owner

    def popitem(self) -> tuple[str, Any]:
        key, entry = super().popitem()
        self._owner._unindex(key)
        return key, entry


class RenderCache:
    """Answers by job key (`<message id>/<job>`), at most `size` bytes in all."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries = _Entries(max(size, 1), self)
        self._by_message: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return int(self._entries.currsize)

    def get(self, key: str) -> Any | None:
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def put(self, key: str, answer: Any, size: int) -> None:
        """Keep `answer` (about `size` bytes) of job `key`, room allowing."""
        size += SLOT
        if self.size == 0 or size > self.size // 8:
            return
        self._entries[key] = (size, answer)
        self._by_message.setdefault(_message(key), set()).add(key)

    def forget(self, message: str) -> None:
        """Drop every answer about `message` (it was deleted)."""
        for key in self._by_message.pop(message, set()):
            self._entries.pop(key, None)

    def _unindex(self, key: str) -> None:
        message = _message(key)
        keys = self._by_message.get(message)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_message[message]


def _message(key: str) -> str:
    """The message id a job key (`<message id>/<job>`) names."""
    return key.partition("/")[0]
