"""Signatures as the Standard Webhooks specification defines them: the signed content is
`{webhook-id}.{webhook-timestamp}.{body}`, signed with HMAC-SHA256 under the endpoint's
secret, sent as `webhook-signature: v1,<base64>`. The secret is `whsec_` and the base64 of
its key bytes; the receiving end verifies with any of the published libraries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"
KEY_BYTES = 32  # the specification asks for 24 to 64 random bytes


def new_secret() -> str:
    """A fresh endpoint secret, `whsec_<base64 of 32 random bytes>`."""
    return PREFIX + base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def key_of(secret: str) -> bytes:
    """The key bytes of a `whsec_` secret."""
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret[len(PREFIX) :], validate=True)


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,` and the base64 HMAC-SHA256 of
    `id.timestamp.body`."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key_of(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of one attempt. The id stays the same on every retry of a
    delivery (a receiving end deduplicates by it); the timestamp is the attempt's, so the
    signature is fresh within the receiving end's tolerance window."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, webhook_id, timestamp, body),
    }
