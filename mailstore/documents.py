"""What one stored message looks like in MongoDB: `MessageDocument.fields()` with its bytes
as BSON binary."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bson import Binary

from mailstore.message import MessageDocument, MessageKey


def to_document(message: MessageDocument, retention: float) -> dict[str, Any]:
    """The MongoDB document for `message`: `raw` byte-exact, expiring after `retention`
    seconds (TTL on an explicit expiry: a changed retention applies to new mail without
    rebuilding the index)."""
    document = message.fields()
    document[MessageKey.EXPIRES_AT] = message.received_at + timedelta(seconds=retention)
    document[MessageKey.RAW] = Binary(message.raw)
    document[MessageKey.RECEIVED_HEADER] = Binary(message.received_header)
    return document
