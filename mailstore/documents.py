"""What one stored message looks like in MongoDB: `MessageDocument.fields()` with its bytes
as BSON binary, its expiry as a number too, and its mailbox entries."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from bson import Binary

from mailstore import mailboxes
from mailstore.message import MessageDocument, MessageKey


def expiry(when: datetime) -> int:
    """An expiry date as whole POSIX seconds, rounded up (never swept early)."""
    return math.ceil(when.timestamp())


def to_document(message: MessageDocument, retention: float) -> dict[str, Any]:
    """The MongoDB document for `message`: `raw` byte-exact, expiring after `retention`
    seconds (TTL on an explicit expiry: a changed retention applies to new mail without
    rebuilding the index)."""
    expiring = message.expiring(retention)
    document = expiring.fields()
    document[MessageKey.RAW] = Binary(message.raw)
    document[MessageKey.RECEIVED_HEADER] = Binary(message.received_header)
    assert expiring.expires_at is not None
    document[MessageKey.EXPIRY] = expiry(expiring.expires_at)
    return document


def entries_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The mailbox entries of a stored message document (as `to_document` made it)."""
    return mailboxes.entries(
        str(document[MessageKey.ID]), document[MessageKey.RCPT], int(document[MessageKey.EXPIRY])
    )
