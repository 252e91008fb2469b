"""SPF (RFC 7208): `check_host()` over our own resolver.

Why not pyspf: it resolves through dnspython or pydns itself, blocking, and cannot be
handed answers fetched elsewhere. The evaluator is small: record selection (4.5), the
mechanisms and modifiers of section 5 and 6, the macros of section 7 that `include`,
`exists` and `redirect` use, and the processing limits of 4.6.4 (at most 10 terms that
cause DNS lookups, 10 MX names, 2 void lookups). Not done: `ptr` never matches (5.5:
"SHOULD NOT be published", and it costs a PTR plus A lookups per name); `exp` is ignored
(an explanation is for rejections, and we reject nothing).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Protocol

from receiver.intake.authcheck.lookups import ERROR, FOUND, VOID, Result
from receiver.resolver import AAAA, MX, TXT, A

__all__ = ["MAX_LOOKUPS", "SpfResult", "check_host"]

MAX_LOOKUPS = 10  # RFC 7208 4.6.4
MAX_VOID = 2  # RFC 7208 4.6.4
MAX_MX = 10  # RFC 7208 4.6.4: names of one `mx` looked up for addresses
# Macro expansion is the one cost here a record's author controls without a lookup: each
# spec may expand to at most MAX_EXPANSION octets before it is cut to a name (7.3), and all
# of one check's specs to EXPANSION_BUDGET: past either, permerror, never more work.
MAX_EXPANSION = 2048
EXPANSION_BUDGET = 16 * 1024
_QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MECHANISM = re.compile(r"([+\-~?]?)([a-z0-9]+)(?::([^/]*))?(?:/(\d{1,3}))?(?://(\d{1,3}))?")
_KINDS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
_MODIFIER = re.compile(r"([a-z][a-z0-9_.-]*)=(.*)")
_MACRO = re.compile(r"%(?:\{([slodiphv])(\d*)(r?)([.\-+,/_=]*)\}|(.))")
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Asker(Protocol):
    async def ask(self, name: str, qtype: int) -> Result: ...


@dataclass(frozen=True, slots=True)
class SpfResult:
    """The result, the domain checked, and why."""

    result: str
    domain: str
    reason: str = ""
    # A macro named the sender or HELO (7.3): the result holds for this sender only.
    personal: bool = False


class _Stop(Exception):
    """A result that ends the evaluation at once (permerror, temperror)."""

    def __init__(self, result: str, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


@dataclass(slots=True)
class _Budget:
    lookups: int = 0
    voids: int = 0
    expanded: int = 0  # octets of macro expansion so far

    def spend(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_LOOKUPS:
            raise _Stop("permerror", "more than 10 DNS-querying terms")


async def check_host(dns: Asker, ip: str, domain: str, sender: str, helo: str) -> SpfResult:
    """The SPF result for `ip` sending as `sender` (its domain `domain`); never raises."""
    evaluator = _Evaluator(dns, ipaddress.ip_address(ip), sender, helo)
    domain = domain.lower().rstrip(".")
    try:
        result, reason = await evaluator.check(domain, 0)
    except _Stop as stop:
        result, reason = stop.result, stop.reason
    return SpfResult(result, domain, reason, evaluator.personal)


class _Evaluator:
    def __init__(self, dns: Asker, ip: Address, sender: str, helo: str) -> None:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # RFC 7208 5: an IPv4 client seen by a dual-stack socket
        self.dns = dns
        self.ip = ip
        self.sender = sender
        self.helo = helo
        self.budget = _Budget()
        self.personal = False

    async def check(self, domain: str, depth: int) -> tuple[str, str]:
        if not _valid_domain(domain):
            return "none", "not a domain name"
        records = await self._txt(domain)
        if records is None:
            return "none", "no SPF record"
        if len(records) > 1:
            return "permerror", "more than one SPF record"
        return await self._evaluate(records[0], domain, depth)

    async def _txt(self, domain: str) -> list[str] | None:
        answer = await self.dns.ask(domain, TXT)
        if answer.status == ERROR:
            raise _Stop("temperror", f"{answer.why} for {domain}")
        found = [r for r in answer.values if re.match(r"v=spf1( |$)", r, re.IGNORECASE)]
        return found or None

    async def _evaluate(self, record: str, domain: str, depth: int) -> tuple[str, str]:
        terms = record.split()[1:]
        redirect: str | None = None
        directives: list[re.Match[str]] = []
        for term in terms:
            modifier = _MODIFIER.fullmatch(term)
            if modifier is not None and not _MECHANISM.fullmatch(term.lower()):
                name = modifier[1].lower()
                if name == "redirect":
                    if redirect is not None:
                        raise _Stop("permerror", "two redirect modifiers")
                    redirect = modifier[2]
                continue  # `exp` and unknown modifiers are ignored (6, 6.2)
            match = _MECHANISM.fullmatch(term.lower())
            if match is None:
                raise _Stop("permerror", f"bad term {term[:40]!r}")
            if match[2] not in _KINDS:  # 4.6: a syntax error anywhere is a permerror
                raise _Stop("permerror", f"unknown mechanism {match[2][:20]}")
            directives.append(match)
        for match in directives:
            if await self._matches(match, domain, depth):
                return _QUALIFIERS[match[1] or "+"], f"matched {match[0][:60]}"
        if redirect is not None:  # 6.1: only when no mechanism matched
            self.budget.spend()
            target = self._expand(redirect, domain)
            result, reason = await self.check(target, depth + 1)
            if result == "none":
                return "permerror", f"redirect to {target}: no SPF record"
            return result, reason
        return "neutral", "no mechanism matched"

    async def _matches(self, match: re.Match[str], domain: str, depth: int) -> bool:
        kind, argument = match[2], match[3]
        cidr4 = int(match[4]) if match[4] else 32
        cidr6 = int(match[5]) if match[5] else 128
        if cidr4 > 32 or cidr6 > 128:
            raise _Stop("permerror", f"bad prefix in {match[0][:40]}")
        if kind == "all":
            return True
        if kind in ("ip4", "ip6"):
            return self._in_network(kind, argument, match[4] or match[5])
        self.budget.spend()
        target = self._expand(argument, domain) if argument else domain
        if kind == "include":
            return await self._include(target, depth)
        if kind == "exists":
            return bool(await self._addresses(target, A))
        if kind == "ptr":
            return False  # see the module docstring
        if kind == "a":
            return self._hit(await self._addresses(target), cidr4, cidr6)
        return await self._mx(target, cidr4, cidr6)

    async def _include(self, target: str, depth: int) -> bool:
        if depth >= MAX_LOOKUPS:
            raise _Stop("permerror", "include loop")
        if not argument_ok(target):
            raise _Stop("permerror", "include without a domain")
        result, reason = await self.check(target, depth + 1)
        if result in ("temperror", "permerror"):
            raise _Stop(result, reason)
        if result == "none":
            raise _Stop("permerror", f"include:{target} has no SPF record")
        return result == "pass"  # 5.2: fail, softfail and neutral do not match

    async def _mx(self, target: str, cidr4: int, cidr6: int) -> bool:
        exchanges = await self._lookup(target, MX)
        if len(exchanges) > MAX_MX:
            raise _Stop("permerror", f"more than {MAX_MX} MX names for {target}")
        for exchange in exchanges:
            if self._hit(await self._addresses(exchange), cidr4, cidr6):
                return True
        return False

    async def _addresses(self, name: str, qtype: int | None = None) -> tuple[str, ...]:
        asked = qtype or (A if self.ip.version == 4 else AAAA)
        return await self._lookup(name, asked)

    async def _lookup(self, name: str, qtype: int) -> tuple[str, ...]:
        answer = await self.dns.ask(name, qtype)
        if answer.status == ERROR:
            raise _Stop("temperror", f"{answer.why} for {name}")
        if answer.status == VOID or not answer.values:
            self.budget.voids += 1
            if self.budget.voids > MAX_VOID:
                raise _Stop("permerror", "more than 2 void lookups")
        return answer.values if answer.status == FOUND else ()

    def _hit(self, addresses: tuple[str, ...], cidr4: int, cidr6: int) -> bool:
        prefix = cidr4 if self.ip.version == 4 else cidr6
        for text in addresses:
            try:
                network = ipaddress.ip_network(f"{text}/{prefix}", strict=False)
            except ValueError:
                continue
            if network.version == self.ip.version and self.ip in network:
                return True
        return False

    def _in_network(self, kind: str, argument: str | None, prefix: str | None) -> bool:
        text = f"{argument}/{prefix}" if prefix else str(argument)
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise _Stop("permerror", f"bad {kind} {text[:50]!r}") from None
        if (kind == "ip4") != (network.version == 4):
            raise _Stop("permerror", f"{kind} with the other family's address")
        return network.version == self.ip.version and self.ip in network

    def _expand(self, spec: str, domain: str) -> str:
        """Macro expansion (RFC 7208 7.3); the result is cut to 253 octets (7.3). Linear in
        the spec and bounded (see MAX_EXPANSION): a record cannot make this quadratic."""
        produced = 0

        def replace(match: re.Match[str]) -> str:
            nonlocal produced
            text = _replacement(match)
            produced += len(text)
            self.budget.expanded += len(text)
            if produced > MAX_EXPANSION or self.budget.expanded > EXPANSION_BUDGET:
                raise _Stop("permerror", "macro expansion too long")
            return text

        def _replacement(match: re.Match[str]) -> str:
            if match[5] is not None:
                literal = {"%": "%", "_": " ", "-": "%20"}.get(match[5])
                if literal is None:
                    raise _Stop("permerror", "bad macro")
                return literal
            value = self._macro(match[1], domain)
            parts = re.split("[" + re.escape(match[4] or ".") + "]", value)
            if match[3]:
                parts.reverse()
            if match[2]:
                keep = int(match[2])
                if keep == 0:
                    raise _Stop("permerror", "a macro keeps zero labels")
                parts = parts[-keep:]
            return ".".join(parts)

        if len(spec) > MAX_EXPANSION:
            raise _Stop("permerror", "macro spec too long")
        return cut_to_name(_MACRO.sub(replace, spec).rstrip(".")).lower()

    def _macro(self, letter: str, domain: str) -> str:
        if letter in "slh":
            self.personal = True
        local, _, sender_domain = self.sender.rpartition("@")
        if letter == "s":
            return self.sender
        if letter == "l":
            return local or "postmaster"
        if letter == "o":
            return sender_domain
        if letter == "d":
            return domain
        if letter == "h":
            return self.helo
        if letter == "v":
            return "in-addr" if self.ip.version == 4 else "ip6"
        if letter == "p":
            return "unknown"  # 7.3: permitted when the name is not validated
        if self.ip.version == 4:  # "i"
            return str(self.ip)
        return ".".join(self.ip.exploded.replace(":", ""))


def cut_to_name(expanded: str) -> str:
    """Leading labels dropped until at most 253 octets are left (RFC 7208 7.3), in one
    cut: the first dot from which the rest fits (no dot there: the last label)."""
    if len(expanded) <= 253:
        return expanded
    cut = expanded.find(".", len(expanded) - 254)
    return expanded[cut + 1 :] if cut >= 0 else expanded.rpartition(".")[2]


def argument_ok(domain: str) -> bool:
    return bool(domain) and _valid_domain(domain)


def _valid_domain(domain: str) -> bool:
    """A multi-label name with no empty or over-long label (RFC 7208 4.3); an address
    literal (`[192.0.2.1]` as HELO) is none."""
    labels = domain.split(".")
    if len(labels) < 2 or len(domain) > 253:
        return False
    return all(_LABEL.fullmatch(label) for label in labels)
