"""Links and likely one-time codes in a message (synchronous), so a test script need not
scrape HTML.

Runs only inside a render worker process (`api.renderworker`), under its memory limit and
killable deadline (`api.renderpool`), on the subject and the bodies `api.render.bodies`
decoded (transfer encodings and charsets as the message view decodes them). The text
scans are linear; the HTML goes through the standard library's parser, whose one known
quadratic case (a tag left open at the end) is cut off first, and the deadline stops any
other. Every output is bounded: `MAX_LINKS` links of at most `MAX_URL` characters,
`MAX_CODES` codes, `MAX_OUTPUT` characters in all; whatever is left out sets `truncated`.

Only `http`, `https` and `mailto` links are listed: they are what a tester follows (a page
to open, an address to write to). `javascript:` and `data:` links run or carry content of
the sender's choosing in whoever opens them, `file:` reads the opener's own disk, `cid:`
points inside the message itself, and `tel:`/`sms:` are not something a test script opens.
A link is listed as sent: tracking redirects are not followed (we never fetch a URL).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

from api.display import escape_bidi, url_view

__all__ = [
    "MAX_CODES",
    "MAX_LINKS",
    "MAX_URL",
    "body_contains",
    "extract",
    "mark_unsigned",
    "visible_text",
]

MAX_LINKS = 200
# RFC 9110 4.1 recommends supporting URIs of at least 8000 octets; tracking links run long.
MAX_URL = 8_000
MAX_LINK_TEXT = 200  # characters of an anchor's text kept (then "…")
MAX_CODES = 10
MAX_OUTPUT = 512 * 1024  # characters of URLs, link texts and contexts in one answer
MAX_VISIBLE = 1_000_000  # characters of an HTML part's visible text searched for codes
CONTEXT = 40  # characters either side of a code in its `context`
# How far a code may be from the word that announces it: "123456 is your code" puts the
# code before, "Enter this code to verify your address: 123456" well after.
BEFORE, AFTER = 40, 100
SCHEMES = frozenset({"http", "https", "mailto"})

# A URL in plain text ends at white space, quotes or angle brackets (RFC 3986 Appendix C:
# delimiting a URI in text); single character class, so the scan stays linear.
_TEXT_URL = re.compile(r"(?<![\w.+-])(?:https?://|mailto:)[^\s<>\"'`\x00-\x1f\x7f]+", re.I)
_TRAILING = ".,;:!?'\"*_"
_CLOSERS = {")": "(", "]": "[", "}": "{"}
# Words announcing a one-time code (English and a few others); PIN and OTP in capitals only.
_KEYWORD = re.compile(
    # not the codes of a place or a shop: a postal code is no one-time code
    r"\b(?<!zip )(?<!area )(?<!postal )(?<!country )(?<!promo )(?<!coupon )(?<!voucher )"
    r"(?<!discount )"
    # compounds announce codes too (passcode, Bestätigungscode, Sicherheitscode), but not
    # a place's, a shop's or a program's (postcode, Gutscheincode, barcode, decode)
    r"(?!(?:zip|post|postal|bar|qr|promo|rabatt|gutschein|aktions|geschenk|gift|coupon"
    r"|voucher|discount|area|country|de|en|uni|geo|source|short)codes?\b)\w*?codes?\b"
    r"|\bverif(?:y|ication|ied)\b|\bconfirm(?:ation)?\b|\bone[- ]time\b|\b2fa\b"
    # Russian declines the word: код, кода, коду, кодом, коде
    r"|\bcódigo\b|\bcodice\b|\b\u043a\u043e\u0434(?:\u0430|\u0443|\u043e\u043c|\u0435)?\b"
    r"|\b(?-i:PIN|OTP|TAN)\b",
    re.I,
)
# A code: 4-8 digits, 3+3 digits split by a space or hyphen, 4-10 capitals and digits
# with at least one of each, or two groups of 3-5 capitals and digits joined by a hyphen
# (with a digit somewhere). Not the tail or head of a longer number, a price, a path, a
# phone number, a date or a time (the neighbours below), nor a word of a URL.
_CODE = re.compile(
    # "G-123456": a one-letter prefix some senders put before the digits (not the code)
    r"(?:(?<=\b[A-Z]-)|(?<![\w$€£¥₹+#@/\\:.,=&?%~-])(?<!\d[- .])(?<![$€£¥₹] ))"
    # The lookaheads look no further than the candidate itself (10 and 11 characters): an
    # unbounded one rescans the rest of a run of capitals or "A-A-..." from every start,
    # quadratic (32 KB of "A-A-" took 3.5 s).
    r"(\d{3}[- ]\d{3}|\d{4,8}|(?=[A-Z]{0,9}\d)(?=\d{0,9}[A-Z])[A-Z\d]{4,10}"
    r"|(?=[A-Z-]{0,10}\d)[A-Z\d]{3,5}-[A-Z\d]{3,5})"
    r"(?![\w€$£¥₹%/\\:@]|[.,]\d|[- ]\d)"
    r"(?!\s?(?:[€$£¥₹]|(?:USD|EUR|GBP|JPY|CHF|INR|dollars?|euros?)\b))"
)
# What announces a phone number: the candidate right after ("Call us at 555-0199") is
# no code, nor anything shaped like a local phone number (3 digits, hyphen, 4 digits).
_PHONE = re.compile(
    r"\b(?:call|phone|tel|telephone|fax|mobile|cell|dial|hotline|whatsapp|telefon|tel\u00e9fono"
    r"|telefone|telefono|\u0442\u0435\u043b\u0435\u0444\u043e\u043d)\b"
    r"(?:\W{1,3}\w{1,6}){0,2}\W{0,3}$",
    re.I,
)
_LOCAL_PHONE = re.compile(r"\d{3}-\d{4}")
# What a postal or a shop's code is announced by: the candidate right after is no code.
_PLACE = re.compile(
    r"\b(?:zip|post|postal|area|country|promo|coupon|voucher|discount|gutschein|rabatt"
    r"|aktions|bar|qr)\s*codes?\W{0,3}$",
    re.I,
)
_SPACES = re.compile(r"\s+")
# Tags after which a browser starts a new line: kept as a break in the visible text, so
# "code</td><td>123456" does not read as "code123456".
_BLOCKS = frozenset(
    "address article aside blockquote br dd div dl dt footer form h1 h2 h3 h4 h5 h6 header "
    "hr li main nav ol p pre section table tbody td tfoot th thead tr ul".split()
)
_TAG_OPEN = re.compile(r"<[A-Za-z/!?]")  # what starts markup; "a < b" is text
_HIDDEN = frozenset({"script", "style", "head", "template", "noscript"})


@dataclass
class _Found:
    """What one message yields, bounded as it fills."""

    links: list[dict[str, Any]] = field(default_factory=list)
    codes: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False
    _urls: dict[str, int] = field(default_factory=dict)  # url -> its index in `links`
    _size: int = 0

    def link(self, href: str, text: str | None, source: str) -> None:
        url = _usable(href)
        if url is None:
            return
        text = escape_bidi(text) if text else text
        if len(url) > MAX_URL:
            self.truncated = True
            return
        known = self._urls.get(url)
        if known is not None:  # one entry per URL; the first text any part gave it
            if self.links[known]["text"] is None and text:
                self.links[known]["text"] = text
            return
        if len(self.links) >= MAX_LINKS:
            self.truncated = True
            return
        shown = url_view(url)  # bidi escaped, mixed-script host as A-labels, userinfo apart
        if not self._take(len(url) + len(text or "") + sum(len(v or "") for v in shown.values())):
            self.truncated = True
            return
        self._urls[url] = len(self.links)
        self.links.append(
            {"url": url, "text": text or None, "source": source, **shown, "unsigned": False}
        )

    def code(self, code: str, context: str) -> None:
        # "482 913" in the text and "482913" in the HTML are one code, shown as first met.
        key = code.replace(" ", "").replace("-", "")
        if any(found["code"].replace(" ", "").replace("-", "") == key for found in self.codes):
            return
        if len(self.codes) >= MAX_CODES or not self._take(len(code) + len(context)):
            self.truncated = True
            return
        self.codes.append({"code": code, "context": escape_bidi(context), "unsigned": False})

    def _take(self, size: int) -> bool:
        if self._size + size > MAX_OUTPUT:
            return False
        self._size += size
        return True


def extract(
    subject: str, text: str | None, html: str | None, contains: str | None = None
) -> dict[str, Any]:
    """`{"links", "codes", "truncated"}` of a message: links from its HTML part (with their
    anchor text) then its text part, de-duplicated; codes from its subject, text and the
    visible text of its HTML, in that order. With `contains`, also `"contains"`: whether
    the text part or the HTML's visible text holds it, case-insensitively."""
    found = _Found()
    visible = ""
    if html:
        visible = _from_html(html, found)
    if text:
        for match in _TEXT_URL.finditer(text):
            found.link(_trim(match.group()), None, "text")
    for source in (subject, text or "", visible):
        _codes(source, found)
    result: dict[str, Any] = {
        "links": found.links,
        "codes": found.codes,
        "truncated": found.truncated,
    }
    if contains is not None:
        result["contains"] = body_contains(contains, text or "", visible)
    return result


def visible_text(html: str | None) -> str:
    """The text a browser shows of `html` (its links are not kept)."""
    return _from_html(html, _Found()) if html else ""


def body_contains(needle: str, *texts: str) -> bool:
    """Whether any of `texts` holds `needle`, case-insensitively (Unicode case folding),
    white space runs counted as one space. Linear: `str.__contains__` is a two-way search
    (CPython 3.10+, bpo-41972), whose cost is bounded by the text's length and the needle's,
    never their product."""
    wanted = _SPACES.sub(" ", needle.casefold()).strip()
    return any(wanted in _SPACES.sub(" ", text.casefold()) for text in texts)


def mark_unsigned(found: dict[str, Any], signed: dict[str, Any] | None) -> None:
    """Mark in `found` (an `extract` answer) the links and codes that `signed` (the answer
    for the part of the message DKIM signatures cover; None: nothing readable) lacks:
    text appended past a signature's `l=` is not vouched for by it (RFC 6376 8.2)."""
    urls = {link["url"] for link in signed["links"]} if signed else set()
    codes = {code["code"] for code in signed["codes"]} if signed else set()
    for link in found["links"]:
        link["unsigned"] = link["url"] not in urls
    for code in found["codes"]:
        code["unsigned"] = code["code"] not in codes


def _usable(url: str) -> str | None:
    """`url` as a browser would read an href (outer white space dropped, tabs and line
    breaks removed: WHATWG URL), if it is an http(s) URL with a host or a mailto: URL."""
    url = url.strip().replace("\t", "").replace("\n", "").replace("\r", "")
    scheme, colon, rest = url.partition(":")
    if not colon or scheme.lower() not in SCHEMES or not rest:
        return None
    if scheme.lower() == "mailto":
        return url if rest.strip("/?") else None
    try:
        host = urlsplit(url[: MAX_URL + 1]).hostname
    except ValueError:  # e.g. an unbalanced IPv6 bracket: no host a browser would reach
        return None
    return url if host else None


def _trim(url: str) -> str:
    """A URL found in prose without the punctuation that ends the sentence around it: a
    closing bracket stays only if the URL opened one (as in Wikipedia links). Linear: the
    brackets are counted once."""
    opened = {closer: url.count(opener) for closer, opener in _CLOSERS.items()}
    closed = {closer: url.count(closer) for closer in _CLOSERS}
    end = len(url)
    while end:
        last = url[end - 1]
        if last in _CLOSERS and opened[last] < closed[last]:
            closed[last] -= 1
        elif last not in _TRAILING:
            break
        end -= 1
    return url[:end]


class _Anchors(HTMLParser):
    """Links with their anchor text, and the visible text (for codes), in one pass."""

    def __init__(self, found: _Found) -> None:
        super().__init__(convert_charrefs=True)  # entities decoded, in text and attributes
        self.found = found
        self.visible: list[str] = []
        self.visible_size = 0
        self.hidden = 0  # depth inside script, style, head...
        self.href: str | None = None
        self.anchor: list[str] = []
        self.anchor_size = 0  # characters in `anchor`: a running length, never a sum

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in _BLOCKS:
            self._see("\n")
        if tag in ("a", "area"):
            self._close_anchor()  # an <a> inside an open <a> ends it, as in a browser
            href = next((value for name, value in attrs if name == "href"), None)
            if href is not None:
                if tag == "area":  # image-map areas have no text of their own
                    self.found.link(href, _alt(attrs), "html")
                else:
                    self.href = href
        elif tag == "img" and self.href is not None:  # a linked image: its alt is its text
            self._anchor_text(_alt(attrs) or "")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in _HIDDEN:  # <script/>: nothing inside
            self.hidden = max(0, self.hidden - 1)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCKS:
            self._see("\n")
        if tag == "a":
            self._close_anchor()

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        self._see(data)
        if self.href is not None:
            self._anchor_text(data)

    def _anchor_text(self, data: str) -> None:
        """Keep `data` as anchor text while the text is short of `MAX_LINK_TEXT` (what
        is kept is cut there by `_label`): 100,000 images in one link add nothing more."""
        if self.anchor_size <= MAX_LINK_TEXT:
            self.anchor.append(data)
            self.anchor_size += len(data)

    def _see(self, data: str) -> None:
        room = MAX_VISIBLE - self.visible_size
        if len(data) > room:  # visible text past MAX_VISIBLE is not searched for codes
            self.found.truncated = True
        if room > 0:
            self.visible.append(data[:room])
            self.visible_size += min(len(data), room)

    def _close_anchor(self) -> None:
        if self.href is not None:
            self.found.link(self.href, _label("".join(self.anchor)), "html")
        self.href, self.anchor, self.anchor_size = None, [], 0


def _from_html(html: str, found: _Found) -> str:
    """Record the links of `html`; its visible text."""
    parser = _Anchors(found)
    try:
        parser.feed(_finished(html))
        parser.close()
    except Exception:  # the standard parser gave up on some markup: keep what it read
        found.truncated = True
    parser._close_anchor()  # an <a> left open at the end of the part
    return "".join(parser.visible)


def _finished(html: str) -> str:
    """`html` without a markup construct still open at its end (after its last ">"): a
    browser drops a tag cut off by the end of input (the "eof-in-tag" parse error), and
    Python's parser before the fix of CVE-2025-6069 (gh-135462) rescans such a tail from
    every "<" in it: 300 KB of "<a " took it over 45 s, and nothing once cut."""
    tail = _TAG_OPEN.search(html, html.rfind(">") + 1)
    return html if tail is None else html[: tail.start()]


def _alt(attrs: list[tuple[str, str | None]]) -> str | None:
    alt = next((value for name, value in attrs if name in ("alt", "title") and value), None)
    return _label(alt) if alt else None


def _label(text: str) -> str | None:
    text = _SPACES.sub(" ", text).strip()
    if len(text) > MAX_LINK_TEXT:
        text = text[: MAX_LINK_TEXT - 1].rstrip() + "…"
    return text or None


def _codes(text: str, found: _Found) -> None:
    """Codes in `text`: candidates within reach of a word that announces a code."""
    if not text:
        return
    keywords = [(m.start(), m.end()) for m in _KEYWORD.finditer(text)]
    if not keywords:
        return
    starts = [start for start, _ in keywords]
    for match in _CODE.finditer(text):
        if (
            _plausible(match.group())
            and _announced(match, keywords, starts)
            and not _PLACE.search(text, max(0, match.start() - 30), match.start())
            and not _phone(text, match)
        ):
            context = text[max(0, match.start() - CONTEXT) : match.end() + CONTEXT]
            found.code(match.group(), _SPACES.sub(" ", context).strip())
            if len(found.codes) >= MAX_CODES:
                return


def _phone(text: str, match: re.Match[str]) -> bool:
    """Whether the candidate is a phone number: shaped like one, or right after a word
    that announces one (a bounded window: constant work per candidate)."""
    if _LOCAL_PHONE.fullmatch(match.group()):
        return True
    return _PHONE.search(text, max(0, match.start() - 30), match.start()) is not None


def _announced(match: re.Match[str], keywords: list[tuple[int, int]], starts: list[int]) -> bool:
    """A keyword ends at most AFTER characters before the candidate, or starts at most
    BEFORE characters after it (the nearest on each side decides: a bisection)."""
    index = bisect.bisect_right(starts, match.start())
    if index > 0 and 0 <= match.start() - keywords[index - 1][1] <= AFTER:
        return True
    return index < len(keywords) and 0 <= keywords[index][0] - match.end() <= BEFORE


def _plausible(code: str) -> bool:
    """Not a year (1900-2099) nor a compact date (YYYYMMDD): what a mail about a code
    most often also carries near the word "code"."""
    if not code.isdigit():
        return True
    if len(code) == 4:
        return not 1900 <= int(code) <= 2099
    if len(code) == 8:
        year, month, day = int(code[:4]), int(code[4:6]), int(code[6:])
        return not (1900 <= year <= 2099 and 1 <= month <= 12 and 1 <= day <= 31)
    return True
