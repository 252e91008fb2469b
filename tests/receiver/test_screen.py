"""The screen: weights, threshold, actions, the pass cache, deadlines, failing open.

Every lookup goes to a DNS server on loopback (tests.support.dnsserver), nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from prometheus_client import CollectorRegistry

from receiver.door.dnsbl import domains, parse_sites
from receiver.door.screen import REVERSE_DNS, Screen, ScreenConfig, ScreenMetrics, screen_deadline
from receiver.resolver import Resolver
from tests.support.dnsserver import SERVFAIL, TIMEOUT, DnsServer, Record, listed

SITES = "a.test*3, b.test*2, wl.test=127.0.[0..255].[1..3]*-2"


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture
async def resolver(dns: DnsServer) -> AsyncIterator[Resolver]:
    resolver = Resolver((("127.0.0.1", dns.port),), max_in_flight=100, rate=10_000)
    await resolver.open()
    yield resolver
    resolver.close()


def make(resolver: Resolver, sites: str = SITES, **config: object) -> Screen:
    parsed = parse_sites(sites)
    registry = CollectorRegistry()
    metrics = ScreenMetrics(registry, (*domains(parsed), REVERSE_DNS))
    return Screen(ScreenConfig(sites=parsed, **config), resolver, metrics, time.monotonic)  # type: ignore[arg-type]


def lookups(screen: Screen, check: str, outcome: str) -> float:
    return screen.metrics.lookups.labels(check, outcome)._value.get()


@pytest.mark.parametrize(
    ("lists", "refused"),
    [
        ({"a.test": "127.0.0.2"}, True),  # 3
        ({"b.test": "127.0.0.2"}, False),  # 2
        ({"a.test": "127.0.0.2", "wl.test": "127.0.5.2"}, False),  # 3 - 2
        ({"a.test": "127.0.0.2", "b.test": "127.0.0.2", "wl.test": "127.0.0.1"}, True),  # 3
        ({"a.test": "127.0.0.2", "wl.test": "127.0.0.9"}, True),  # the filter does not match
    ],
)
async def test_weights_add_up_against_the_threshold(
    dns: DnsServer, resolver: Resolver, lists: dict[str, str], refused: bool
) -> None:
    for zone, answer in lists.items():
        dns.records[listed("192.0.2.1", zone)] = Record.a(answer)
    screen = make(resolver, threshold=3, action="drop")
    verdict = await screen.screen("192.0.2.1", False, 1.0)
    assert (verdict.action == "drop") is refused
    assert verdict.score == sum({"a.test": 3, "b.test": 2}.get(z, 0) for z in lists) - (
        2 if "wl.test" in lists and lists["wl.test"] != "127.0.0.9" else 0
    )


async def test_each_action_refuses_in_its_own_way(dns: DnsServer, resolver: Resolver) -> None:
    dns.records[listed("192.0.2.7", "key123.zen.test")] = Record.a("127.0.0.2")
    sites = "key123.zen.test"
    names = {"key123.zen.test": "zen.test"}
    drop = await make(resolver, sites, action="drop", replies=names).screen("192.0.2.7", False, 1)
    assert drop.reply is not None and drop.reason == "dnsbl key123.zen.test"
    assert str(drop.reply) == (
        "521 5.7.1 Service unavailable; client [192.0.2.7] blocked using zen.test"
    )
    enforce = await make(resolver, sites, action="enforce").screen("192.0.2.7", False, 1)
    assert enforce.reply is not None and str(enforce.reply).startswith("550 5.7.1 ")
    assert enforce.action == "enforce"
    ignore = await make(resolver, sites).screen("192.0.2.7", False, 1)
    assert ignore.action == "ignore" and ignore.reply is None
    assert ignore.reason == "dnsbl-ignored key123.zen.test"


async def test_verdicts_are_kept_for_the_lists_ttl(dns: DnsServer, resolver: Resolver) -> None:
    dns.records[listed("192.0.2.9", "a.test")] = Record.a("127.0.0.2")  # TTL 60
    screen = make(resolver, "a.test", action="drop")
    for _ in range(2):
        assert (await screen.screen("192.0.2.9", False, 1)).action == "drop"
        assert (await screen.screen("192.0.2.10", False, 1)).action is None
    asked = [q for q in dns.queries if q.endswith("a.test")]
    # A listing is kept for its TTL (a listed client that keeps coming costs no lookups),
    # a pass too: one lookup each.
    assert asked.count(listed("192.0.2.9", "a.test")) == 1
    assert asked.count(listed("192.0.2.10", "a.test")) == 1
    assert screen.metrics.verdicts.labels("cached")._value.get() == 2


async def test_a_slow_list_never_holds_the_banner_past_the_deadline(
    dns: DnsServer, resolver: Resolver
) -> None:
    dns.records[listed("192.0.2.2", "a.test")] = Record.a("127.0.0.2", delay=2.0)
    dns.records[listed("192.0.2.2", "b.test")] = TIMEOUT
    screen = make(resolver, "a.test, b.test", action="drop")
    started = time.monotonic()
    verdict = await screen.screen("192.0.2.2", False, 0.3)
    assert time.monotonic() - started < 0.45
    assert verdict.action is None  # fail open: not listed
    assert lookups(screen, "a.test", "timeout") == 1 and lookups(screen, "b.test", "timeout") == 1
    # An incomplete pass is not cached: the next connection asks again.
    await screen.screen("192.0.2.2", False, 0.1)
    assert dns.queries.count(listed("192.0.2.2", "b.test")) == 2


async def test_servfail_and_foreign_answers_are_not_listed(
    dns: DnsServer, resolver: Resolver
) -> None:
    dns.records[listed("192.0.2.3", "a.test")] = SERVFAIL
    dns.records[listed("192.0.2.3", "b.test")] = Record.a("198.51.100.1")  # NXDOMAIN rewriting
    screen = make(resolver, "a.test, b.test", action="drop")
    assert (await screen.screen("192.0.2.3", False, 1)).action is None
    assert lookups(screen, "a.test", "servfail") == 1 and lookups(screen, "b.test", "garbage") == 1


async def test_a_list_that_refuses_us_is_disabled_with_one_log_line(
    dns: DnsServer, resolver: Resolver, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(1, 4):
        dns.records[listed(f"192.0.2.{n}", "a.test")] = Record.a("127.255.255.254")
    dns.records[listed("127.0.0.2", "a.test")] = Record.a("127.255.255.254")  # test entry too
    screen = make(resolver, "a.test", action="drop")
    with caplog.at_level(logging.INFO, logger="floodgate.receiver"):
        assert (await screen.screen("192.0.2.1", False, 1)).action is None
        for _ in range(50):  # the confirmation runs on a query of its own
            if screen._disabled:
                break
            await asyncio.sleep(0.02)
        for n in range(2, 4):
            assert (await screen.screen(f"192.0.2.{n}", False, 1)).action is None
    assert [r.getMessage() for r in caplog.records] == ["dnsbl_disabled"]
    # The client's lookup, then the list's test entry to confirm it: then no more.
    assert sum(q.endswith("a.test") for q in dns.queries) == 2
    assert lookups(screen, "a.test", "refused") == 1 and lookups(screen, "a.test", "disabled") == 2


async def test_one_forged_refusal_is_not_believed(dns: DnsServer, resolver: Resolver) -> None:
    dns.records[listed("192.0.2.1", "a.test")] = Record.a("127.255.255.254")  # forged
    dns.records[listed("127.0.0.2", "a.test")] = Record.a("127.0.0.2")  # the list answers
    dns.records[listed("192.0.2.2", "a.test")] = Record.a("127.0.0.2")
    screen = make(resolver, "a.test", action="drop")
    assert (await screen.screen("192.0.2.1", False, 1)).action is None  # fails open once
    for _ in range(50):
        if listed("127.0.0.2", "a.test") in dns.queries and not screen._confirming:
            break
        await asyncio.sleep(0.02)
    assert not screen._disabled
    assert (await screen.screen("192.0.2.2", False, 1)).action == "drop"


async def test_allowlisted_clients_are_not_looked_up(dns: DnsServer, resolver: Resolver) -> None:
    dns.records[listed("192.0.2.4", "a.test")] = Record.a("127.0.0.2")
    screen = make(resolver, "a.test", action="drop")
    verdict = await screen.screen("192.0.2.4", True, 1)
    assert verdict.action is None and verdict.verdict == "allowlisted"
    assert dns.queries == []


async def test_reverse_dns_names_the_client_and_ipv6_clients_are_screened(
    dns: DnsServer, resolver: Resolver
) -> None:
    dns.records["5.2.0.192.in-addr.arpa"] = Record.ptr("mta.sender.test")
    dns.records[listed("2001:db8::5", "a.test")] = Record.a("127.0.0.2")
    screen = make(resolver, "a.test", action="drop", reverse_dns=True)
    assert (await screen.screen("192.0.2.5", False, 1)).client_name == "mta.sender.test"
    v6 = await screen.screen("2001:db8::5", False, 1)
    assert v6.action == "drop" and v6.client_name == ""


async def test_one_summary_line_per_interval(dns: DnsServer, resolver: Resolver) -> None:
    screen = make(resolver, "a.test")
    assert screen.summary() is None
    for n in range(5):
        await screen.screen(f"192.0.2.{n}", False, 1)
    fields = screen.summary()
    assert fields is not None and fields["pass"] == 5 and fields["a.test"] == "clean:5"
    assert screen.summary() is None


def test_the_deadline_lives_in_the_pregreet_wait_and_tightens_under_stress() -> None:
    assert screen_deadline(0.0, 1.0, stressed=False) == 1.0
    assert screen_deadline(6.0, 1.0, stressed=False) == 6.0
    assert screen_deadline(6.0, 0.25, stressed=True) == 0.25
    assert screen_deadline(0.0, 0.25, stressed=True) == 0.25
