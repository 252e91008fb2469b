"""SPF (receiver.intake.authcheck.spf) against records served by a real DNS server on loopback,
through the receiver's own resolver and the checks' cache."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from receiver.intake.authcheck.lookups import Lookups
from receiver.intake.authcheck.spf import check_host
from receiver.resolver import Resolver
from tests.support.dnsserver import SERVFAIL, TIMEOUT, DnsServer, Record, closed_port

RECORDS = {
    "TXT:shop.test": Record.txt("v=spf1 ip4:127.0.0.2 ~all"),
    "TXT:strict.test": Record.txt("v=spf1 ip4:127.0.0.0/30 -all"),
    "TXT:open.test": Record.txt("v=spf1 ?all"),
    "TXT:inc.test": Record.txt("v=spf1 include:shop.test -all"),
    "TXT:redir.test": Record.txt("v=spf1 redirect=strict.test"),
    "TXT:amx.test": Record.txt("v=spf1 a:host.amx.test/32 mx -all"),
    "A:host.amx.test": Record.a("127.0.0.5"),
    "MX:amx.test": Record.mx("mx1.amx.test", "mx2.amx.test"),
    "A:mx2.amx.test": Record.a("127.0.0.6"),
    "A:mx1.amx.test": Record.a("127.0.0.7"),
    "TXT:macro.test": Record.txt("v=spf1 exists:%{ir}.%{l}.allow.macro.test -all"),
    "A:2.0.0.127.bounce.allow.macro.test": Record.a("127.0.0.2"),
    "TXT:two.test": Record.txt("v=spf1 -all", "v=spf1 +all"),
    "TXT:nospf.test": Record.txt("google-site-verification=abc"),
    "TXT:bad.test": Record.txt("v=spf1 ip4:127.0.0.2 frobnicate -all"),
    "TXT:loop.test": Record.txt("v=spf1 include:loop.test -all"),
    "TXT:voids.test": Record.txt("v=spf1 a:n1.voids.test a:n2.voids.test a:n3.voids.test -all"),
    "TXT:many.test": Record.txt("v=spf1 " + " ".join(f"a:h{i}.many.test" for i in range(11))),
    "TXT:broken.test": SERVFAIL,
    "TXT:slow.test": TIMEOUT,
    "TXT:v6.test": Record.txt("v=spf1 ip6:2001:db8::/32 -all"),
}
for i in range(11):
    RECORDS[f"A:h{i}.many.test"] = Record.a("192.0.2.1")


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(RECORDS) as server:
        yield server


@pytest.fixture
async def lookups(dns: DnsServer) -> AsyncIterator[Lookups]:
    resolver = Resolver((("127.0.0.1", dns.port),), max_in_flight=100, rate=1000)
    await resolver.open()
    yield Lookups(resolver, timeout=0.5, size=100, ttl=60)
    resolver.close()


async def spf(lookups: Lookups, ip: str, domain: str, sender: str = "") -> tuple[str, str]:
    result = await check_host(lookups, ip, domain, sender or f"bounce@{domain}", "mail.test")
    return result.result, result.reason


@pytest.mark.parametrize(
    ("ip", "domain", "expected"),
    [
        ("127.0.0.2", "shop.test", "pass"),
        ("127.0.0.3", "shop.test", "softfail"),
        ("127.0.0.3", "strict.test", "pass"),
        ("127.0.0.4", "strict.test", "fail"),
        ("127.0.0.9", "open.test", "neutral"),
        ("127.0.0.2", "inc.test", "pass"),
        ("127.0.0.3", "inc.test", "fail"),  # include's softfail does not match: -all
        ("127.0.0.1", "redir.test", "pass"),
        ("127.0.0.8", "redir.test", "fail"),
        ("127.0.0.5", "amx.test", "pass"),  # a:
        ("127.0.0.6", "amx.test", "pass"),  # mx, second exchange
        ("127.0.0.9", "amx.test", "fail"),
        ("127.0.0.2", "macro.test", "pass"),  # exists: with %{ir} and %{l}
        ("127.0.0.3", "macro.test", "fail"),
        ("2001:db8::1", "v6.test", "pass"),
        ("::ffff:127.0.0.2", "shop.test", "pass"),  # an IPv4 client on a dual-stack socket
    ],
)
async def test_results_by_client_address(
    lookups: Lookups, ip: str, domain: str, expected: str
) -> None:
    assert (await spf(lookups, ip, domain))[0] == expected


@pytest.mark.parametrize(
    ("domain", "expected", "reason"),
    [
        ("nowhere.test", "none", "no SPF record"),
        ("nospf.test", "none", "no SPF record"),
        ("localhost", "none", "not a domain name"),
        ("[127.0.0.2]", "none", "not a domain name"),  # an address literal as HELO
        ("two.test", "permerror", "more than one SPF record"),
        ("bad.test", "permerror", "unknown mechanism frobnicate"),
        ("loop.test", "permerror", "more than 10 DNS-querying terms"),
        ("voids.test", "permerror", "more than 2 void lookups"),
        ("many.test", "permerror", "more than 10 DNS-querying terms"),
        ("broken.test", "temperror", "DNS servfail for broken.test"),
    ],
)
async def test_errors_and_limits(lookups: Lookups, domain: str, expected: str, reason: str) -> None:
    assert await spf(lookups, "127.0.0.2", domain) == (expected, reason)


async def test_a_silent_server_is_a_temperror_within_the_lookup_timeout(lookups: Lookups) -> None:
    started = time.monotonic()
    assert (await spf(lookups, "127.0.0.2", "slow.test"))[0] == "temperror"
    assert time.monotonic() - started < 0.5 + 0.3


async def test_answers_are_cached_and_failures_are_not(lookups: Lookups, dns: DnsServer) -> None:
    for _ in range(3):
        assert (await spf(lookups, "127.0.0.2", "inc.test"))[0] == "pass"
        assert (await spf(lookups, "127.0.0.2", "broken.test"))[0] == "temperror"
    assert dns.queries.count("inc.test") == 1
    assert dns.queries.count("shop.test") == 1
    assert dns.queries.count("broken.test") == 3


async def test_a_dead_resolver_gives_temperror() -> None:
    resolver = Resolver((("127.0.0.1", closed_port()),), max_in_flight=10, rate=100)
    await resolver.open()
    try:
        lookups = Lookups(resolver, timeout=0.2, size=10, ttl=60)
        started = time.monotonic()
        assert (await spf(lookups, "127.0.0.2", "shop.test"))[0] == "temperror"
        assert time.monotonic() - started < 0.5
    finally:
        resolver.close()


# --- macro expansion: linear, bounded -------------------------------------------------


class NoDns:
    async def ask(self, name: str, qtype: int) -> object:
        raise AssertionError("macro expansion asks no one")


def _evaluator(sender: str) -> object:
    import ipaddress

    from receiver.intake.authcheck.spf import _Evaluator

    return _Evaluator(NoDns(), ipaddress.ip_address("192.0.2.1"), sender, "helo.test")  # type: ignore[arg-type]


@given(st.lists(st.text(alphabet="abc", max_size=90), min_size=1, max_size=30))
def test_the_one_cut_to_253_octets_drops_the_same_leading_labels_as_one_at_a_time(
    labels: list[str],
) -> None:
    from receiver.intake.authcheck.spf import cut_to_name

    expanded = ".".join(labels)
    reference = expanded  # the RFC's wording, label by label (quadratic: small input)
    while len(reference) > 253 and "." in reference:
        reference = reference.split(".", 1)[1]
    assert cut_to_name(expanded) == reference


def test_a_record_built_to_expand_for_ever_costs_a_permerror_in_linear_time() -> None:
    from receiver.intake.authcheck.spf import _Stop

    sender = "x" * 64 + "@" + ".".join(["y" * 60] * 4)
    evaluator = _evaluator(sender)
    spec = "%{s}." * 180  # a 900-octet term of sender macros: ~57 KB if expanded
    started = time.thread_time()  # CPU, not the wall: a loaded host's waits are not its cost
    with pytest.raises(_Stop, match="expansion too long"):
        evaluator._expand(spec, "example.test")  # type: ignore[attr-defined]
    assert time.thread_time() - started < 0.05
    # Within the bound, the cut to 253 octets is one cut, not a loop over labels.
    short = _evaluator("a@b.test")._expand("%{d}." * 100, "l" * 8 + ".test")  # type: ignore[attr-defined]
    assert len(short) <= 253 and short.endswith("test")
