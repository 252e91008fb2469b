"""Frequent events folded into one log line per event per interval (rate-limited, deduped):
a count and the busiest client keys, so a flood of refusals cannot flood the log."""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable

from receiver.telemetry.events import log, logfmt


class SummaryLog:
    """Folds repeated events into one line per event per interval (rate-limited, deduped)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._counts: dict[str, Tally[str]] = {}
        self._since = clock()

    def record(self, event: str, key: str) -> None:
        """Count one occurrence of `event` for client `key`; nothing is logged yet."""
        tally = self._counts.get(event)
        if tally is None:
            tally = self._counts[event] = Tally()
        if key in tally or len(tally) < 10_000:  # bounded: keys past the cap are not named
            tally[key] += 1
        else:
            tally["(other)"] += 1

    def flush(self, force: bool = False) -> list[str]:
        """Log (and return) the summary lines if the interval has passed."""
        now = self._clock()
        if not force and now - self._since < self._interval:
            return []
        lines = []
        seconds = max(now - self._since, 0.001)
        for event, tally in sorted(self._counts.items()):
            fields = {
                "event": event,
                "count": sum(tally.values()),
                "clients": len(tally),
                "seconds": f"{seconds:.0f}",
                "top": " ".join(f"{k}:{n}" for k, n in tally.most_common(3)),
            }
            log.info(event, extra={"fields": fields})
            lines.append(logfmt(fields))
        self._counts.clear()
        self._since = now
        return lines
