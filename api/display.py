"""Showing what a sender wrote without letting it pretend to be something else: URLs,
hosts and file names as a reader should see them.

- Bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C) reorder
  the text around them when displayed (Unicode UAX #9): `invoice[U+202E]fdp.exe` shows
  as `invoiceexe.pdf`. They are shown escaped: percent-encoded in a URL (RFC 3986 2.1, as a
  browser's address bar does), `[U+202E]` in a file name or a link's text.
- A host that mixes scripts in one label (a Cyrillic U+0430 for the `a` of `paypal`) is
  shown as its IDNA A-label (RFC 5891 4.4, `xn--...`), as browsers do for names their IDN
  policy does not trust (Chromium's "IDN display policy", UTS #39 5.1 "mixed-script detection").
- The userinfo of a URL (`https://paypal.com@evil.test/`, RFC 3986 3.2.1) is set apart: the
  host is what follows the `@`, and RFC 3986 7.6 names this very spoof.
- A file name is cut to `MAX_FILENAME_BYTES` octets of UTF-8 on a character boundary (file
  systems count bytes: 255 on ext4, NTFS counts UTF-16 units), its extension kept.

Everything here is linear in its input and bounded by its caller's caps.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import urlsplit

__all__ = [
    "BIDI",
    "MAX_FILENAME_BYTES",
    "ascii_filename",
    "escape_bidi",
    "filename",
    "host_display",
    "mixed_script",
    "url_view",
]

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
_BIDI = re.compile(f"[{BIDI}]")
# A name a browser can save: 255 bytes is the common file-system limit, and a browser
# needs room beside it for its temporary suffix (`.crdownload`, `.part`) and a ` (1)`.
MAX_FILENAME_BYTES = 200
MAX_EXTENSION = 15  # characters of an extension worth keeping when a name is cut
# Scripts that one label may mix (UTS #39 5.1 "Highly Restrictive": Han with Japanese
# kana, with Hangul, or with Bopomofo); every other pair of scripts is mixed.
_TOGETHER = (
    frozenset({"CJK", "HIRAGANA", "KATAKANA"}),
    frozenset({"CJK", "HANGUL"}),
    frozenset({"CJK", "BOPOMOFO"}),
)
_MAX_LABEL = 63  # RFC 1035 2.3.4: a longer label names no host, and is not encoded


def escape_bidi(text: str) -> str:
    """`text` with each bidirectional control written as `[U+XXXX]`."""
    return _BIDI.sub(lambda m: f"[U+{ord(m[0]):04X}]", text) if _has_bidi(text) else text


def _has_bidi(text: str) -> bool:
    return _BIDI.search(text) is not None


def _percent(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match[0].encode("utf-8"))


def _script(char: str) -> str | None:
    """The script of a letter, by its Unicode name's first word (LATIN, CYRILLIC, GREEK,
    CJK...); None for what is not a letter (digits and hyphens mix with any script)."""
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0] if name else "UNKNOWN"


def mixed_script(label: str) -> bool:
    """Whether one host label has letters of two scripts not allowed together."""
    scripts = {s for s in map(_script, label) if s is not None}
    if len(scripts) < 2:
        return False
    return not any(scripts <= allowed for allowed in _TOGETHER)


def host_display(host: str) -> str:
    """A host as it should be shown: bidi controls escaped; as A-labels (`xn--`, RFC 3492
    Punycode of each label) when a label mixes scripts; otherwise as written."""
    host = _BIDI.sub(_percent, host)
    labels = host.split(".")
    if not any(not label.isascii() and mixed_script(label) for label in labels):
        return host
    return ".".join(_a_label(label) for label in labels)


def _a_label(label: str) -> str:
    if label.isascii() or len(label) > _MAX_LABEL:
        return label
    return "xn--" + label.lower().encode("punycode").decode("ascii")


def url_view(url: str) -> dict[str, str | None]:
    """How a link should be shown: `display` (the URL with bidi controls percent-encoded
    and its host as `host_display` shows it), `host`, and `userinfo` (what stands before
    an `@` in the authority, which is not where the link goes; None when there is none)."""
    scheme = url.partition(":")[0].lower()
    if scheme == "mailto":
        address = url[7:].partition("?")[0]
        host = address.rpartition("@")[2] or None
        shown = host_display(host) if host else None
        display = _BIDI.sub(_percent, url)
        if host and shown != _BIDI.sub(_percent, host):
            display = display.replace(_BIDI.sub(_percent, host), shown or "", 1)
        return {"display": display, "host": shown, "userinfo": None}
    try:
        parts = urlsplit(url)
    except ValueError:
        return {"display": _BIDI.sub(_percent, url), "host": None, "userinfo": None}
    userinfo, at, hostport = parts.netloc.rpartition("@")
    host = parts.hostname or ""
    shown = host_display(host)
    # The host as written in the netloc (any case), replaced by what is shown.
    start = hostport.lower().find(host)
    if start >= 0:
        hostport = hostport[:start] + shown + hostport[start + len(host) :]
    netloc = (_BIDI.sub(_percent, userinfo) + "@" if at else "") + _BIDI.sub(_percent, hostport)
    rest = url[len(parts.scheme) + 3 + len(parts.netloc) :]
    display = f"{parts.scheme}://{netloc}{_BIDI.sub(_percent, rest)}"
    return {
        "display": display,
        "host": shown or None,
        "userinfo": _BIDI.sub(_percent, userinfo) if at else None,
    }


def filename(name: str) -> str:
    """A file name to show and to save: bidi controls escaped, then cut to
    `MAX_FILENAME_BYTES` of UTF-8 (never inside a character), its extension kept."""
    name = escape_bidi(name)
    if len(name.encode("utf-8")) <= MAX_FILENAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension) > MAX_EXTENSION:
        return _cut(name, MAX_FILENAME_BYTES)
    tail = "." + extension
    return _cut(stem, MAX_FILENAME_BYTES - len(tail.encode("utf-8"))) + tail


def _cut(text: str, limit: int) -> str:
    """The longest prefix of `text` within `limit` bytes of UTF-8, ending on a whole
    character, without a dangling joiner or combining mark."""
    cut = text.encode("utf-8")[:limit].decode("utf-8", "ignore")
    while cut and (cut[-1] == "\u200d" or unicodedata.combining(cut[-1])):
        cut = cut[:-1]
    return cut


def ascii_filename(name: str) -> str:
    """The `filename=` fallback of a Content-Disposition (RFC 6266 4.3): ASCII printable,
    no quote or backslash; what is not ASCII becomes `_`."""
    return "".join(c if " " <= c < "\x7f" and c not in '"\\' else "_" for c in name)
