"""What one stored message looks like."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import Binary


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """A message as accepted at the end of DATA, before it is stored."""

    id: str
    raw: bytes
    mail_from: str
    rcpt_to: tuple[str, ...]
    peer_ip: str
    helo: str
    received_at: datetime
    received_header: bytes
    # Selected header values from the receiver's bounded scan (mailstore.headers).
    headers: dict[str, str] = field(default_factory=dict)


def to_document(message: IncomingMessage, retention: int) -> dict[str, Any]:
    """The MongoDB document for `message`; `raw` is kept byte-exact."""
    return {
        "_id": message.id,
        "raw": Binary(message.raw),
        "received_header": Binary(message.received_header),
        "mail_from": message.mail_from.lower(),
        "rcpt": [r.lower() for r in message.rcpt_to],
        "peer_ip": message.peer_ip,
        "helo": message.helo,
        "received_at": message.received_at,
        # TTL on an explicit expiry: a changed retention applies to new mail without
        # rebuilding the index.
        "expires_at": message.received_at + timedelta(seconds=retention),
        "size": len(message.raw),
        "headers": message.headers,
    }


def utcnow() -> datetime:
    return datetime.now(UTC)
