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

MAX_PARSE_BYTES = 4 * 1024 * 1024  # a longer message is rendered from its first 4 MiB
MAX_BOUNDARIES = 100  # multipart boundaries declared; more is not mail, it is an attack
MAX_HEADERS = 1_000
MAX_TEXT = 1_000_000  # characters of decoded body returned as JSON
PARSE_SECONDS = 3.0
_BOUNDARY = re.compile(rb"boundary\s*=", re.IGNORECASE)
_FOLD = re.compile(rb"\r?\n[ \t]")
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
    return {
        "headers": headers,
        "text": _body(message, "plain"),
        "html": _body(message, "html"),
        "parse_error": None,
    }


def fallback(raw: bytes, reason: str) -> dict[str, Any]:
    """Headers split by hand from the raw bytes, no bodies, and why."""
    end = raw.find(b"\r\n\r\n")
    section = raw[: end if end >= 0 else min(len(raw), 256 * 1024)]
    headers = []
    for line in _FOLD.sub(b" ", section).split(b"\n")[:MAX_HEADERS]:
        name, colon, value = line.rstrip(b"\r").partition(b":")
        if colon:
            headers.append([_text(name), _text(value.strip())])
    return {"headers": headers, "text": None, "html": None, "parse_error": reason}


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
        return text[:MAX_TEXT]
    except Exception:  # undecodable parts: the raw endpoint still has every byte
        return None


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")
