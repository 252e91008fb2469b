"""One envelope grammar (RFC 5321 4.1.2, RFC 6531 3.3) for the receiver and the API.

`parse_path` reads the address in `MAIL FROM:` / `RCPT TO:`; `canonical_mailbox` gives the
form every mailbox is stored and looked up under: lowercase, no trailing dot on the
domain, quoted local parts unquoted when they are plain dot-strings. A path that cannot
be put in that form is refused, so nothing is accepted that the API could not serve.
Everything here is linear in the input, which the caller has already capped.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

MAX_LOCAL = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 4.5.3.1.2
MAX_PATH = 256  # RFC 5321 4.5.3.1.3, brackets included

# atext (RFC 5322 3.2.3); with SMTPUTF8, any non-ASCII character too (RFC 6531 3.3).
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_DOT_STRING_UTF8 = re.compile(rf"(?:[{_ATEXT}]|[^\x00-\x7f])+(?:\.(?:[{_ATEXT}]|[^\x00-\x7f])+)*")
# qtextSMTP / quoted-pairSMTP (RFC 5321 4.1.2): printable ASCII, backslash escapes.
_QUOTED = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e]|[^\x00-\x7f])*)"')
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_LABEL_UTF8 = re.compile(r"(?:[A-Za-z0-9]|[^\x00-\x7f])(?:(?:[A-Za-z0-9-]|[^\x00-\x7f]){0,61})")
# A source route (obsolete, RFC 5321 4.1.2 A-d-l, "MUST BE accepted ... SHOULD ignore").
_SOURCE_ROUTE = re.compile(r"@[^,:<>@]+(?:,@[^,:<>@]+)*:")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
# Nearly every real path is a plain <dot-string@domain> with ASCII labels: one match
# answers it; everything else takes the general route below.
_ATOM = rf"[{_ATEXT}]+"
_PLAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_PATH = re.compile(
    rf"<({_ATOM}(?:\.{_ATOM})*)@({_PLAIN_LABEL}(?:\.{_PLAIN_LABEL})*)>(?: +(.*))?",
    re.ASCII | re.DOTALL,
)


class AddressError(ValueError):
    """Why a path was refused: `kind` is "syntax" (501), "mailbox" (553 5.1.x) or "utf8"
    (553 5.6.7: non-ASCII without SMTPUTF8)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed mailbox: canonical text, its parts, and whether it needs SMTPUTF8."""

    local: str
    domain: str  # canonical: lowercase, no trailing dot; "" for a bare <postmaster>
    utf8: bool

    @property
    def mailbox(self) -> str:
        return f"{self.local}@{self.domain}" if self.domain else self.local


NULL_SENDER = Address("", "", False)


def parse_path(text: str, *, utf8: bool) -> tuple[Address, str]:
    """Split `<path> params` (or a bare mailbox, as Postfix tolerates) into the address
    and the parameter text. `<>` gives `NULL_SENDER`; `<postmaster>` gives a local part
    with an empty domain (the caller decides which domain it means).

    Raises AddressError. `utf8` says whether non-ASCII is allowed (SMTPUTF8 in force).
    """
    plain = _PLAIN_PATH.fullmatch(text)
    if plain is not None and not _CONTROLS.search(text):
        local, domain, params = plain.groups()
        if len(local) <= MAX_LOCAL and len(local) + len(domain) + 3 <= MAX_PATH:
            return Address(local.lower(), domain.lower(), False), (params or "").strip(" ")
    return _parse_path(text, utf8=utf8)


def _parse_path(text: str, *, utf8: bool) -> tuple[Address, str]:
    """The general route of `parse_path`: any path the grammar allows."""
    if _CONTROLS.search(text):
        raise AddressError("syntax", "control characters in address")
    text = text.lstrip(" ")
    if text.startswith("<"):
        close = _closing_bracket(text)
        inner, rest = text[1:close], text[close + 1 :]
        if rest and not rest.startswith(" "):
            raise AddressError("syntax", "text after the closing bracket")
    else:
        inner, _, rest = text.partition(" ")
    if len(inner) + 2 > MAX_PATH:
        raise AddressError("mailbox", "path longer than 256 octets")
    if inner == "":
        return NULL_SENDER, rest.strip(" ")
    route = _SOURCE_ROUTE.match(inner)
    if route:
        inner = inner[route.end() :]  # source routes are ignored (RFC 5321 C)
    return mailbox(inner, utf8=utf8), rest.strip(" ")


def mailbox(text: str, *, utf8: bool) -> Address:
    """Parse `local@domain` (or a bare `postmaster`) into its canonical form."""
    if not utf8 and not text.isascii():
        raise AddressError("utf8", "non-ASCII address without SMTPUTF8")
    if text.lower() == "postmaster":  # RFC 5321 4.5.1: must be accepted without a domain
        return Address("postmaster", "", False)
    local, domain = _split(text)
    return Address(_local_part(local, utf8), _domain(domain, utf8), not text.isascii())


def canonical_mailbox(text: str) -> str | None:
    """The stored form of a mailbox typed by a user (API paths), or None if invalid."""
    try:
        address = mailbox(text, utf8=True)
    except AddressError:
        return None
    return address.mailbox if address.domain else None


def _closing_bracket(text: str) -> int:
    # The first '>' outside a quoted local part closes the path.
    quoted = escaped = False
    for index, char in enumerate(text):  # bounded by the command line cap
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    raise AddressError("syntax", "missing closing '>'")


def _split(text: str) -> tuple[str, str]:
    if text.startswith('"'):
        match = _QUOTED.match(text)
        if match is None or text[match.end() : match.end() + 1] != "@":
            raise AddressError("syntax", "malformed quoted local part")
        return text[: match.end()], text[match.end() + 1 :]
    local, at, domain = text.rpartition("@")
    if not at or not local:
        raise AddressError("syntax", "address must be local-part@domain")
    return local, domain


def _local_part(local: str, utf8: bool) -> str:
    if local.startswith('"'):
        # "abc"@x is abc@x (RFC 5321 4.1.2); anything that needs the quotes is refused,
        # since no mailbox of ours could be named by it.
        inner = re.sub(r"\\(.)", r"\1", local[1:-1])
        if not _dot_string(inner, utf8):
            raise AddressError("mailbox", "quoted local part is not a plain mailbox name")
        local = inner
    elif not _dot_string(local, utf8):
        raise AddressError("syntax", "invalid local part")
    if len(local.encode()) > MAX_LOCAL:
        raise AddressError("mailbox", "local part longer than 64 octets")
    return local.lower()


def _dot_string(text: str, utf8: bool) -> bool:
    pattern = _DOT_STRING_UTF8 if utf8 else _DOT_STRING
    return pattern.fullmatch(text) is not None


def _domain(domain: str, utf8: bool) -> str:
    if domain.startswith("["):
        return _address_literal(domain)
    domain = domain[:-1] if domain.endswith(".") else domain  # canonical: no root dot
    if not domain or len(domain.encode()) > MAX_DOMAIN:
        raise AddressError("syntax", "invalid domain")
    label = _LABEL_UTF8 if utf8 else _LABEL
    for part in domain.split("."):
        if label.fullmatch(part) is None or part.endswith("-"):
            raise AddressError("syntax", "invalid domain")
    return domain.lower()


def _address_literal(literal: str) -> str:
    if not literal.endswith("]"):
        raise AddressError("syntax", "invalid address literal")
    body = literal[1:-1]
    try:
        if body[:5].lower() == "ipv6:":
            return f"[ipv6:{ipaddress.IPv6Address(body[5:]).compressed}]"
        return f"[{ipaddress.IPv4Address(body)}]"
    except ValueError:
        raise AddressError("syntax", "invalid address literal") from None
