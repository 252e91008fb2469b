"""A transaction as the dialogue ends it: who sent, to whom, and how (RFC 5321 2.3.1)."""

from __future__ import annotations

from dataclasses import dataclass

from mailstore.message import TlsInfo
from receiver.door.client import Client


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the dialogue knows of one message, handed to the intake with its bytes."""

    client: Client
    helo: str  # as the client said it (sanitised where it is written: receiver.intake)
    esmtp: bool
    sender: str  # canonical; "" for the null sender
    recipients: tuple[str, ...]  # canonical, each once, in the order accepted
    utf8: bool = False  # SMTPUTF8 (RFC 6531)
    tls: TlsInfo | None = None  # (version, cipher) when it came over STARTTLS
