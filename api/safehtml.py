"""A message's HTML made safe to show as it was sent: nh3 (ammonia) with mail's allowlist,
styles through our CSS sanitiser (`api.css`).

ammonia's defaults are written for comments on a web page: they strip every `style`,
`<style>`, `class`, `bgcolor`, `border` and `<font>`, which turns a styled newsletter into
plain text. Mail is laid out with exactly those, so they are kept: `style` attributes and
`<style>` elements as whatever `api.css` lets through (nothing that fetches or runs), the
presentational attributes of tables and fonts as they are (an attribute value cannot
fetch: only `src`, `href` and `background` name URLs, and `background` is not kept).
`cid:` URLs (RFC 2392) stay, for the page to point at the message's own parts; scripts,
handlers, forms, frames, `<svg>`/`<math>` (where `<style>` would parse differently) and
every other URL scheme go, as before. Show the result in a sandboxed frame with a CSP all
the same (`api.page`).
"""

from __future__ import annotations

import re

import nh3

from api import css

TAGS = nh3.ALLOWED_TAGS | {"style", "font", "tfoot"}
# Removed with their text: a page title is not part of a mail's body.
CLEAN_CONTENT = {"script", "title"}
_TABLE = {"bgcolor", "border", "width", "height", "cellpadding", "cellspacing", "frame", "rules"}
_CELL = {"bgcolor", "width", "height", "valign", "nowrap"}
EXTRA_ATTRIBUTES = {
    "*": {"style", "class", "id", "dir", "lang", "title", "align"},
    "table": _TABLE,
    "tr": {"bgcolor", "valign", "height"},
    "td": _CELL,
    "th": _CELL,
    "tbody": {"valign"},
    "thead": {"valign"},
    "tfoot": {"valign"},
    "col": {"width", "valign"},
    "colgroup": {"width", "valign"},
    "font": {"color", "face", "size"},
    "img": {"border", "hspace", "vspace"},
    "hr": {"color", "noshade"},
    "div": {"bgcolor"},
}
ATTRIBUTES = {
    tag: set(nh3.ALLOWED_ATTRIBUTES.get(tag, set())) | EXTRA_ATTRIBUTES.get(tag, set())
    for tag in nh3.ALLOWED_ATTRIBUTES.keys() | EXTRA_ATTRIBUTES.keys()
}
URL_SCHEMES = nh3.ALLOWED_URL_SCHEMES | {"cid"}  # an image of the message itself
# The CSS read per message, so that its cost stays a small part of the render deadline
# whatever the HTML (hostile CSS reads at about 2 us a character, real CSS several times
# faster). Senders keep a whole HTML part under Gmail's 102 KB clipping size, so real mail
# stays within both.
MAX_STYLE_TOTAL = 128 * 1024  # characters of `<style>`, all blocks
MAX_ATTRIBUTES_TOTAL = 128 * 1024  # characters of `style` attributes, all elements
_OPEN, _CLOSE = "<style>", "</style>"


class _StyleAttributes:
    """nh3's attribute filter: `style` values through `css.declarations`, within a budget
    (past it, further `style` attributes are dropped); every other value as it is."""

    def __init__(self) -> None:
        self.budget = MAX_ATTRIBUTES_TOTAL

    def __call__(self, tag: str, name: str, value: str) -> str | None:
        if name != "style":
            return value
        self.budget -= len(value)
        return (css.declarations(value) or None) if self.budget >= 0 else None


# nh3 reads a fragment, so `<body bgcolor style>` is gone with its tag; a newsletter's
# backdrop is often there. The first `<body` within the first MAX_BODY_AT characters is
# read (its tag at most MAX_BODY_TAG long), so finding it stays linear and bounded.
MAX_BODY_AT = 64 * 1024
MAX_BODY_TAG = 4 * 1024
_BGCOLOR = re.compile(r"""\sbgcolor\s*=\s*["']?\s*(#?\w{1,20})""", re.IGNORECASE)
_STYLE = re.compile(r"""\sstyle\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)


def body_style(html: str) -> str:
    """The `<body>` tag's `bgcolor` and `style` as one sanitised rule for `body`, or ""."""
    start = html[:MAX_BODY_AT].lower().find("<body")
    if start < 0:
        return ""
    tag = html[start + 5 : start + 5 + MAX_BODY_TAG].split(">", 1)[0]
    found = []
    if (colour := _BGCOLOR.search(tag)) is not None:
        found.append(f"background-color:{colour.group(1)}")
    if (style := _STYLE.search(tag)) is not None:
        found.append(style.group(1) if style.group(1) is not None else style.group(2))
    return css.stylesheet("body{" + ";".join(found) + "}") if found else ""


def clean(html: str) -> str:
    """`html` sanitised for display in a sandboxed frame, styles kept where safe."""
    backdrop = body_style(html)
    cleaned = nh3.clean(
        html,
        tags=TAGS,
        clean_content_tags=CLEAN_CONTENT,
        attributes=ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        # A mail has no base URL: a relative one would resolve against this page's.
        url_relative="deny",
        attribute_filter=_StyleAttributes(),
    )
    return (f"{_OPEN}{backdrop}{_CLOSE}" if backdrop else "") + stylesheets(cleaned)


def stylesheets(cleaned: str) -> str:
    """Each `<style>` element of nh3's output with its text through `css.stylesheet`.

    nh3 writes its tree back out as HTML5 serialisation does: `<` escaped in text and in
    attribute values, comments gone, `<style>` (no attribute is kept on it) closed by the
    first `</style>`, exactly as a browser will read it back. So in this text every
    `<style>` opens a real element: finding them is a linear scan, with no parser of our
    own. Past `MAX_STYLE_TOTAL` characters read, further blocks are dropped.
    """
    out: list[str] = []
    budget = MAX_STYLE_TOTAL
    at = 0
    while (start := cleaned.find(_OPEN, at)) >= 0:
        end = cleaned.find(_CLOSE, start)
        if end < 0:  # not nh3's output; keep nothing after the opening tag
            end = len(cleaned)
        out.append(cleaned[at:start])
        text = cleaned[start + len(_OPEN) : end]
        sheet = css.stylesheet(text[:budget]) if budget > 0 else ""
        budget -= len(text)
        if sheet:
            out.append(f"{_OPEN}{sheet}{_CLOSE}")
        at = end + len(_CLOSE)
    out.append(cleaned[at:])
    return "".join(out)
