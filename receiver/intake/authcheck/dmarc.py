"""DMARC (RFC 7489): the From domain, its published policy, and identifier alignment.

The organizational domain (RFC 7489 3.2) comes from the Public Suffix List shipped in the
`publicsuffixlist` package: no download at run time, updated with the package.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from receiver.intake.authcheck.authserv import decode_words
from receiver.intake.authcheck.lookups import ERROR, Result
from receiver.intake.authcheck.spf import Asker, SpfResult
from receiver.resolver import TXT

__all__ = [
    "ENCODED_FROM",
    "DkimResult",
    "DmarcResult",
    "OrgDomains",
    "Policy",
    "encoded_from",
    "from_domain",
    "policy",
    "verdict",
]

_TAG = re.compile(r"\s*([a-z]+)\s*=\s*([^;]*?)\s*(?:;|$)", re.IGNORECASE)
_POLICIES = ("none", "quarantine", "reject")
# One plain address, bare or in angle brackets after a display name with no special
# characters: the From: of almost every message. Anything else goes to the full parser.
_LOCAL, _DOMAIN = r"[A-Za-z0-9._+=-]+", r"([A-Za-z0-9.-]+)"
ENCODED_FROM = (
    "From domain written as an encoded word (RFC 2047 5 forbids one in an address), "
    "judged as the domain it decodes to"
)
_SIMPLE_FROM = re.compile(rf"\s*(?:[A-Za-z0-9 ._-]*<{_LOCAL}@{_DOMAIN}>|{_LOCAL}@{_DOMAIN})\s*")


@dataclass(frozen=True, slots=True)
class DkimResult:
    result: str
    domain: str
    selector: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Policy:
    """A DMARC record's tags that a verdict needs."""

    p: str
    sp: str | None = None
    adkim: str = "r"
    aspf: str = "r"


@dataclass(frozen=True, slots=True)
class DmarcResult:
    result: str
    domain: str
    policy: str | None
    spf_aligned: bool
    dkim_aligned: bool
    reason: str = ""


class OrgDomains:
    """Organizational domains (RFC 7489 3.2) from the bundled Public Suffix List."""

    def __init__(self, size: int = 4096) -> None:
        self._list = PublicSuffixList()
        self._known: dict[str, str] = {}
        self._size = size

    def of(self, domain: str) -> str:
        domain = domain.lower()
        known = self._known.get(domain)
        if known is None:
            org = self._list.privatesuffix(domain)
            known = org if isinstance(org, str) else domain
            if len(self._known) >= self._size:
                self._known.clear()  # bounded; refilled from the list, which is in memory
            self._known[domain] = known
        return known


def from_domain(values: Iterable[str]) -> str | None:
    """The one domain of the From: field, or None when there is none or more than one
    (RFC 7489 6.6.1: such a message cannot be evaluated)."""
    values = list(values)
    if len(values) == 1:
        simple = _SIMPLE_FROM.fullmatch(values[0])
        if simple is not None:  # `Name <a@b>` or `a@b`: no parser needed
            return (simple[1] or simple[2]).lower().rstrip(".")
    addresses = email.utils.getaddresses(values)
    # An encoded word where the domain should be is judged as what a lenient reader
    # shows (`ceo@=?utf-8?q?bank.test?=` as bank.test): the policy the sender borrows.
    domains = {
        decode_words(addr.rpartition("@")[2]).strip().lower().rstrip(".>")
        for _, addr in addresses
        if addr
    }
    domains.discard("")
    return domains.pop() if len(domains) == 1 else None


def encoded_from(values: Iterable[str]) -> bool:
    """Whether an address of the From: field has an encoded word in its domain."""
    return any("=?" in addr.rpartition("@")[2] for _, addr in email.utils.getaddresses(values))


def parse_record(text: str) -> Policy | None:
    """A `v=DMARC1` record's policy; None when the record is not usable (6.6.3)."""
    tags: dict[str, str] = {}
    for match in _TAG.finditer(text[:2048]):
        tags.setdefault(match[1].lower(), match[2].lower())
    if tags.get("v") != "dmarc1":
        return None
    p = tags.get("p")
    if p not in _POLICIES:
        if "rua" not in tags:
            return None
        p = "none"  # 6.6.3: a bad or missing p= with rua= is treated as p=none
    sp = tags.get("sp")
    return Policy(
        p=p,
        sp=sp if sp in _POLICIES else None,
        adkim="s" if tags.get("adkim") == "s" else "r",
        aspf="s" if tags.get("aspf") == "s" else "r",
    )


async def _record(dns: Asker, domain: str) -> Policy | None:
    answer: Result = await dns.ask(f"_dmarc.{domain}", TXT)
    if answer.status == ERROR:
        raise LookupError(answer.why)
    records = [r for r in answer.values if re.match(r"v\s*=\s*DMARC1\b", r, re.IGNORECASE)]
    if len(records) != 1:
        return None  # none, or more than one: no policy (6.6.3)
    return parse_record(records[0])


async def policy(dns: Asker, orgs: OrgDomains, author: str | None) -> Policy | None:
    """The policy that governs `author`: its own record, else its organizational
    domain's (6.6.3: whose `sp=` governs subdomains). Raises LookupError on a DNS failure."""
    if author is None:
        return None
    found = await _record(dns, author)
    org = orgs.of(author)
    if found is None and org != author:
        parent = await _record(dns, org)
        if parent is not None:
            found = Policy(parent.sp or parent.p, None, parent.adkim, parent.aspf)
    return found


def verdict(
    orgs: OrgDomains,
    author: str | None,
    found: Policy | None,
    spf: SpfResult,
    dkim: list[DkimResult],
) -> DmarcResult:
    """The DMARC result for a From domain, its policy, and the SPF (MAIL FROM) and DKIM
    results."""
    if author is None:
        return DmarcResult("permerror", "", None, False, False, "no single From domain")
    if found is None:
        return DmarcResult("none", author, None, False, False, "no DMARC record")
    spf_aligned = spf.result == "pass" and _aligned(spf.domain, author, found.aspf, orgs)
    dkim_aligned = any(
        d.result == "pass" and _aligned(d.domain, author, found.adkim, orgs) for d in dkim
    )
    if not (spf_aligned or dkim_aligned):
        reason = "neither SPF nor DKIM passed aligned with the From domain"
        return DmarcResult("fail", author, found.p, False, False, reason)
    reason = "aligned " + ", ".join(
        name for name, ok in (("SPF", spf_aligned), ("DKIM", dkim_aligned)) if ok
    )
    return DmarcResult("pass", author, found.p, spf_aligned, dkim_aligned, reason)


def _aligned(domain: str, author: str, mode: str, orgs: OrgDomains) -> bool:
    """Identifier alignment (RFC 7489 3.1): the same name (strict), or the same
    organizational domain (relaxed)."""
    domain = domain.lower().rstrip(".")
    if not domain:
        return False
    if mode == "s":
        return domain == author
    return orgs.of(domain) == orgs.of(author)
