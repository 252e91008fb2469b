"""A CSS sanitiser for mail: keeps what paints (colours, fonts, spacing, borders, tables),
drops everything that could fetch or run, in one linear pass over bounded input.

Mail's HTML is styled with `<style>` blocks and `style` attributes; a sanitiser that strips
them shows a newsletter as plain text, one that passes them through lets a sender fetch
from the reader (`url()`, `image-set()`, `@import`, `@font-face`: a read receipt) or, in old
engines, run code (`expression()`, `behavior`, `-moz-binding`). So this is an allowlist:
properties from `PROPERTIES`, values made only of keywords, numbers, dimensions, colours
and the functions in `FUNCTIONS` (none of which takes a URL); `@media` is kept, every other
at-rule dropped whole. A backslash escape (CSS Syntax 3, 4.3.7) could spell any name out of
allowed characters (`u\72l(`), so a declaration or rule containing one is dropped, as is any
`<` (nothing may close the `<style>` element it is written back into).

Cost: the tokenizer is one regular expression whose every alternative either always matches
or fails at once (an unterminated comment or string runs to the end, as CSS Syntax 3 reads
it), so no input makes it go back over what it read; the parser visits each token once.
Input is cut at `MAX_SHEET` characters and `MAX_RULES` rules; block nesting beyond
`@media` and parentheses deeper than `MAX_DEPTH` drop what holds them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

MAX_SHEET = 128 * 1024  # characters of one stylesheet read; a newsletter's is 5-40 KB
MAX_ATTRIBUTE = 8 * 1024  # characters of one style attribute read
MAX_RULES = 2_000  # rules kept per stylesheet (a large newsletter has a few hundred)
MAX_DEPTH = 8  # nested parentheses in a value, e.g. calc((1px + 2px) * 3)

# What paints and nothing else: no property here takes a URL or an image (no
# background-image, list-style-image, border-image, cursor, content, filter, mask,
# clip-path), and none places an element outside its flow but `position`, held to
# static and relative below.
PROPERTIES = frozenset(
    """color background background-color opacity visibility
    font font-family font-size font-style font-weight font-variant line-height
    letter-spacing word-spacing white-space word-break word-wrap overflow-wrap hyphens
    text-align text-decoration text-decoration-color text-decoration-line
    text-decoration-style text-indent text-transform text-shadow text-overflow direction
    unicode-bidi vertical-align
    margin margin-top margin-right margin-bottom margin-left
    padding padding-top padding-right padding-bottom padding-left
    border border-top border-right border-bottom border-left border-color border-style
    border-width border-radius border-top-color border-right-color border-bottom-color
    border-left-color border-top-style border-right-style border-bottom-style
    border-left-style border-top-width border-right-width border-bottom-width
    border-left-width border-top-left-radius border-top-right-radius
    border-bottom-left-radius border-bottom-right-radius border-collapse border-spacing
    outline outline-color outline-style outline-width box-shadow box-sizing
    width height min-width min-height max-width max-height
    display float clear overflow overflow-x overflow-y table-layout empty-cells
    caption-side list-style-type list-style-position
    position top right bottom left z-index
    flex flex-direction flex-wrap flex-grow flex-shrink flex-basis justify-content
    align-items align-self align-content gap row-gap column-gap order""".split()
)
# `position: fixed` or `absolute` lays a box over the rest of the message (a fake button
# over the real text); `sticky` follows the reader's scrolling.
KEYWORD_ONLY = {"position": frozenset({"static", "relative"})}
FUNCTIONS = frozenset({"rgb", "rgba", "hsl", "hsla", "calc"})  # colours and arithmetic
STRINGS = frozenset({"font", "font-family"})  # "Segoe UI": elsewhere a string is content
KEPT_AT_RULES = frozenset({"media"})

_TOKEN = re.compile(
    r"""(?P<comment>/\*[\s\S]*?(?:\*/|\Z))
    |(?P<cdx><!--|-->)
    |(?P<ws>\s+)
    |(?P<string>"[^"\\\n]*"?|'[^'\\\n]*'?)
    |(?P<at>@-?[^\W\d][\w-]*)
    |(?P<hash>\#[\w-]+)
    |(?P<number>[+-]?(?:\d+(?:\.\d+)?|\.\d+)(?:e[+-]?\d+)?(?:%|[^\W\d][\w-]*)?)
    |(?P<ident>--[\w-]*|-?[^\W\d][\w-]*)
    |(?P<char>[\s\S])""",
    re.VERBOSE | re.IGNORECASE,
)


class Token(NamedTuple):  # a tuple: the cheapest object to make once per token
    kind: str  # ws string at hash number ident function char
    text: str


def tokens(text: str) -> Iterator[Token]:
    """CSS tokens of `text`, comments and HTML comment markers (CDO/CDC) left out; a
    function token is its name with the `(`."""
    pending: Token | None = None
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "char"
        if kind in ("comment", "cdx"):
            continue
        token = Token(kind, match.group())
        if pending is not None:
            if pending.kind == "ident" and token.text == "(":
                token = Token("function", pending.text + "(")
            else:
                yield pending
        pending = token
    if pending is not None:
        yield pending


def _bad(token: Token) -> bool:
    """A token that no kept CSS may contain: an escape, a `<`, an unterminated string."""
    if token.kind == "string" and (len(token.text) < 2 or token.text[-1] != token.text[0]):
        return True
    return "<" in token.text or "\\" in token.text


def declarations(text: str) -> str:
    """A `style` attribute's declarations, sanitised: `a:b;c:d`, or "" if none is kept."""
    return ";".join(_declarations(list(tokens(text[:MAX_ATTRIBUTE]))))


def stylesheet(text: str) -> str:
    """A `<style>` element's text, sanitised: rules whose selectors and declarations are
    all safe, `@media` blocks around them; never a `<` or a backslash."""
    reader = _Reader(list(tokens(text[:MAX_SHEET])))
    return "".join(reader.rules(nested=False))


class _Reader:
    """Walks the token list once, rule by rule, in the shape of CSS Syntax 3 section 5."""

    def __init__(self, items: list[Token]) -> None:
        self.items = items
        self.at = 0
        self.kept = 0

    def rules(self, nested: bool) -> Iterator[str]:
        while self.at < len(self.items):
            token = self.items[self.at]
            if token.kind == "ws" or token.text == ";":
                self.at += 1
            elif token.text == "}":
                self.at += 1
                if nested:
                    return
            elif token.kind == "at":
                yield from self._at_rule(nested)
            else:
                prelude, block = self._prelude(), self._block()
                selector = _selector(prelude)
                body = ";".join(_declarations(block)) if block is not None else ""
                if selector and body and self.kept < MAX_RULES:
                    self.kept += 1
                    yield f"{selector}{{{body}}}"

    def _at_rule(self, nested: bool) -> Iterator[str]:
        name = self.items[self.at].text[1:].lower()
        self.at += 1
        prelude = self._prelude()
        if self.at >= len(self.items) or self.items[self.at].text != "{":
            self.at += 1  # `@import ...;`, `@charset ...;`: statements, all dropped
            return
        self.at += 1
        condition = _media_query(prelude)
        if name in KEPT_AT_RULES and not nested and condition is not None:
            inner = "".join(self.rules(nested=True))
            if inner:
                yield f"@media {condition}{{{inner}}}"
        else:
            self._skip_block()

    def _prelude(self) -> list[Token]:
        """Tokens up to the `{` that opens a block or the `;` that ends a statement."""
        start = self.at
        while self.at < len(self.items) and self.items[self.at].text not in "{;":
            self.at += 1
        return self.items[start : self.at]

    def _block(self) -> list[Token] | None:
        """The tokens of the `{...}` block here (consumed), or None if there is none or
        it holds a block of its own (CSS nesting: not read, dropped whole)."""
        if self.at >= len(self.items) or self.items[self.at].text != "{":
            self.at += 1
            return None
        self.at += 1
        start = self.at
        while self.at < len(self.items) and self.items[self.at].text not in "{}":
            self.at += 1
        if self.at < len(self.items) and self.items[self.at].text == "{":
            self._skip_block()  # from the inner `{` to the outer block's `}`
            return None
        self.at += 1
        return self.items[start : self.at - 1]

    def _skip_block(self) -> None:
        """Past the `}` that closes the block we are in, nested blocks and all."""
        depth = 1
        while self.at < len(self.items) and depth:
            text = self.items[self.at].text
            depth += (text == "{") - (text == "}")
            self.at += 1


_SELECTOR_CHARS = frozenset(".*>+~,:=[]|^$()")


def _selector(prelude: list[Token]) -> str | None:
    """The selector, whitespace collapsed, if every token is one a selector needs."""
    for token in prelude:
        if _bad(token) or token.kind == "at":
            return None
        if token.kind == "char" and token.text not in _SELECTOR_CHARS:
            return None
    text = _joined(prelude)
    return text or None


def _media_query(prelude: list[Token]) -> str | None:
    """`screen and (max-width: 600px)`: keywords, numbers, `(`, `)`, `:`, `,` only."""
    for token in prelude:
        if token.kind not in ("ws", "ident", "number") and token.text not in "():,":
            return None
    return _joined(prelude) or None


def _declarations(block: list[Token]) -> Iterator[str]:
    start = 0
    for end in range(len(block) + 1):
        if end == len(block) or block[end].text == ";":
            kept = _declaration(block[start:end])
            if kept:
                yield kept
            start = end + 1


def _declaration(part: list[Token]) -> str | None:
    """`name: value` if the property is allowed and every token of the value is safe."""
    words = [token for token in part if token.kind != "ws"]
    if len(words) < 3 or words[0].kind != "ident" or words[1].text != ":":
        return None
    name = words[0].text.lower()
    value = part[part.index(words[1]) + 1 :]
    if name not in PROPERTIES:
        return None
    if not _safe_value(name, value):
        return _colour_of(value) if name == "background" else None
    shown = _joined(value)
    allowed = KEYWORD_ONLY.get(name)
    if allowed is not None and shown.lower().removesuffix("!important").strip() not in allowed:
        return None
    return f"{name}:{shown}" if shown else None


_VALUE_CHARS = frozenset(",/%!.+-*#")


def _safe_value(name: str, value: list[Token]) -> bool:
    depth = 0
    for token in value:
        if _bad(token) or token.kind == "at":
            return False
        if token.kind == "function":
            if token.text[:-1].lower() not in FUNCTIONS:
                return False
            depth += 1
        elif token.text == "(":
            depth += 1
        elif token.text == ")":
            depth -= 1
        elif token.kind == "string" and name not in STRINGS:
            return False
        elif token.kind == "char" and token.text not in _VALUE_CHARS:
            return False
        if not 0 <= depth <= MAX_DEPTH:
            return False
    return depth == 0


def _colour_of(value: list[Token]) -> str | None:
    """`background: #e4572e url(hero.png) no-repeat` painted as its colour alone."""
    colour = next((token.text for token in value if token.kind == "hash"), None)
    return None if colour is None else f"background-color:{colour}"


def _joined(items: list[Token]) -> str:
    return "".join(" " if token.kind == "ws" else token.text for token in items).strip()
