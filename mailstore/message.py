"""The one shape of a stored message: what the receiver builds at the end of DATA, what the
spool keeps on disk, what the store holds and what every reader gets back.

Plain values, no driver types. The field names are the document's keys (`MessageKey`),
with one exception Python imposes: the field `id` is the document's `_id`. Writers turn a
`MessageDocument` into a document with `fields()` (mailstore.documents wraps the bytes for
the driver); readers, the API and live push included, turn what the store returns back
into one with `MessageDocument.read`, never by bare keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, NamedTuple

import zstandard


class MessageKey(StrEnum):
    """The keys of a stored message document (queries and projections use these)."""

    ID = "_id"
    RAW = "raw"
    # The bytes compressed (a zstd frame), in place of `raw`, where the store compresses
    # them (mailstore.documents); readers get `raw` back either way.
    RAW_ZSTD = "raw_zstd"
    RECEIVED_HEADER = "received_header"
    MAIL_FROM = "mail_from"
    RCPT = "rcpt"
    PEER_IP = "peer_ip"
    HELO = "helo"
    RECEIVED_AT = "received_at"
    EXPIRES_AT = "expires_at"  # a date: MongoDB's TTL index
    # The same instant in whole POSIX seconds, set by the store: what the retention sweep
    # ranges over. Dates are not index-comparable on the embedded store (see
    # mailstore.queries); a number is, on every store.
    EXPIRY = "expiry"
    # The first mailbox's index key (mailstore.mailboxes), set by the store; gone once the
    # message has left that mailbox.
    BOX = "box"
    SIZE = "size"
    HEADERS = "headers"
    TLS = "tls"
    FP = "fp"
    AUTH = "auth"


class TlsInfo(NamedTuple):
    """How a message came over STARTTLS."""

    version: str
    cipher: str


@dataclass(frozen=True, slots=True)
class MessageDocument:
    """One accepted message (see the module docstring)."""

    id: str
    raw: bytes  # exactly as received; empty in a listing (read without the bytes)
    mail_from: str  # envelope sender, canonical (lowercase); "" for the null sender
    rcpt: tuple[str, ...]  # envelope recipients, canonical
    peer_ip: str
    helo: str
    received_at: datetime
    received_header: bytes = b""  # our `Received:` trace line, kept apart from `raw`
    # Selected header values from the receiver's bounded scan (mailstore.headers).
    headers: Mapping[str, str] = field(default_factory=dict)
    tls: TlsInfo | None = None
    # Envelope and bytes hashed (receiver.intake): the same message sent again, a sender's
    # retry, is the same message; stored under a unique index.
    fp: str = ""
    # Authentication verdicts (receiver.intake.authcheck); None: not checked.
    auth: dict[str, Any] | None = None
    size: int = -1  # len(raw), always; as stored when read without the bytes (a listing)
    expires_at: datetime | None = None  # set when written: received_at + retention

    def __post_init__(self) -> None:
        # Bytes present decide: a copy with other bytes (our verdict header added, a
        # forged one removed) never carries the old size along.
        if self.raw or self.size < 0:
            object.__setattr__(self, "size", len(self.raw))

    def expiring(self, retention: float) -> MessageDocument:
        """This message as written to a store that keeps mail `retention` seconds."""
        return replace(self, expires_at=self.received_at + timedelta(seconds=retention))

    def fields(self) -> dict[str, Any]:
        """The document: bytes as bytes; `tls`, `auth`, `fp` and `expires_at` only when
        set (a message never written over STARTTLS has no `tls` key)."""
        document: dict[str, Any] = {
            MessageKey.ID: self.id,
            MessageKey.RAW: self.raw,
            MessageKey.RECEIVED_HEADER: self.received_header,
            MessageKey.MAIL_FROM: self.mail_from.lower(),
            MessageKey.RCPT: [r.lower() for r in self.rcpt],
            MessageKey.PEER_IP: self.peer_ip,
            MessageKey.HELO: self.helo,
            MessageKey.RECEIVED_AT: self.received_at,
            MessageKey.SIZE: self.size,
            MessageKey.HEADERS: dict(self.headers),
        }
        if self.expires_at is not None:
            document[MessageKey.EXPIRES_AT] = self.expires_at
        if self.tls is not None:
            document[MessageKey.TLS] = {"version": self.tls.version, "cipher": self.tls.cipher}
        if self.auth is not None:  # in the same insert: never a second write per message
            document[MessageKey.AUTH] = self.auth
        if self.fp:
            document[MessageKey.FP] = self.fp
        return document

    @classmethod
    def read(cls, document: Mapping[str, Any]) -> MessageDocument:
        """A document as the store (or a change event) returns it, whole or projected.

        Tolerant of what readers meet: a projection without the bytes, dates as extended
        JSON (the embedded store's change events), a missing optional field. Raises
        `KeyError` only when `_id` is missing.
        """
        raw = document.get(MessageKey.RAW)
        if raw is None:
            raw = _decompressed(document.get(MessageKey.RAW_ZSTD), document.get(MessageKey.SIZE))
        headers = document.get(MessageKey.HEADERS)
        tls = document.get(MessageKey.TLS)
        auth = document.get(MessageKey.AUTH)
        size = document.get(MessageKey.SIZE)
        rcpt = document.get(MessageKey.RCPT)
        return cls(
            id=str(document[MessageKey.ID]),
            raw=bytes(raw) if isinstance(raw, bytes | bytearray) else b"",
            received_header=_bytes(document.get(MessageKey.RECEIVED_HEADER)),
            mail_from=str(document.get(MessageKey.MAIL_FROM) or ""),
            rcpt=tuple(str(r) for r in rcpt) if isinstance(rcpt, list | tuple) else (),
            peer_ip=str(document.get(MessageKey.PEER_IP) or ""),
            helo=str(document.get(MessageKey.HELO) or ""),
            received_at=stored_datetime(document.get(MessageKey.RECEIVED_AT))
            or datetime.fromtimestamp(0, UTC),
            expires_at=stored_datetime(document.get(MessageKey.EXPIRES_AT)),
            headers=(
                {str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {}
            ),
            tls=(
                TlsInfo(str(tls.get("version", "")), str(tls.get("cipher", "")))
                if isinstance(tls, dict)
                else None
            ),
            fp=str(document.get(MessageKey.FP) or ""),
            auth=dict(auth) if isinstance(auth, dict) else None,
            size=size if isinstance(size, int) and size >= 0 else -1,
        )


def _decompressed(frame: object, size: object) -> bytes | None:
    """The bytes of a zstd frame of our own, never more than the size stored beside it."""
    if not isinstance(frame, bytes | bytearray) or not isinstance(size, int) or size < 0:
        return None
    # Our frames record their size (zstd's content size), and the decompressor believes
    # it over any bound given: compare it with the size stored first.
    if zstandard.frame_content_size(bytes(frame)) != size:
        raise ValueError("compressed bytes do not match the stored size")
    return zstandard.ZstdDecompressor().decompress(bytes(frame))


def _bytes(value: object) -> bytes:
    return bytes(value) if isinstance(value, bytes | bytearray) else b""


def stored_datetime(value: object) -> datetime | None:
    """A stored date as an aware datetime: a BSON date, ISO text, or extended JSON
    (`{"$date": ...}`, as the embedded store's change events carry them); else None."""
    if isinstance(value, dict) and "$date" in value:
        value = value["$date"]
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)
