"""Whether the store takes writes: judged from real inserts and write probes, with hysteresis.

A ping says the server answers, not that it can write: a full disk or a stalled journal
answers pings while every insert fails. So the evidence here is writes: each insert the
sessions attempt, and a small probe write the health loop makes every interval (the only
evidence while the receiver sends nothing, or refuses at once because the store is down).
Several failures in a row are needed to call it down and several successes to call it up
again, so one slow answer on a busy store never flaps every receiver out of the pool.
"""

from __future__ import annotations

from collections.abc import Callable

DOWN_AFTER = 3  # consecutive failed writes
UP_AFTER = 2  # consecutive successful writes

Transition = Callable[[bool, str], None]


class StoreHealth:
    """The judge of store health; `up` is None until the first evidence."""

    __slots__ = ("_failures", "_on_change", "_successes", "reason", "up")

    def __init__(self, on_change: Transition | None = None) -> None:
        self.up: bool | None = None
        self.reason = "no answer from the store yet"
        self._failures = 0
        self._successes = 0
        self._on_change = on_change

    def record(self, ok: bool, reason: str = "") -> None:
        """One write's outcome: `reason` says why it failed."""
        if ok:
            self._failures = 0
            self._successes += 1
            if self.up is not True and (self.up is None or self._successes >= UP_AFTER):
                self._change(True, "ready")
        else:
            self._successes = 0
            self._failures += 1
            self.reason = reason or "write failed"
            if self.up is not False and (self.up is None or self._failures >= DOWN_AFTER):
                self._change(False, self.reason)

    def _change(self, up: bool, reason: str) -> None:
        self.up = up
        self.reason = reason
        if self._on_change is not None:
            self._on_change(up, reason)
