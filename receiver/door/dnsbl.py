"""DNS lists as data: Postfix's `postscreen_dnsbl_sites` syntax, reply filters, query names.

An operator pastes their postscreen line as it is:

    zen.example*3, b.example*2, wl.example=127.0.[0..255].[1..3]*-2

Each site is a list domain, an optional reply filter and an optional weight (1 when
omitted; negative for allow lists). A filter has four octet patterns, each a number or,
in brackets, `;`-separated numbers and `low..high` ranges. A site is listed when any
address in the answer matches its filter (any answer in 127.0.0.0/8 without one). Sites
that name the same domain share one query and each add their own weight when they match.

Query names follow RFC 5782 2.1 and 2.4: the IPv4 octets or the 32 IPv6 nibbles in
reverse order, then the list domain. Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = [
    "Site",
    "blocked_query",
    "domains",
    "parse_replies",
    "parse_sites",
    "query_name",
    "shown_name",
    "usable",
]

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_SITE = re.compile(r"(?P<domain>[^=*\s]+)(?:=(?P<filter>[^*\s]+))?(?:\*(?P<weight>-?\d{1,6}))?")
_OCTET = re.compile(r"\d{1,3}")
# The reply text names a list: keep it to characters that cannot break an SMTP line.
_SHOWN = re.compile(r"[A-Za-z0-9._:/+-]{1,100}")


@dataclass(frozen=True, slots=True)
class Site:
    """One `dnsbl_sites` entry: a list domain, its reply filter and its weight."""

    domain: str
    weight: int = 1
    # Per octet, the values that match; None: any address in 127.0.0.0/8.
    pattern: tuple[frozenset[int], ...] | None = field(default=None, repr=False)
    text: str = ""  # as the operator wrote it, for messages

    def matches(self, address: str) -> bool:
        """Whether one A record of the answer lists the client for this site."""
        octets = address.split(".")
        if self.pattern is None:
            return octets[0] == "127"
        return all(int(o) in allowed for o, allowed in zip(octets, self.pattern, strict=True))


def parse_sites(text: str) -> tuple[Site, ...]:
    """Parse a `dnsbl_sites` value (sites separated by commas or white space).

    Raises ValueError naming the first entry that is not valid.
    """
    sites = []
    for item in re.split(r"[\s,]+", text.strip()):
        if item:
            sites.append(_site(item))
    return tuple(sites)


def _site(item: str) -> Site:
    match = _SITE.fullmatch(item)
    if match is None:
        raise ValueError(f"{item!r} is not domain[=filter][*weight]")
    domain = match["domain"].lower().rstrip(".")
    labels = domain.split(".")
    if len(labels) < 2 or len(domain) > 200 or not all(_LABEL.fullmatch(x) for x in labels):
        raise ValueError(f"{item!r}: {domain!r} is not a list domain")
    pattern = _filter(item, match["filter"]) if match["filter"] else None
    weight = int(match["weight"]) if match["weight"] is not None else 1
    return Site(domain, weight, pattern, item)


def _filter(item: str, text: str) -> tuple[frozenset[int], ...]:
    # An octet pattern may contain dots ("[0..255]"), so split outside the brackets.
    parts = re.findall(r"\[[^\]]*\]|[^.\[\]]+", text)
    if len(parts) != 4 or ".".join(parts) != text:
        raise ValueError(f"{item!r}: the filter {text!r} is not d.d.d.d")
    return tuple(_octet(item, part) for part in parts)


def _octet(item: str, part: str) -> frozenset[int]:
    if not part.startswith("["):
        return frozenset({_number(item, part)})
    values: set[int] = set()
    for piece in part[1:-1].split(";"):
        low, dots, high = piece.partition("..")
        first = _number(item, low)
        last = _number(item, high) if dots else first
        if last < first:
            raise ValueError(f"{item!r}: the range {piece!r} is empty")
        values.update(range(first, last + 1))
    return frozenset(values)


def _number(item: str, text: str) -> int:
    if not _OCTET.fullmatch(text) or int(text) > 255:
        raise ValueError(f"{item!r}: {text!r} is not a number from 0 to 255")
    return int(text)


def domains(sites: tuple[Site, ...]) -> tuple[str, ...]:
    """The distinct list domains, in the order configured: one query each per client."""
    return tuple(dict.fromkeys(site.domain for site in sites))


def parse_replies(text: str, sites: tuple[Site, ...] = ()) -> dict[str, str]:
    """`list=shown name, ...`: the name a refusal gives for a list (Postfix's
    `postscreen_dnsbl_reply_map`, which hides a list's secret key from clients)."""
    known = set(domains(sites))
    shown: dict[str, str] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        domain, equals, name = (part.strip() for part in item.partition("="))
        domain = domain.lower().rstrip(".")
        if not equals or not _SHOWN.fullmatch(name):
            raise ValueError(f"{item!r} is not list=name (name: letters, digits, . _ : / + -)")
        if known and domain not in known:
            raise ValueError(f"{item!r}: {domain!r} is not in FLOODGATE_DNSBL_SITES")
        shown[domain] = name
    return shown


def query_name(ip: str, domain: str) -> str | None:
    """The name to look up for `ip` in `domain` (RFC 5782 2.1, 2.4); None for an address
    no list can hold (not an IP)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    if isinstance(address, ipaddress.IPv4Address):
        reversed_ = ".".join(reversed(str(address).split(".")))
    else:
        reversed_ = ".".join(reversed(address.exploded.replace(":", "")))
    return f"{reversed_}.{domain}"


def usable(address: str) -> bool:
    """An answer a list may give: in 127.0.0.0/8 (RFC 5782 2.3). Anything else is a
    resolver's invention (NXDOMAIN rewriting, captive portals), never a listing."""
    return address.startswith("127.")


def blocked_query(address: str) -> bool:
    """127.255.255.0/24: the list refuses to answer us (Spamhaus: public resolver, over
    quota); it says nothing about the client."""
    return address.startswith("127.255.255.")


def shown_name(domain: str, replies: Mapping[str, str]) -> str:
    """What a refusal calls the list."""
    return replies.get(domain, domain)
