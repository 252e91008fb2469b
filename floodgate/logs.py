"""Logging set-up: one line per record, and identical records deduplicated.

The incident we design against: an alert per failed event flooded a mailbox with
thousands of identical messages. Here a record identical to one logged within the last
interval is dropped and counted; the next time it is let through it says how many
repeats were suppressed. A change of state is never dropped: after store_down, store_up,
store_down within the interval, the log must not end on the wrong state.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from receiver.telemetry.events import logfmt

MAX_KEYS = 1_000
# Events that say a state changed (each is logged once per change by its owner, so they
# cannot flood): never deduplicated.
STATE_CHANGES = frozenset(
    {"store_down", "store_up", "stress_on", "stress_off", "spool_on", "spool_off"}
)


class DedupFilter(logging.Filter):
    """Drops records identical to one let through less than `interval` seconds ago."""

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, "fields", None)
        if fields is not None and fields.get("event") in STATE_CHANGES:
            return True
        text = record.getMessage() if fields is None else repr(sorted(fields.items()))
        key = (record.name, text[:300])
        now = time.monotonic()
        last, suppressed = self._seen.get(key, (0.0, 0))
        if now - last < self.interval:
            self._seen[key] = (last, suppressed + 1)
            return False
        if len(self._seen) >= MAX_KEYS:
            self._seen.clear()
        self._seen[key] = (now, 0)
        if suppressed:
            record.suppressed = suppressed
        return True


class Formatter(logging.Formatter):
    """One line per record, ours and every library's alike: logfmt, or JSON lines.

    A structured record (from `receiver.telemetry.events.emit` or the summary log) carries
    its fields;
    any other record becomes `msg=...`. Values are quoted and escaped (see `quote`).
    """

    def __init__(self, style: str = "logfmt", worker: str | None = None) -> None:
        super().__init__()
        self.json = style == "json"
        self.worker = worker  # a worker process's lines say which worker they come from

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if self.worker is not None:
            fields["worker"] = self.worker
        structured = getattr(record, "fields", None)
        if structured is not None:
            fields.update(structured)
        else:
            fields["msg"] = record.getMessage()
        suppressed = getattr(record, "suppressed", 0)
        if suppressed:
            fields["suppressed"] = suppressed
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        if self.json:
            return json.dumps(fields, default=str)
        return logfmt(fields)


def configure(
    level: str = "INFO", interval: float = 10.0, style: str = "logfmt", worker: str | None = None
) -> None:
    """Log to stderr in one format (logfmt or JSON), deduplicated; quiet chatty libraries.
    uvicorn's loggers propagate to the root handler, so its lines share the format. A
    worker process names itself (`worker=w2`) on every line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Formatter(style, worker))
    handler.addFilter(DedupFilter(interval))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosmtpd's PROXY parser logs the raw text of a malformed header: the door counts and
    # summarises those instead (event bad_proxy_header), so no client bytes reach a log.
    logging.getLogger("mail.debug").setLevel(logging.CRITICAL)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("pymongo").setLevel(logging.WARNING)
