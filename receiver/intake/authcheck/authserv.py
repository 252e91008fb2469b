"""The authserv-id an arriving `Authentication-Results:` field claims, read as the most
lenient consumer would read it, so that no spelling of our id slips past its removal.

RFC 8601 2.2: `authres-header-field = "Authentication-Results:" authserv-id
[CFWS authres-version] ...`, where the authserv-id is a `value` (RFC 2045: a token or a
quoted-string) and CFWS (RFC 5322 3.2.2) may surround it: white space, folding, and
comments that nest. A consumer unfolds the field, skips the comments, unquotes a quoted
string (quoted-pairs included), and compares case-insensitively; a name with a trailing
dot is the same DNS name (RFC 1034 3.1). Some readers also decode RFC 2047 encoded words
where they do not belong (RFC 2047 5 forbids them here), so an encoded word is decoded
for the comparison too: over-removal costs a forged field, under-removal a forged verdict.

Linear in the value and bounded: one pass over at most `MAX_SCAN` characters, comments
nested at most `MAX_DEPTH` deep (deeper is no header a real MTA writes; it is treated as
claiming ours, and removed).
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re

__all__ = ["MAX_DEPTH", "MAX_SCAN", "claimed_id", "claims", "decode_words"]

MAX_SCAN = 4096  # characters read for the id: a real field names it in the first line
MAX_DEPTH = 32  # comment nesting followed
_FOLD = re.compile(r"\r?\n(?=[ \t])")
# RFC 2047 2: =?charset?encoding?encoded-text?=, anywhere in the token.
_WORD = re.compile(r"=\?[^?\s]{1,40}\?([bBqQ])\?([^?\s]{0,200})\?=")
# What ends a token (RFC 2045 5.1 tspecials that can follow an authserv-id, and space).
_TOKEN_END = frozenset(' \t;()"')
TOO_DEEP = "\x00too-deep"  # stands for an id that cannot be read: it is removed


def claimed_id(value: str) -> str | None:
    """The authserv-id `value` (an Authentication-Results field's body, after the colon)
    names, normalised: unfolded, unquoted, decoded, lower-case, without a trailing dot;
    None when it names none; `TOO_DEEP` when comments nest past `MAX_DEPTH`."""
    text = _FOLD.sub("", value[:MAX_SCAN])
    position = _skip_cfws(text, 0)
    if position < 0:
        return TOO_DEEP
    if position >= len(text):
        return None
    if text[position] == '"':
        word = _quoted(text, position + 1)
    else:
        end = position
        while end < len(text) and text[end] not in _TOKEN_END:
            end += 1
        # A lax reader unescapes a backslash outside quotes as well.
        word = re.sub(r"\\(.)", r"\1", text[position:end])
    return _normal(decode_words(word)) or None


def claims(value: str, ours: str) -> bool:
    """Whether the field body `value` claims authserv-id `ours` (or cannot be read)."""
    claimed = claimed_id(value)
    return claimed is not None and claimed in (_normal(ours), TOO_DEEP)


def _skip_cfws(text: str, position: int) -> int:
    """The position after the white space and comments from `position`; -1 when comments
    nest past `MAX_DEPTH`."""
    depth = 0
    while position < len(text):
        char = text[position]
        if char == "\\" and depth:  # quoted-pair inside a comment (RFC 5322 3.2.1)
            position += 2
            continue
        if char == "(":
            depth += 1
            if depth > MAX_DEPTH:
                return -1
        elif char == ")" and depth:
            depth -= 1
        elif not depth and char not in " \t\r\n":
            return position
        position += 1
    return position


def _quoted(text: str, position: int) -> str:
    """A quoted-string's content from `position` (after its opening quote), quoted-pairs
    unescaped, to its closing quote or the end."""
    out: list[str] = []
    while position < len(text) and text[position] != '"':
        if text[position] == "\\" and position + 1 < len(text):
            position += 1
        out.append(text[position])
        position += 1
    return "".join(out)


def decode_words(word: str) -> str:
    """`word` with its RFC 2047 encoded words decoded (as UTF-8: a DNS name is ASCII, and
    any charset that spells one spells it in ASCII bytes), for comparing names only."""
    return _WORD.sub(_decode_word, word) if "=?" in word else word


def _decode_word(match: re.Match[str]) -> str:
    encoding, text = match[1], match[2]
    try:
        if encoding in "bB":
            data = base64.b64decode(text + "=" * (-len(text) % 4))
        else:
            data = quopri.decodestring(text.encode("ascii", "replace"), header=True)
    except (binascii.Error, ValueError):
        return match[0]
    return data.decode("utf-8", "replace")


def _normal(name: str) -> str:
    return name.strip().lower().rstrip(".")
