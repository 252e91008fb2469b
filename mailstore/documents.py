"""What one stored message looks like in MongoDB."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bson import Binary

from mailstore.message import IncomingMessage


def to_document(message: IncomingMessage, retention: int) -> dict[str, Any]:
    """The MongoDB document for `message`; `raw` is kept byte-exact; `tls` only when the
    message came over STARTTLS; `auth` only when the authentication checks ran."""
    document = {
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
    if message.tls is not None:
        document["tls"] = {"version": message.tls[0], "cipher": message.tls[1]}
    if message.auth is not None:  # in the same insert: never a second write per message
        document["auth"] = message.auth
    if message.fingerprint:
        document["fp"] = message.fingerprint
    return document
