"""The spool's records: one accepted message each, framed so that nothing but a record this
spool wrote can ever be read as one.

    MAGIC "FGS2" (4) | payload length (4, big-endian) | MAC (16) | payload
    payload = metadata length (4) | metadata (JSON) | trace header | message bytes
    MAC = HMAC-SHA-256(the spool's key, length | payload), first 16 octets

The key is 32 random octets in the spool directory (`key`, created with the spool, never
leaving the host but in a copy of the spool). Message bytes are what a sender chose: with
bare newlines accepted, a body can hold a whole framed record, and a checksum anyone can
compute would let it pass for one once the record around it is damaged. A MAC the sender
cannot compute cannot be forged, so the reader may look for the next record anywhere.

Reading never invents and never hides: a record whose length runs past the end of the
data is a *torn* tail (a crash mid-append: never acknowledged, since the sender hears
`250` only after the sync); a whole record that fails its MAC, or cannot be decoded, is
*damaged* (acknowledged mail lost to a bad disk), and the bytes skipped are counted so the
caller keeps the segment as evidence. Segments of the previous format ("FGS1", a CRC-32
where the MAC is) are still read: an upgrade strands no spooled mail.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mailstore.message import MessageDocument, MessageKey, TlsInfo

MAGIC = b"FGS2"
LEGACY = b"FGS1"  # CRC-32 records, read from segments of the previous version only
_HEADER = struct.Struct(">4sI16s")
_LEGACY_HEADER = struct.Struct(">4sII")
_META = struct.Struct(">I")
MAC_SIZE = 16
MAX_RECORD = 32 * 1024 * 1024  # a message is at most 15 MiB (receiver.limits): room to spare
TRACE = "trace"  # the metadata key: length of the trace header before the message bytes
KEY_FILE = "key"


@dataclass(frozen=True, slots=True)
class Record:
    """One spooled message, where it sits in its segment."""

    offset: int
    size: int
    message: MessageDocument


@dataclass(frozen=True, slots=True)
class Segment:
    """What a segment's bytes held: its whole records, and what could not be read."""

    records: list[Record]
    damaged: int = 0  # bytes of whole records that failed their MAC or could not be read
    torn: int = 0  # bytes of an incomplete last record (never acknowledged)


def spool_key(directory: Path, create: bool = True) -> bytes | None:
    """The spool's MAC key: read, or made and synced (0600) the first time; None when it
    does not exist and may not be made (a copied spool whose key was left behind)."""
    path = directory / KEY_FILE
    with contextlib.suppress(FileNotFoundError):
        key = path.read_bytes()
        if len(key) == 32:
            return key
    if not create:
        return None
    key = secrets.token_bytes(32)
    temporary = directory / f".{KEY_FILE}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return key


def _mac(key: bytes, length: bytes, payload: bytes | memoryview) -> bytes:
    digest = hmac.new(key, length, hashlib.sha256)
    digest.update(payload)
    return digest.digest()[:MAC_SIZE]


def encode(message: MessageDocument, key: bytes) -> bytes:
    """The record for `message`, framed and authenticated (see the module docstring). Its
    metadata carries the message's own field names (mailstore.message), bytes apart."""
    meta = {
        key_: value
        for key_, value in message.fields().items()
        if key_ not in (MessageKey.RAW, MessageKey.RECEIVED_HEADER)
    }
    meta[MessageKey.RECEIVED_AT] = message.received_at.isoformat()
    meta[TRACE] = len(message.received_header)
    # ensure_ascii: lone surrogates survive as escapes
    text = json.dumps(meta, separators=(",", ":")).encode("ascii")
    payload = b"".join((_META.pack(len(text)), text, message.received_header, message.raw))
    length = struct.pack(">I", len(payload))
    return MAGIC + length + _mac(key, length, payload) + payload


def decode(payload: bytes) -> MessageDocument:
    """The message in an authenticated payload. Raises ValueError if it is not one.

    Records written before the spool used the message's field names (`id`, `rcpt_to`,
    `fingerprint`, `tls` as a list) are read too: an upgrade never strands spooled mail."""
    (meta_size,) = _META.unpack_from(payload)
    meta = json.loads(payload[_META.size : _META.size + meta_size])
    body = payload[_META.size + meta_size :]
    trace = int(meta[TRACE])
    if not 0 <= trace <= len(body):
        raise ValueError("trace length out of range")
    rcpt = meta.get(MessageKey.RCPT, meta.get("rcpt_to"))
    if not isinstance(rcpt, list):
        raise ValueError("no recipients")
    auth = meta.get(MessageKey.AUTH)
    headers = meta.get(MessageKey.HEADERS) or {}
    return MessageDocument(
        id=str(meta[MessageKey.ID] if MessageKey.ID in meta else meta["id"]),
        raw=body[trace:],
        mail_from=str(meta[MessageKey.MAIL_FROM]),
        rcpt=tuple(str(r) for r in rcpt),
        peer_ip=str(meta[MessageKey.PEER_IP]),
        helo=str(meta[MessageKey.HELO]),
        received_at=datetime.fromisoformat(meta[MessageKey.RECEIVED_AT]),
        received_header=body[:trace],
        headers={str(k): str(v) for k, v in dict(headers).items()},
        tls=_tls(meta.get(MessageKey.TLS)),
        fp=str(meta.get(MessageKey.FP, meta.get("fingerprint", ""))),
        auth=dict(auth) if isinstance(auth, dict) else None,
    )


def _tls(value: object) -> TlsInfo | None:
    if isinstance(value, dict):
        return TlsInfo(str(value.get("version", "")), str(value.get("cipher", "")))
    if isinstance(value, list) and len(value) == 2:  # records of earlier versions
        return TlsInfo(str(value[0]), str(value[1]))
    return None


def read_records(data: bytes, key: bytes | None) -> Segment:
    """Every record of a segment's bytes that proves itself, in order; never raises,
    never invents. A segment is read in the format its first record has."""
    if data[:4] == LEGACY:

        def crc(length: bytes, payload: memoryview, seal: int) -> bool:
            return zlib.crc32(payload) == seal

        return _read(data, LEGACY, _LEGACY_HEADER, crc)
    if key is None:  # no key: nothing can prove itself; all of it is kept as evidence
        return Segment([], damaged=len(data))

    def mac(length: bytes, payload: memoryview, seal: bytes) -> bool:
        return hmac.compare_digest(_mac(key, length, payload), seal)

    return _read(data, MAGIC, _HEADER, mac)


Proof = Callable[[bytes, memoryview, Any], bool]  # (length octets, payload, MAC or CRC)


def _read(data: bytes, magic: bytes, header: struct.Struct, check: Proof) -> Segment:
    records: list[Record] = []
    damaged = torn = 0
    # A record whose length runs past the end is a torn tail only if no record proves
    # itself after it: a damaged length looks the same. Until one does, what is skipped
    # from there on is `pending`; a proven record after it makes it damage.
    pending = 0
    tail = False
    position, end = 0, len(data)
    view = memoryview(data)
    while position < end:
        if position + header.size > end:
            pending += end - position
            tail = True
            break
        found_magic, size, seal = header.unpack_from(data, position)
        start = position + header.size
        framed = found_magic == magic and size <= MAX_RECORD
        if framed and start + size <= end:
            length = data[position + 4 : position + 8]
            if check(length, view[start : start + size], seal):
                damaged, pending, tail = damaged + pending, 0, False  # proven: not the tail
                try:
                    message = decode(data[start : start + size])
                except (ValueError, KeyError, TypeError, IndexError, struct.error):
                    damaged += header.size + size  # proven ours, unreadable all the same
                else:
                    records.append(Record(position, header.size + size, message))
                position = start + size
                continue
            after = start + size
            if not tail and (after == end or data[after : after + 4] == magic):
                damaged += header.size + size  # its frame holds: past its length
                position = after
                continue
        elif framed:
            tail = True  # the last record cut short by a crash mid-append, or a bad length
        # Not a record that proves itself: find the next one (nothing forged can pass).
        following = data.find(magic, position + 1)
        skipped = (following if following >= 0 else end) - position
        if tail:
            pending += skipped
        else:
            damaged += skipped
        if following < 0:
            break
        position = following
    torn += pending if tail else 0
    damaged += 0 if tail else pending
    return Segment(records, damaged, torn)


def read_segment(path: Path, key: bytes | None) -> Segment:
    """One segment file's records (a missing file has none)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Segment([])
    return read_records(data, key)
