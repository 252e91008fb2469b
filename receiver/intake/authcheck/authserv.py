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

Linear in the value and bounded: at most `MAX_SCAN` characters read, comments nested at
most `MAX_DEPTH` deep and `MAX_STEPS` delimiters crossed, each run between them skipped by
one regular-expression match. What cannot be read within these bounds is no header a real
MTA writes; it is treated as claiming ours, and removed. A field with neither our id nor
an encoded word nor a quoted-pair in its text is not parsed at all.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re

__all__ = [
    "MAX_DEPTH",
    "MAX_SCAN",
    "MAX_STEPS",
    "claimed_id",
    "claims",
    "decode_words",
    "suspect",
]

MAX_SCAN = 1024  # characters read for the id: a real field names it in its first line
MAX_DEPTH = 32  # comment nesting followed
MAX_STEPS = 128  # comment delimiters and escapes crossed before the id
_FOLD = re.compile(r"\r?\n(?=[ \t])")
# RFC 2047 2: =?charset?encoding?encoded-text?=, anywhere in the token.
_WORD = re.compile(r"=\?[^?\s]{1,40}\?([bBqQ])\?([^?\s]{0,200})\?=")
_SPACE = re.compile(r"[ \t\r\n]*")
_IN_COMMENT = re.compile(r"[^()\\]*")
_QUOTED = re.compile(r'(?:[^"\\]|\\.)*', re.DOTALL)
# A token ends at white space or a delimiter that can follow an authserv-id (RFC 2045
# 5.1 tspecials: ';', a comment, a quote).
_TOKEN = re.compile(r'[^ \t\r\n;()"]*')
_PAIR = re.compile(r"\\(.)", re.DOTALL)
TOO_DEEP = "\x00unreadable"  # stands for an id that cannot be read: it is removed


def claimed_id(value: str) -> str | None:
    """The authserv-id `value` (an Authentication-Results field's body, after the colon)
    names, normalised: unfolded, unquoted, decoded, lower-case, without a trailing dot;
    None when it names none; `TOO_DEEP` when it cannot be read within the bounds
    (comments nested past `MAX_DEPTH`, more than `MAX_STEPS` delimiters, or no id in the
    first `MAX_SCAN` characters): a reader without bounds might find ours there."""
    cut = len(value) > MAX_SCAN
    text = _FOLD.sub("", value[:MAX_SCAN])
    position = _skip_cfws(text)
    if position < 0 or (cut and position >= len(text)):
        return TOO_DEEP
    if position >= len(text):
        return None
    if text[position] == '"':
        end = _QUOTED.match(text, position + 1).end()  # type: ignore[union-attr]
    else:
        end = _TOKEN.match(text, position).end()  # type: ignore[union-attr]
    if cut and end >= len(text):
        return TOO_DEEP
    start = position + 1 if text[position] == '"' else position
    # Quoted-pairs unescaped; a lax reader unescapes them outside quotes as well.
    word = _PAIR.sub(r"\1", text[start:end])
    return _normal(decode_words(word)) or None


def suspect(value: str, ours: str) -> bool:
    """Whether the field body `value` may claim `ours` at all: without our id in its text
    (any case), an encoded word or a quoted-pair, and within `MAX_SCAN`, no reading of it
    yields ours, and it needs no parse. A C-speed scan."""
    if len(value) > MAX_SCAN:
        return True
    lowered = value.lower()
    return _normal(ours) in lowered or "=?" in lowered or "\\" in lowered


def claims(value: str, ours: str) -> bool:
    """Whether the field body `value` claims authserv-id `ours` (or cannot be read)."""
    if not suspect(value, ours):
        return False
    claimed = claimed_id(value)
    return claimed is not None and claimed in (_normal(ours), TOO_DEEP)


def _skip_cfws(text: str) -> int:
    """The position after the leading white space and comments (RFC 5322 3.2.2); -1 when
    they nest past `MAX_DEPTH` or take more than `MAX_STEPS` delimiters. Each step skips a
    run in one regular-expression match: linear, with a bounded number of steps."""
    position, depth = 0, 0
    for _ in range(MAX_STEPS):
        if not depth:
            position = _SPACE.match(text, position).end()  # type: ignore[union-attr]
            if position >= len(text) or text[position] != "(":
                return position
            depth, position = 1, position + 1
            continue
        position = _IN_COMMENT.match(text, position).end()  # type: ignore[union-attr]
        if position >= len(text):
            return position  # an unclosed comment: no id follows
        char = text[position]
        if char == "\\":  # quoted-pair inside a comment (RFC 5322 3.2.1)
            position += 2
        elif char == "(":
            depth += 1
            if depth > MAX_DEPTH:
                return -1
            position += 1
        else:
            depth, position = depth - 1, position + 1
    return -1


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
