"""Text out of hostile bytes: a charset allowlist, RFC 2047 words, and valid UTF-8 always.

Python's codec registry is not a list of MIME charsets: `punycode` (quadratic to decode),
`unicode_escape`, `idna`, `zlib_codec`, `rot13` and friends are codecs too, and a sender
names the codec. Only codecs that implement a real MIME charset (IANA's "Character Sets"
registry) are used; any other label is read as UTF-8 with replacement characters. Every
string handed out is valid UTF-8: surrogate escapes from 8-bit header bytes are read back
as UTF-8 (RFC 6532 3.2), anything else undecodable becomes U+FFFD.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import quopri
import re
from typing import Any

__all__ = [
    "ADDRESS_HEADERS",
    "MAX_WORDS_VALUE",
    "STRUCTURED_HEADERS",
    "clean",
    "clean_all",
    "decode",
    "decode_phrases",
    "decode_words",
    "header_text",
    "known_charset",
]

# Python's canonical names (codecs.lookup(label).name) of the codecs that implement an
# IANA-registered MIME charset. Aliases (latin1, cp1252, x-sjis...) resolve to these.
MIME_CODECS = frozenset(
    {
        "ascii",
        "utf-8",
        "utf-16",
        "utf-16-be",
        "utf-16-le",
        "utf-32",
        "utf-32-be",
        "utf-32-le",
        "utf-7",  # RFC 2152, registered; linear to decode
        *(f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16)),
        *(f"cp{n}" for n in range(1250, 1259)),  # windows-1250..1258
        *("cp037 cp273 cp437 cp500 cp775 cp850 cp852 cp855 cp857 cp858 cp860".split()),
        *("cp861 cp862 cp863 cp864 cp865 cp866 cp869 cp874 cp1026 cp1140".split()),
        "koi8-r",
        "koi8-u",
        "mac-roman",
        "tis-620",
        "shift_jis",
        "cp932",
        "euc_jp",
        "iso2022_jp",
        "iso2022_jp_2",
        "euc_kr",
        "cp949",
        "iso2022_kr",
        "gb2312",
        "gbk",
        "gb18030",
        "big5",
        "big5hkscs",
        "hz",
    }
)
MAX_WORDS_VALUE = 256 * 1024  # characters decoded per value: the receiver takes 256 KiB of headers
# RFC 2047 2: =?charset?encoding?encoded-text?= (charset may carry an RFC 2231 *language).
_WORD = re.compile(r"=\?([^?\s*]{1,40})(?:\*[^?\s]{0,40})?\?([bBqQ])\?([^?\s]{0,2000})\?=")
_BETWEEN_WORDS = re.compile(r"[ \t\r\n]+")
_LONE_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACE = re.compile(r"(\s+)")
# RFC 2047 5: an encoded word may stand in unstructured text, a comment or a phrase, and
# nowhere else. These fields are structured (RFC 5322 3.6, RFC 8601, RFC 6376, RFC 8617,
# RFC 2045): shown as sent, so `=?utf-8?q?mx.test?=` never reads as a verdict's id.
STRUCTURED_HEADERS = frozenset(
    {
        "authentication-results",
        "arc-authentication-results",
        "arc-seal",
        "arc-message-signature",
        "dkim-signature",
        "domainkey-signature",
        "received",
        "received-spf",
        "return-path",
        "message-id",
        "in-reply-to",
        "references",
        "resent-message-id",
        "date",
        "resent-date",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-id",
        "content-disposition",
        "list-unsubscribe",
        "list-unsubscribe-post",
    }
)
# Address fields: encoded words are decoded in display names (phrases) only, never in an
# addr-spec (RFC 2047 5 (3)): `ceo@=?utf-8?q?bank.test?=` is shown as written.
ADDRESS_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "sender",
        "reply-to",
        "resent-from",
        "resent-to",
        "resent-cc",
        "resent-bcc",
        "resent-sender",
        "disposition-notification-to",
    }
)


def known_charset(label: str | None) -> str | None:
    """The codec for a MIME charset label, or None when it names no real MIME charset."""
    if not label or len(label) > 40:
        return None
    try:
        name = codecs.lookup(label.strip().strip('"')).name
    except (LookupError, ValueError, TypeError):
        return None
    return name if name in MIME_CODECS else None


def decode(data: bytes, label: str | None) -> str:
    """`data` in charset `label` (UTF-8 when unknown or not a MIME charset), never raising."""
    codec = known_charset(label) or "utf-8"
    try:
        return clean(data.decode(codec, "replace"))
    except Exception:  # a codec that still raises on some input: read it as UTF-8
        return data.decode("utf-8", "replace")


def clean(text: str) -> str:
    """`text` as valid UTF-8: surrogate-escaped bytes decoded as UTF-8 (RFC 6532), other
    lone surrogates replaced."""
    if text.isascii():
        return text
    text = _LONE_SURROGATE.sub("\ufffd", text)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def clean_all(value: Any) -> Any:
    """`value` (JSON-like: dicts, lists, strings...) with every string `clean`."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(str(k)): clean_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_all(item) for item in value]
    return value


def decode_words(value: str) -> str:
    """A header value for display: unfolded, RFC 2047 encoded words decoded (adjacent words
    joined, RFC 2047 6.2), control characters dropped. Linear in the length of `value`;
    past `MAX_WORDS_VALUE` characters the rest is shown as sent."""
    value = clean(value)
    head, tail = value[:MAX_WORDS_VALUE], value[MAX_WORDS_VALUE:]
    pieces: list[str] = []
    position = 0
    previous_word_end = -1
    for word in _WORD.finditer(head):
        gap = head[position : word.start()]
        if not (previous_word_end == position and _BETWEEN_WORDS.fullmatch(gap)):
            pieces.append(gap)
        pieces.append(_word(word.group(1), word.group(2), word.group(3)))
        position = previous_word_end = word.end()
    pieces.append(head[position:])
    text = "".join(pieces) + tail
    return _CONTROLS.sub("", " ".join(text.split()) if "\n" in text else text)


def _word(charset: str, encoding: str, text: str) -> str:
    try:
        if encoding in "bB":
            data = base64.b64decode(text + "=" * (-len(text) % 4))
        else:
            data = quopri.decodestring(text.encode("ascii", "replace"), header=True)
    except (binascii.Error, ValueError):
        return f"=?{charset}?{encoding}?{text}?="
    return decode(data, charset)


def header_text(name: str, value: str) -> str:
    """A header value for display, decoded only where RFC 2047 5 lets an encoded word
    stand: the whole of an unstructured field, an address field's phrases, and nothing of
    a structured field."""
    lower = name.lower()
    if lower in ADDRESS_HEADERS:
        return decode_phrases(value)
    if lower in STRUCTURED_HEADERS:
        return literal(value)
    return decode_words(value)


def literal(value: str) -> str:
    """A header value as sent, unfolded, control characters dropped; nothing decoded."""
    text = clean(value)
    return _CONTROLS.sub("", " ".join(text.split()) if "\n" in text else text)


def decode_phrases(value: str) -> str:
    """An address field for display: encoded words decoded in its phrases (display
    names), never in an addr-spec: a word with `@`, or anything between `<` and `>`, is
    shown as sent. Linear: one split on white space, each word looked at once."""
    text = literal(value)
    if "=?" not in text:  # no encoded word: nothing to tell apart (most fields)
        return text
    pieces: list[str] = []
    phrase: list[str] = []
    depth = 0  # inside an angle-bracketed address
    for word in _SPACE.split(text):
        if not depth and not any(c in word for c in "<>@"):
            phrase.append(word)
            continue
        if phrase:
            pieces.append(_phrase("".join(phrase)))
            phrase = []
        pieces.append(word)
        depth = max(0, depth + word.count("<") - word.count(">"))
    if phrase:
        pieces.append(_phrase("".join(phrase)))
    return "".join(pieces)


def _phrase(text: str) -> str:
    return decode_words(text) if "=?" in text else text
