"""Log lines: every one goes through `emit`, one named event with its fields (logfmt).

Rare events (a state change, a ban, a worker's death) are one line each; frequent ones
(refusals, closes) are never logged one by one but folded by `receiver.telemetry.summary`
into one line per event per interval. Metrics count the same events under the same names
(receiver.vocabulary), with label values from a bounded set: never an IP, address or
domain.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping

log = logging.getLogger("floodgate.receiver")
# Events that say something is wrong; every other event is routine (INFO).
WARNING_EVENTS = frozenset(
    {
        "store_down",
        "autoban",
        "stress_on",
        "indexes_not_ensured",
        "retention_sweep_failed",
        "spool_failed",
        "spool_record_quarantined",
        "spool_damaged",
        "spool_replay_paused",
        "dnsbl_disabled",
        "worker_gone",
        "worker_keeps_dying",
        "screen_exception",
        "store_exception",
        "tls_reload_failed",
        "auth_exception",
        "auth_worker_failed",
        "webhook_disabled",
        "webhook_store_error",
        "webhook_exception",
    }
)
_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+,\-\[\]]+")


def quote(value: object) -> str:
    """A logfmt value: as is when plain, else double-quoted with quotes, backslashes and
    control characters escaped, so no client byte can forge or break a log line."""
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text)


def logfmt(fields: Mapping[str, object]) -> str:
    return " ".join(f"{key}={quote(value)}" for key, value in fields.items())


def emit(event: str, **fields: object) -> None:
    """Log one rare event as one structured record (`event=name key=value ...`): INFO when
    routine, WARNING when something is wrong."""
    level = logging.WARNING if event in WARNING_EVENTS else logging.INFO
    log.log(level, event, extra={"fields": {"event": event, **fields}})
