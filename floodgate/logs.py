"""Logging set-up: one line per record, and identical records deduplicated.

The incident we design against: an alert per failed event flooded a mailbox with
thousands of identical messages. Here a record identical to one logged within the last
interval is dropped and counted; the next time it is let through it says how many
repeats were suppressed.
"""

from __future__ import annotations

import logging
import sys
import time

MAX_KEYS = 1_000


class DedupFilter(logging.Filter):
    """Drops records identical to one let through less than `interval` seconds ago."""

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.getMessage()[:300])
        now = time.monotonic()
        last, suppressed = self._seen.get(key, (0.0, 0))
        if now - last < self.interval:
            self._seen[key] = (last, suppressed + 1)
            return False
        if len(self._seen) >= MAX_KEYS:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if suppressed:
            record.msg = f"{record.getMessage()} (suppressed {suppressed} identical lines)"
            record.args = None
        return True


def configure(level: str = "INFO", interval: float = 10.0) -> None:
    """Log to stderr, deduplicated; quiet the chatty libraries."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(DedupFilter(interval))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosmtpd's PROXY parser logs the raw text of a malformed header: the session counts
    # and summarises those instead (event bad_proxy_header), so no client bytes reach a log.
    logging.getLogger("mail.debug").setLevel(logging.CRITICAL)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("pymongo").setLevel(logging.WARNING)
