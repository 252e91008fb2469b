"""Why a message was not stored: the outcomes a receiver maps to SMTP replies (no driver)."""

from __future__ import annotations

import re

# Driver messages run to kilobytes: the first clause says what happened.
_DRIVER_TAIL = re.compile(r" \(configured timeouts:.*|, Timeout: .*|, Topology Description: .*")


def brief(error: BaseException, limit: int = 160) -> str:
    """`Type: first clause` of an error, for a log line or a health reason."""
    text = str(error).splitlines()[0] if str(error) else ""
    text = _DRIVER_TAIL.sub("", text)[:limit]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class StoreError(Exception):
    """The message was not durably stored; the sender should retry (451)."""


class StoreBusy(StoreError):
    """Too many inserts already in flight; refused without queueing."""


class StoreTimeout(StoreError):
    """The store did not confirm durability within the deadline."""


class StoreRejected(StoreError):
    """This message can never be stored as it is (unencodable, too large): retrying is futile.

    Raised before the message joins a batch, so it fails only its own sender.
    """
