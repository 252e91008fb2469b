"""A message as the receiver hands it to the store: plain values, no driver types."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


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
    tls: tuple[str, str] | None = None  # (version, cipher) when it came over STARTTLS
    # Envelope and bytes hashed (receiver.delivery.fingerprint): the same message sent
    # again, a sender's retry, is the same message; stored under a unique index.
    fingerprint: str = ""
    # Authentication verdicts (receiver.authcheck), stored as `auth`; None: not checked.
    auth: dict[str, Any] | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)
