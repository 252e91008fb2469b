"""Reading a stored message (synchronous): its parsed view, or one attachment whole.

These functions parse hostile bytes with the standard library's MIME parser; they run only
inside a render worker process (`api.renderworker`), under an address-space limit and a
deadline that kills the process (`api.renderpool`). They still bound what they can: a
cheap pre-check of the number of parts, header values past `MAX_REGISTRY_VALUE` kept out
of the header registry (whose cost grows far faster than the value: a 96 KB Subject of
encoded words took 260 MB there), charsets from an allowlist (`api.charsets`), and every
string valid UTF-8. On any problem the message still renders, its headers as raw text,
with a `parse_error` saying what went wrong. `/raw` never parses at all.
"""

from __future__ import annotations

import email.errors
import re
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import EmailPolicy
from typing import Any

import nh3

from api.charsets import clean, decode, decode_words

MAX_BOUNDARIES = 100  # multipart boundaries declared; more is not mail, it is an attack
MAX_HEADERS = 1_000
MAX_TEXT = 1_000_000  # characters of decoded body returned as JSON
MAX_ATTACHMENTS = 100
# Values longer than these skip the header registry, whose parse grows faster than linearly
# (8 KB of RFC 2231 parameters: 0.4 s; 96 KB of encoded words: 260 MB): shown decoded by
# our linear decoder; a long address list is not parsed into addresses, a long MIME header
# is read the simple way (its parameters split, as Python's compat32 policy does).
MAX_ADDRESS_VALUE = 8 * 1024  # a To: of ~250 addresses
MAX_MIME_VALUE = 1024  # Content-Type, -Disposition...: a real one is a line or two
ADDRESS_HEADERS = frozenset({"from", "to", "cc", "bcc", "sender", "reply-to", "resent-from"})
# Parameters of a Content-Type or Content-Disposition read: the registry's parameter parser
# and email.message's `_parseparam` both grow faster than the count (1,000 semicolons in
# each of 29 parts: 0.5 s a view). RFC 2231 continuations split a long file name into a
# few dozen at most; the rest of the value is not read.
MAX_PARAMETERS = 64
PARAMETER_HEADERS = frozenset({"content-type", "content-disposition"})
MAX_FILENAME = 255  # characters of an attachment's name handed out (a common file system max)
ADDRESS_FIELDS = ("from", "to", "cc")
_BOUNDARY = re.compile(rb"boundary\s*=", re.IGNORECASE)
_FOLD = re.compile(rb"\r?\n[ \t]")
_MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}")
# Defects that mean the decoded bytes of a part are not what the sender encoded.
_DAMAGE = (
    email.errors.InvalidBase64CharactersDefect,
    email.errors.InvalidBase64PaddingDefect,
    email.errors.InvalidBase64LengthDefect,
    email.errors.CloseBoundaryNotFoundDefect,
    email.errors.StartBoundaryNotFoundDefect,
)


class _RawHeader(str):
    """A header value kept out of the registry, with what EmailMessage asks of it."""

    __slots__ = ()

    @property
    def content_disposition(self) -> str:
        return self.split(";", 1)[0].strip().lower()


class _BoundedPolicy(EmailPolicy):
    """policy.default, except that a long value stays plain text (no registry parse), and
    a value parsed once is not parsed again (EmailMessage fetches Content-Type often)."""

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if name.lower() in PARAMETER_HEADERS:
            value = first_parameters(value)
        limit = MAX_ADDRESS_VALUE if name.lower() in ADDRESS_HEADERS else MAX_MIME_VALUE
        if len(value) > limit:
            return _RawHeader(value)
        key = (name, value)
        parsed = _PARSED.get(key)
        if parsed is None:
            parsed = _PARSED[key] = super().header_fetch_parse(name, value)
        return parsed


def first_parameters(value: str, count: int = MAX_PARAMETERS) -> str:
    """`value` up to its `count`-th parameter (cut before the next ";"), found in one
    linear scan before any parser sees it."""
    end = -1
    for _ in range(count + 1):
        end = value.find(";", end + 1)
        if end < 0:
            return value
    return value[:end]


# Parsed header values of the message being read (cleared for each: a worker reads one
# message at a time, and the registry's objects are immutable).
_PARSED: dict[tuple[str, str], Any] = {}


_PARSER = BytesParser(policy=_BoundedPolicy())


def too_many_parts(raw: bytes) -> bool:
    """A cheap look before parsing: more boundaries than any real message declares."""
    return len(_BOUNDARY.findall(raw)) > MAX_BOUNDARIES


def view(raw: bytes) -> dict[str, Any]:
    """Headers, addresses, text, HTML and attachments of `raw`, whatever the bytes."""
    if too_many_parts(raw):
        return fallback(raw, f"more than {MAX_BOUNDARIES} MIME parts")
    _PARSED.clear()
    try:
        message = _PARSER.parsebytes(raw)
    except Exception as error:  # the parser's own defects are not ours to raise
        return fallback(raw, f"unparseable message: {type(error).__name__}")
    assert isinstance(message, EmailMessage)
    headers = [
        [clean(name), decode_words(str(value))]
        for name, value in list(message.raw_items())[:MAX_HEADERS]
    ]
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


class Unparseable(Exception):
    """The message cannot be parsed into parts at all (see `fallback` for its headers)."""


def bodies(raw: bytes) -> tuple[str, str | None, str | None]:
    """(Subject, text part, HTML part) of `raw`, decoded as `view` decodes them (without
    the rest of its work); `Unparseable` saying why when there are no parts to read."""
    if too_many_parts(raw):
        raise Unparseable(f"more than {MAX_BOUNDARIES} MIME parts")
    _PARSED.clear()
    try:
        message = _PARSER.parsebytes(raw)
    except Exception as error:
        raise Unparseable(f"unparseable message: {type(error).__name__}") from None
    assert isinstance(message, EmailMessage)
    # The raw value, as `view` reads headers: never through the header registry.
    subject = next((str(v) for n, v in message.raw_items() if n.lower() == "subject"), "")
    subject = decode_words(subject)
    return subject, _body(message, "plain"), _body(message, "html")


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


class Unextractable(Exception):
    """The attachment exists but its bytes cannot be recovered exactly."""


def attachment(raw: bytes, index: int) -> tuple[bytes, str, str] | None:
    """(bytes, content type, file name) of attachment `index` of the whole message, or None
    if there is no such attachment; `Unextractable` if its decoded bytes would be damaged."""
    if too_many_parts(raw):
        return None
    _PARSED.clear()
    try:
        message = _PARSER.parsebytes(raw)
        assert isinstance(message, EmailMessage)
        parts = attachments(message)
        if not 0 <= index < len(parts):
            return None
        part = parts[index]
        payload = part.get_payload(decode=True)
    except Exception as error:
        raise Unextractable(type(error).__name__) from None
    damage = [d for p in message.walk() for d in p.defects if isinstance(d, _DAMAGE)]
    if damage or not isinstance(payload, bytes):
        raise Unextractable(type(damage[0]).__name__ if damage else "no payload")
    return payload, _content_type(part), _filename(part) or f"attachment-{index}"


def _describe(part: EmailMessage) -> dict[str, Any]:
    try:
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        name = _filename(part)
    except Exception:
        size, name = 0, None
    return {"filename": name, "content_type": _content_type(part), "size": size}


def _filename(part: EmailMessage) -> str | None:
    name = part.get_filename()
    if not name:
        return None
    name = decode_words(clean(str(name)))
    if len(name) <= MAX_FILENAME:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension) > 15:  # no extension worth keeping
        return name[:MAX_FILENAME]
    return stem[: MAX_FILENAME - len(extension) - 1] + "." + extension


def _content_type(part: EmailMessage) -> str:
    try:
        kind = part.get_content_type()
    except Exception:
        return "application/octet-stream"
    return kind if _MIME_TYPE.fullmatch(kind) else "application/octet-stream"


def _addresses(message: EmailMessage, field: str) -> list[dict[str, str]]:
    try:
        header = message[field]
        if not hasattr(header, "addresses"):  # absent, or too long for the registry
            return []
        return [
            {"name": clean(str(address.display_name)), "address": clean(str(address.addr_spec))}
            for address in header.addresses
        ]
    except Exception:  # a header the registry cannot read: see `headers` for its text
        return []


def fallback(raw: bytes, reason: str) -> dict[str, Any]:
    """Headers split by hand from the raw bytes, no bodies, and why (linear, capped)."""
    end = raw.find(b"\r\n\r\n")
    section = raw[: end if end >= 0 else min(len(raw), 256 * 1024)]
    headers = []
    for line in _FOLD.sub(b" ", section).split(b"\n")[:MAX_HEADERS]:
        name, colon, value = line.rstrip(b"\r").partition(b":")
        if colon:
            headers.append([_text(name), decode_words(_text(value.strip()))])
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


def _body(message: EmailMessage, subtype: str) -> str | None:
    try:
        part = message.get_body(preferencelist=(subtype,))
        if part is None:
            return None
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return None
        # 8-bit text without a declared charset is nearly always UTF-8 in practice.
        text = decode(payload[: 4 * MAX_TEXT], part.get_content_charset() or "utf-8")
        return text[:MAX_TEXT].replace("\r\n", "\n")
    except Exception:  # undecodable parts: the raw endpoint still has every byte
        return None


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")
