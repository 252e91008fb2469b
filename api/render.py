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

from api import display, safehtml
from api.charsets import clean, decode, decode_words, header_text, literal

MAX_BOUNDARIES = 100  # multipart boundaries declared; more is not mail, it is an attack
MAX_HEADERS = 1_000
MAX_TEXT = 1_000_000  # characters of decoded body returned as JSON
MAX_ATTACHMENTS = 100
MAX_INLINE = 100  # inline images (parts with a Content-ID) listed and served
MAX_CONTENT_ID = 998  # characters: a header line's limit (RFC 5322 2.1.1)
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
MAX_FILENAME = display.MAX_FILENAME_BYTES  # UTF-8 bytes of an attachment's name handed out
ADDRESS_FIELDS = ("from", "to", "cc")
_BOUNDARY = re.compile(rb"boundary\s*=", re.IGNORECASE)
_FOLD = re.compile(rb"\r?\n[ \t]")
# A DKIM-Signature field with its continuation lines, and its l= tag (RFC 6376 3.5).
_DKIM_FIELD = re.compile(
    rb"^dkim-signature[ \t]*:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)", re.IGNORECASE | re.MULTILINE
)
_LENGTH = re.compile(rb"(?:^|;)\s*l\s*=\s*(\d+)\s*(?:;|$)")
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
    items = list(message.raw_items())[:MAX_HEADERS]
    headers = [[clean(name), header_text(name, str(value))] for name, value in items]
    raw_values = {name.lower(): str(value) for name, value in reversed(items)}
    html = _body(message, "html")
    addresses = {
        field: _addresses(message, field, raw_values.get(field, "")) for field in ADDRESS_FIELDS
    }
    return {
        "headers": headers,
        **{field: found for field, (found, _) in addresses.items()},
        "from_repaired": addresses["from"][1],
        "text": _body(message, "plain"),
        "html": html,
        # For display: scripts, handlers, forms and frames removed, styles kept where they
        # can neither fetch nor run (`api.safehtml`); shown in a sandboxed frame all the same.
        "html_safe": None if html is None else safehtml.clean(html),
        "attachments": [_describe(part) for part in attachments(message)],
        "inline": [_describe_inline(part) for part in inline_parts(message)],
        "parse_error": None,
    }


class Unparseable(Exception):
    """The message cannot be parsed into parts at all (see `fallback` for its headers)."""


def bodies(raw: bytes) -> tuple[str, str | None, str | None]:
    """(Subject, text part, HTML part) of `raw`, decoded as `view` decodes them (without
    the rest of its work); `Unparseable` saying why when there are no parts to read."""
    subject, text, html, _ = read(raw)
    return subject, text, html


def read(raw: bytes) -> tuple[str, str | None, str | None, bool]:
    """`bodies`, and whether a body was cut at `MAX_TEXT` characters."""
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
    text, text_cut = _cut_body(message, "plain")
    html, html_cut = _cut_body(message, "html")
    return subject, text, html, text_cut or html_cut


def signed_prefix(raw: bytes) -> bytes | None:
    """`raw` cut where its DKIM signatures stop signing, when every one of them carries an
    `l=` shorter than the body (RFC 6376 3.5: text past it is anyone's to append); None
    when some signature claims the whole body, or there is none. The cut is at `l` octets
    of the body as sent: canonicalization only removes octets (RFC 6376 3.4), so that is
    never past what was signed."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = raw[: end + 2]
    lengths = []
    for field in _DKIM_FIELD.finditer(head):
        length = _LENGTH.search(_FOLD.sub(b" ", field[1]))
        if length is None:
            return None
        lengths.append(int(length[1][:76]))
    body = len(raw) - end - 4
    if not lengths or max(lengths) >= body:
        return None
    return raw[: end + 4 + max(lengths)]


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


def content_id(part: EmailMessage) -> str | None:
    """The part's Content-ID without its angle brackets (RFC 2045 7), or None."""
    value = part.get("content-id")
    if value is None:
        return None
    found = clean(str(value)).strip().removeprefix("<").removesuffix(">").strip()
    return found[:MAX_CONTENT_ID] or None


def inline_parts(message: EmailMessage) -> list[EmailMessage]:
    """The images a `cid:` URL can name (RFC 2392): every image part with a Content-ID,
    wherever it sits in the tree, in order, each Content-ID once, at most `MAX_INLINE`."""
    found: list[EmailMessage] = []
    seen: set[str] = set()
    try:
        for part in message.walk():
            assert isinstance(part, EmailMessage)
            if part.is_multipart() or part.get_content_maintype() != "image":
                continue
            name = content_id(part)
            if name is None or name in seen:
                continue
            seen.add(name)
            found.append(part)
            if len(found) >= MAX_INLINE:
                break
    except Exception:  # a broken structure has no parts we can name
        return found
    return found


class Unextractable(Exception):
    """The attachment exists but its bytes cannot be recovered exactly."""


def attachment(
    raw: bytes, index: int, inline: bool = False
) -> tuple[tuple[bytes, str, str] | None, int]:
    """(bytes, content type, file name) of attachment `index` of the whole message (of
    inline image `index` if `inline`), or None if there is no such part, with how many
    such parts the message has (every index from that one on is missing too);
    `Unextractable` if its decoded bytes would be damaged."""
    if too_many_parts(raw):
        return None, 0
    _PARSED.clear()
    try:
        message = _PARSER.parsebytes(raw)
        assert isinstance(message, EmailMessage)
        parts = inline_parts(message) if inline else attachments(message)
        if not 0 <= index < len(parts):
            return None, len(parts)
        part = parts[index]
        payload = part.get_payload(decode=True)
    except Exception as error:
        raise Unextractable(type(error).__name__) from None
    damage = [d for p in message.walk() for d in p.defects if isinstance(d, _DAMAGE)]
    if damage or not isinstance(payload, bytes):
        raise Unextractable(type(damage[0]).__name__ if damage else "no payload")
    name = _filename(part) or f"{'inline' if inline else 'attachment'}-{index}"
    return (payload, _content_type(part), name), len(parts)


def _describe(part: EmailMessage) -> dict[str, Any]:
    try:
        payload = part.get_payload(decode=True)
        size = len(payload) if isinstance(payload, bytes) else 0
        name = _filename(part)
    except Exception:
        size, name = 0, None
    return {"filename": name, "content_type": _content_type(part), "size": size}


def _describe_inline(part: EmailMessage) -> dict[str, Any]:
    return {"content_id": content_id(part) or "", **_describe(part)}


def _filename(part: EmailMessage) -> str | None:
    name = part.get_filename()
    if not name:
        return None
    # Cut by UTF-8 bytes, bidi controls escaped: `api.display.filename`.
    return display.filename(decode_words(clean(str(name))))


def _content_type(part: EmailMessage) -> str:
    try:
        kind = part.get_content_type()
    except Exception:
        return "application/octet-stream"
    return kind if _MIME_TYPE.fullmatch(kind) else "application/octet-stream"


def _addresses(
    message: EmailMessage, field: str, written: str
) -> tuple[list[dict[str, str]], bool]:
    """The addresses of `field` and whether the parser had to repair it. An address is
    shown only as written: the standard parser decodes encoded words inside an addr-spec
    (`ceo@=?utf-8?q?bank.test?=` reads `ceo@bank.test`; RFC 2047 5 forbids them there)
    and drops what it cannot read (`a@b.test <c@d.test>`), so a field with a defect or an
    addr-spec not found in its own text is shown as one entry holding its literal text."""
    try:
        header = message[field]
        if not hasattr(header, "addresses"):  # absent, or too long for the registry
            return [], False
        found = [
            {"name": clean(str(address.display_name)), "address": clean(str(address.addr_spec))}
            for address in header.addresses
        ]
        text = literal(written)
        # Obsolete syntax (a period in a name) is read faithfully; an invalid one is not.
        invalid = [d for d in header.defects if isinstance(d, email.errors.InvalidHeaderDefect)]
        if not invalid and all(a["address"] in text for a in found):
            return found, False
        return [{"name": "", "address": text}], True
    except Exception:  # a header the registry cannot read: see `headers` for its text
        return [], False


def fallback(raw: bytes, reason: str) -> dict[str, Any]:
    """Headers split by hand from the raw bytes, no bodies, and why (linear, capped)."""
    end = raw.find(b"\r\n\r\n")
    section = raw[: end if end >= 0 else min(len(raw), 256 * 1024)]
    headers = []
    for line in _FOLD.sub(b" ", section).split(b"\n")[:MAX_HEADERS]:
        name, colon, value = line.rstrip(b"\r").partition(b":")
        if colon:
            headers.append([_text(name), header_text(_text(name), _text(value.strip()))])
    empty: dict[str, Any] = {field: [] for field in ADDRESS_FIELDS}
    return {
        "headers": headers,
        **empty,
        "from_repaired": False,
        "text": None,
        "html": None,
        "html_safe": None,
        "attachments": [],
        "inline": [],
        "parse_error": reason,
    }


def _body(message: EmailMessage, subtype: str) -> str | None:
    return _cut_body(message, subtype)[0]


def _cut_body(message: EmailMessage, subtype: str) -> tuple[str | None, bool]:
    """A body part's text, at most `MAX_TEXT` characters, and whether it was cut."""
    try:
        part = message.get_body(preferencelist=(subtype,))
        if part is None:
            return None, False
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return None, False
        # 8-bit text without a declared charset is nearly always UTF-8 in practice.
        text = decode(payload[: 4 * MAX_TEXT], part.get_content_charset() or "utf-8")
        cut = len(payload) > 4 * MAX_TEXT or len(text) > MAX_TEXT
        return text[:MAX_TEXT].replace("\r\n", "\n"), cut
    except Exception:  # undecodable parts: the raw endpoint still has every byte
        return None, False


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")
