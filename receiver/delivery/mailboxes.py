"""Each mailbox keeps at most `limit` messages: the oldest are trimmed, in the background.

One alerting loop can send thousands of identical messages to one mailbox; a disposable
inbox needs the newest few hundred. The receiver counts the messages it stores per mailbox
in a bounded table; when a mailbox has had `limit + slack` since it was last trimmed, the
store trims it back to `limit` (oldest first), one mailbox at a time, off the SMTP path.
After a restart the counts start again from zero, so a mailbox is trimmed at the latest
after `limit + slack` more messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from cachetools import LRUCache

from receiver.telemetry.events import emit

CAPACITY = 100_000  # mailboxes counted; the least recently used are forgotten
MAX_PENDING = 1_000  # mailboxes waiting for a trim

Trim = Callable[[str, int], Awaitable[int]]
Spawn = Callable[[Any], Any]


class MailboxKeeper:
    """See the module docstring; `stored` is called once per stored message."""

    def __init__(self, limit: int, trim: Trim, spawn: Spawn, capacity: int = CAPACITY) -> None:
        self.limit = limit
        self.slack = max(10, limit // 10)  # trim in batches, not on every message
        self._trim = trim
        self._spawn = spawn
        self._counts: LRUCache[str, int] = LRUCache(capacity)
        self._queue: deque[str] = deque()
        self._pending: set[str] = set()
        self._working = False
        self.trimmed = 0

    def stored(self, mailboxes: Iterable[str]) -> None:
        if self.limit <= 0:
            return
        for mailbox in mailboxes:
            count = self._counts.get(mailbox, 0) + 1
            self._counts[mailbox] = count
            due = count >= self.limit + self.slack and mailbox not in self._pending
            if due and len(self._pending) < MAX_PENDING:
                self._pending.add(mailbox)
                self._queue.append(mailbox)
        if self._queue and not self._working:
            self._working = True
            self._spawn(self._work())

    async def _work(self) -> None:
        try:
            while self._queue:
                mailbox = self._queue.popleft()
                try:
                    self.trimmed += await self._trim(mailbox, self.limit)
                except Exception as error:  # the next `slack` messages try again
                    emit("mailbox_trim_failed", error=type(error).__name__)
                    self._counts[mailbox] = self.limit
                else:
                    self._counts[mailbox] = self.limit  # it holds `limit` now
                finally:
                    self._pending.discard(mailbox)
        finally:
            self._working = False
