"""Rendering a stored message for the API, such that no sender can break it.

The stdlib MIME parser is rich and slow on hostile input (thousands of nested parts, codecs
that raise, header syntax its registry chokes on). So parsing is bounded (bytes, parts),
runs off the event loop in a worker thread, has a deadline, and every step that can raise
is contained: on any problem the message still renders, its headers as raw text, with a
`parse_error` saying what went wrong. `/raw` never parses at all.
"""

from __future__ import annotations

import asyncio
import email.policy
import re
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import nh3

MAX_PARSE_BYTES = 4 * 1024 * 1024  # a longer message is rendered from its first 4 MiB
MAX_BOUNDARIES = 100  # multipart boundaries declared; more is not mail, it is an attack
MAX_HEADERS = 1_000
MAX_TEXT = 1_000_000  # characters of decoded body returned as JSON
MAX_ATTACHMENTS = 100
ADDRESS_FIELDS = ("from", "to", "cc")
PARSE_SECONDS = 3.0
_BOUNDARY = re.compile(rb"boundary\s*=", re.IGNORECASE)
_FOLD = re.compile(rb"\r?\n[ \t]")
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
_PARSER = BytesParser(policy=email.policy.default)


async def render(raw: bytes) -> dict[str, Any]:
    """Headers, text and HTML of `raw`, within `PARSE_SECONDS`, whatever the bytes."""
    head = raw[:MAX_PARSE_BYTES]
    if len(_BOUNDARY.findall(head)) > MAX_BOUNDARIES:
        return fallback(raw, f"more than {MAX_BOUNDARIES} MIME parts")
    try:
        async with asyncio.timeout(PARSE_SECONDS):
            return await asyncio.to_thread(parse, head)
    except TimeoutError:
        return fallback(raw, f"parsing took longer than {PARSE_SECONDS:g}s")


def parse(raw: bytes) -> dict[str, Any]:
    """The parsed view (synchronous: call it through `render`)."""
    try:
        message = _PARSER.parsebytes(raw)
    except Exception as error:  # the parser's own defects are not ours to raise
        return fallback(raw, f"unparseable message: {type(error).__name__}")
    assert isinstance(message, EmailMessage)
    headers = []
    for name, value in list(message.raw_items())[:MAX_HEADERS]:
        headers.append([name, _header(message, name, value)])
    html = _body(message, "html")
    return {
        "headers": headers,
        **{field: _addresses(message, field) for field in ADDRESS_FIELDS},
        "text": _body(message, "plain"),
        "html": html,
        # For display: scripts, handlers, forms and frames removed (ammonia's allowlist);
        # show it in a sandboxed frame with a strict CSP all the same.
        "html_safe": None if html is None else nh3.clean(html),
        "attachments": [_describe(part) for part in attachments(message)],
        "parse_error": None,
    }


def attachments(message: EmailMessage) -> list[EmailMessage]:
    """The message's attachments, in order, at most `MAX_ATTACHMENTS`."""
    try:
        found = []
        for part in message.iter_attachments():
            found.append(part)
            if len(found) >= MAX_ATTACHMENTS:
                break
        return found
    except Exception:  # a broken structure has no attachments we can name
        return []


def attachment(raw: bytes, index: int) -> tuple[bytes, str, str] | None:
    """(bytes, content type, file name) of attachment `index`, or None (synchronous)."""
    try:
        message = _PARSER.parsebytes(raw[:MAX_PARSE_BYTES])
        assert isinstance(message, EmailMessage)
        parts = attachments(message)
        if not 0 <= index < len(parts):
            return None
        part = parts[index]
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        return data, _content_type(part), part.get_filename() or f"attachment-{index}"
    except Exception:
        return None


def _describe(part: EmailMessage) -> dict[str, Any]:
    try:
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        name = part.get_filename()
    except Exception:
        size, name = 0, None
    return {"filename": name, "content_type": _content_type(part), "size": size}


def _content_type(part: EmailMessage) -> str:
    try:
        kind = part.get_content_type()
    except Exception:
        return "application/octet-stream"
    return kind if _MIME_TYPE.fullmatch(kind) else "application/octet-stream"


def _addresses(message: EmailMessage, field: str) -> list[dict[str, str]]:
    try:
        header = message[field]
        if header is None:
            return []
        return [
            {"name": str(address.display_name), "address": str(address.addr_spec)}
            for address in header.addresses
        ]
    except Exception:  # a header the registry cannot read: see `headers` for its text
        return []


def fallback(raw: bytes, reason: str) -> dict[str, Any]:
    """Headers split by hand from the raw bytes, no bodies, and why."""
    end = raw.find(b"\r\n\r\n")
    section = raw[: end if end >= 0 else min(len(raw), 256 * 1024)]
    headers = []
    for line in _FOLD.sub(b" ", section).split(b"\n")[:MAX_HEADERS]:
        name, colon, value = line.rstrip(b"\r").partition(b":")
        if colon:
            headers.append([_text(name), _text(value.strip())])
    empty: dict[str, Any] = {field: [] for field in ADDRESS_FIELDS}
    return {
        "headers": headers,
        **empty,
        "text": None,
        "html": None,
        "html_safe": None,
        "attachments": [],
        "parse_error": reason,
    }


def _header(message: EmailMessage, name: str, value: Any) -> str:
    try:
        return str(message.policy.header_fetch_parse(name, value))
    except Exception:  # undecodable words, registry parse errors: shown as sent
        return " ".join(str(value).split())


def _body(message: EmailMessage, subtype: str) -> str | None:
    try:
        part = message.get_body(preferencelist=(subtype,))
        if part is None:
            return None
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return None
        # 8-bit text without a declared charset is nearly always UTF-8 in practice.
        charset = part.get_content_charset() or "utf-8"
        try:
            text = payload.decode(charset, "replace")
        except (LookupError, UnicodeError, ValueError):  # unknown or hostile codecs
            text = payload.decode("utf-8", "replace")
        return text[:MAX_TEXT].replace("\r\n", "\n")
    except Exception:  # undecodable parts: the raw endpoint still has every byte
        return None


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")
