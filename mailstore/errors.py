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


# What the operator must be told first: the store's disk is full (MongoDB's OutOfDiskSpace,
# SQLite's SQLITE_FULL under the embedded store, ENOSPC anywhere), it refused or dropped
# the connection, or it did not answer in time. Matched on text and code only: no driver here.
DISK_FULL_CODES = frozenset({14031})  # OutOfDiskSpace
_DISK_FULL = ("no space left on device", "disk is full", "disk full", "outofdiskspace")
_REFUSED = ("connection refused", "econnrefused", "errno 111", "connect call failed")
_LOST = ("connection is already closed", "connection is closed", "reset by peer", "broken pipe")
_TIMED_OUT_CODES = frozenset({50, 64, 89, 202, 262})  # MaxTimeMSExpired, WTimeout, ...


def cause(error: BaseException, within: float, awaited: str = "durable write") -> str:
    """A one-line reason that names the cause first (`disk full: ...`, `refused: ...`,
    `lost: ...`, `timeout: ...`), for a health reason and a log line."""
    text = str(error).lower()
    code = getattr(error, "code", None)
    if code in DISK_FULL_CODES or any(marker in text for marker in _DISK_FULL):
        return f"disk full: {brief(error)}"
    if any(marker in text for marker in _REFUSED):
        return "refused: the store does not accept connections"
    if any(marker in text for marker in _LOST):
        return "lost: the store closed the connection"
    if isinstance(error, TimeoutError) or code in _TIMED_OUT_CODES or "timed out" in text:
        return f"timeout: no {awaited} within {within:g}s"
    return brief(error)


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
