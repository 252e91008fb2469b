"""What one stored message looks like in MongoDB: `MessageDocument.fields()` with its bytes
as BSON binary, its expiry as a number too, its first mailbox's key, and the entries of
its other mailboxes (mailstore.mailboxes)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import zstandard
from bson import Binary

from mailstore import mailboxes
from mailstore.message import MessageDocument, MessageKey

# Compress from this size on, and only when it saves a tenth: smaller bodies gain little
# and pay the frame's header (zstd level 3, as Mailpit).
COMPRESS_FROM = 512
COMPRESS_LEVEL = 3


def compressed(raw: bytes) -> bytes | None:
    """`raw` as a zstd frame (its size recorded in it), or None when that does not pay."""
    if len(raw) < COMPRESS_FROM:
        return None
    frame = zstandard.ZstdCompressor(level=COMPRESS_LEVEL).compress(raw)
    return frame if len(frame) <= len(raw) * 0.9 else None


def expiry(when: datetime) -> int:
    """An expiry date as whole POSIX seconds, rounded up (never swept early)."""
    return math.ceil(when.timestamp())


def to_document(
    message: MessageDocument, retention: float, *, compress: bool = False
) -> dict[str, Any]:
    """The MongoDB document for `message`: `raw` byte-exact (or, if `compress` and it
    pays, `raw_zstd`), expiring after `retention` seconds (TTL on an explicit expiry: a
    changed retention applies to new mail without rebuilding the index)."""
    expires_at = message.received_at + timedelta(seconds=retention)
    document = message.fields()
    document[MessageKey.EXPIRES_AT] = expires_at
    frame = compressed(message.raw) if compress else None
    if frame is not None:
        del document[MessageKey.RAW]
        document[MessageKey.RAW_ZSTD] = Binary(frame)
    else:
        document[MessageKey.RAW] = Binary(message.raw)
    document[MessageKey.RECEIVED_HEADER] = Binary(message.received_header)
    document[MessageKey.EXPIRY] = expiry(expires_at)
    box, _ = mailboxes.split(message.id, message.rcpt)
    if box is not None:
        document[MessageKey.BOX] = box
    return document


def entries_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The mailbox entries of a stored message document (as `to_document` made it): one
    for each mailbox but the first, whose key the message keeps itself."""
    message_id = str(document[MessageKey.ID])
    _, others = mailboxes.split(message_id, document[MessageKey.RCPT])
    return mailboxes.entries(message_id, others, int(document[MessageKey.EXPIRY]))
