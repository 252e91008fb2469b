"""What one stored message looks like, and how its selected headers are read."""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import Binary

# Only the header block is parsed on the receiving path; these are kept for listings.
SELECTED_HEADERS = ("subject", "from", "to", "date", "message-id")
MAX_HEADER_VALUE = 998  # RFC 5322 2.1.1 line limit; longer values are cut for listings
_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.default)


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


def selected_headers(raw: bytes) -> dict[str, str]:
    """Decoded values of the selected headers; missing or undecodable ones are left out."""
    end = raw.find(b"\r\n\r\n")
    head = raw if end < 0 else raw[: end + 2]
    try:
        parsed = _HEADER_PARSER.parsebytes(head, headersonly=True)
    except Exception:  # a malformed header block must never block storing the message
        return {}
    result: dict[str, str] = {}
    for name in SELECTED_HEADERS:
        try:
            value = parsed.get(name)
        except Exception:  # noqa: S112 - one bad header must not hide the others
            continue
        if value is not None:
            result[name.replace("-", "_")] = str(value)[:MAX_HEADER_VALUE]
    return result


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
        "headers": selected_headers(message.raw),
    }


def utcnow() -> datetime:
    return datetime.now(UTC)
