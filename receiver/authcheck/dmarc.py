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

from receiver.authcheck.lookups import ERROR, Result
from receiver.authcheck.spf import Asker, SpfResult
from receiver.resolver import TXT

__all__ = ["DkimResult", "DmarcResult", "OrgDomains", "Policy", "evaluate", "from_domain"]

_TAG = re.compile(r"\s*([a-z]+)\s*=\s*([^;]*?)\s*(?:;|$)", re.IGNORECASE)
_POLICIES = ("none", "quarantine", "reject")


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

    def __init__(self) -> None:
        self._list = PublicSuffixList()

    def of(self, domain: str) -> str:
        org = self._list.privatesuffix(domain.lower())
        return org if isinstance(org, str) else domain.lower()


def from_domain(values: Iterable[str]) -> str | None:
    """The one domain of the From: field, or None when there is none or more than one
    (RFC 7489 6.6.1: such a message cannot be evaluated)."""
    addresses = email.utils.getaddresses(list(values))
    domains = {addr.rpartition("@")[2].lower().rstrip(".>") for _, addr in addresses if addr}
    domains.discard("")
    return domains.pop() if len(domains) == 1 else None


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


async def evaluate(
    dns: Asker,
    orgs: OrgDomains,
    author: str | None,
    spf: SpfResult,
    dkim: list[DkimResult],
) -> DmarcResult:
    """The DMARC verdict for a From domain, given the SPF (MAIL FROM) and DKIM results."""
    if author is None:
        return DmarcResult("permerror", "", None, False, False, "no single From domain")
    org = orgs.of(author)
    try:
        policy = await _record(dns, author)
        if policy is None and org != author:
            found = await _record(dns, org)
            # 6.6.3: the organizational record's sp= governs its subdomains.
            policy = Policy(found.sp or found.p, None, found.adkim, found.aspf) if found else None
    except LookupError as error:
        return DmarcResult("temperror", author, None, False, False, str(error))
    if policy is None:
        return DmarcResult("none", author, None, False, False, "no DMARC record")
    spf_aligned = spf.result == "pass" and _aligned(spf.domain, author, policy.aspf, orgs)
    dkim_aligned = any(
        d.result == "pass" and _aligned(d.domain, author, policy.adkim, orgs) for d in dkim
    )
    result = "pass" if spf_aligned or dkim_aligned else "fail"
    reason = "aligned " + ", ".join(
        name for name, ok in (("SPF", spf_aligned), ("DKIM", dkim_aligned)) if ok
    )
    if result == "fail":
        reason = "neither SPF nor DKIM passed aligned with the From domain"
    return DmarcResult(result, author, policy.p, spf_aligned, dkim_aligned, reason)


def _aligned(domain: str, author: str, mode: str, orgs: OrgDomains) -> bool:
    """Identifier alignment (RFC 7489 3.1): the same name (strict), or the same
    organizational domain (relaxed)."""
    domain = domain.lower().rstrip(".")
    if not domain:
        return False
    if mode == "s":
        return domain == author
    return orgs.of(domain) == orgs.of(author)
