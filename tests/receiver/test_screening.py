"""Screening before the banner, end to end: real receiver processes, a real DNS server on
loopback (the only resolver they are given), real sockets from 127.0.0.0/8 clients."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServiceFactory
from tests.support.dnsserver import TIMEOUT, DnsServer, Record, closed_port, listed
from tests.support.metrics import sample
from tests.support.smtp import RawClient

LISTED, CLEAN = "127.0.0.2", "127.0.0.3"


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer({listed(LISTED, "zen.test"): Record.a("127.0.0.2")}) as server:
        yield server


def client(receiver: Any, source: str) -> RawClient:
    return RawClient(receiver.host, receiver.port, source=source)


def timed_banner(receiver: Any, source: str) -> tuple[Any, float, RawClient]:
    started = time.monotonic()
    c = client(receiver, source)
    reply = c.reply()
    return reply, time.monotonic() - started, c


def test_drop_says_521_instead_of_the_banner_and_caches_by_the_lists_ttl(
    make_receiver: ServiceFactory, dns: DnsServer
) -> None:
    receiver = make_receiver(
        dns_servers=dns.address,
        dnsbl_sites="zen.test*2, wl.test*-1",
        dnsbl_threshold="1",
        dnsbl_action="drop",
        dnsbl_reply="zen.test=ZEN",
    )
    for _ in range(2):
        refused = client(receiver, LISTED)
        reply = refused.reply()
        assert reply.code == 521
        assert reply.lines == [f"5.7.1 Service unavailable; client [{LISTED}] blocked using ZEN"]
        assert refused.closed_by_server()
        assert client(receiver, CLEAN).hello().code == 250
    # A listing is kept for its own TTL (60 s here), a pass too: one lookup each.
    assert dns.queries.count(listed(LISTED, "zen.test")) == 1
    assert dns.queries.count(listed(CLEAN, "zen.test")) == 1
    # Every lookup the receiver made reached this loopback server, and only these.
    zones = ("zen.test", "wl.test")
    assert sorted(set(dns.queries)) == sorted(
        listed(ip, z) for ip in (LISTED, CLEAN) for z in zones
    )
    assert len(dns.queries) == 4
    url = receiver.http_url
    assert sample(url, "floodgate_screen_verdicts_total", verdict="drop") == 1
    assert sample(url, "floodgate_screen_verdicts_total", verdict="cached") == 2  # both kinds
    assert sample(url, "floodgate_screen_lookups_total", check="zen.test", outcome="listed") == 1
    # Refused at the door, before any banner: never a session.
    assert sample(url, "floodgate_connections_total", outcome="dnsbl") == 2
    assert sample(url, "floodgate_sessions_closed_total", reason="quit") == 0


def test_enforce_keeps_the_dialogue_and_refuses_every_recipient(
    make_receiver: ServiceFactory, dns: DnsServer, mongo: Any, db_name: str
) -> None:
    receiver = make_receiver(
        dns_servers=dns.address, dnsbl_sites="zen.test", dnsbl_action="enforce"
    )
    listed_client = client(receiver, LISTED)
    assert listed_client.hello().code == 250
    assert listed_client.cmd("MAIL FROM:<a@sender.test>").code == 250
    for rcpt in ("x@mx.test", "postmaster@mx.test"):
        reply = listed_client.cmd(f"RCPT TO:<{rcpt}>")
        assert reply.code == 550 and reply.lines[0].startswith("5.7.1 Service unavailable")
        assert "blocked using zen.test" in reply.lines[0]
    clean = client(receiver, CLEAN)
    assert clean.hello().code == 250
    assert clean.cmd("MAIL FROM:<a@sender.test>").code == 250
    assert clean.cmd("RCPT TO:<x@mx.test>").code == 250
    url = receiver.http_url
    assert sample(url, "floodgate_recipients_total", outcome="dnsbl") == 2
    # The live statistics (console, `floodgate top`) say why: "dnsbl zen.test".
    deadline = time.monotonic() + 15
    reasons: dict[str, int] = {}
    while time.monotonic() < deadline and "dnsbl zen.test" not in reasons:
        document = mongo[db_name]["receiver_stats"].find_one() or {}
        reasons = document.get("windows", {}).get("1m", {}).get("reasons", {})
        time.sleep(0.5)
    assert reasons.get("dnsbl zen.test") == 1


def test_ignore_greets_and_counts_the_would_be_refusal(
    make_receiver: ServiceFactory, dns: DnsServer
) -> None:
    receiver = make_receiver(
        dns_servers=dns.address, dnsbl_sites="zen.test", log_summary_interval="1"
    )
    listed_client = client(receiver, LISTED)
    assert listed_client.hello().code == 250
    assert listed_client.cmd("MAIL FROM:<a@sender.test>").code == 250
    assert listed_client.cmd("RCPT TO:<x@mx.test>").code == 250
    for n in range(2, 12):
        client(receiver, f"127.0.1.{n}").hello()
    assert sample(receiver.http_url, "floodgate_screen_verdicts_total", verdict="ignore") == 1
    # One summary line per interval, never one per client.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "event=screen_summary" not in receiver.log():
        time.sleep(0.2)
    lines = [x for x in receiver.log().splitlines() if "event=screen_summary" in x]
    assert 1 <= len(lines) <= 3, lines
    assert "ignore=1" in receiver.log() and "zen.test=" in lines[0]


@pytest.mark.parametrize("greet_wait", ["0", "0.6"])
def test_a_dead_or_slow_resolver_never_delays_the_banner_past_the_deadline(
    make_receiver: ServiceFactory, greet_wait: str
) -> None:
    with DnsServer({listed(LISTED, "slow.test"): Record.a("127.0.0.2", delay=3)}) as dns:
        dns.records[listed(LISTED, "silent.test")] = TIMEOUT
        receiver = make_receiver(
            dns_servers=f"{dns.address}, 127.0.0.1:{closed_port()}",
            dnsbl_sites="slow.test, silent.test",
            dnsbl_action="drop",
            screen_timeout="0.3",
            greet_wait=greet_wait,
            reverse_dns="1",
        )
        deadline = float(greet_wait) or 0.3
        for _ in range(3):  # the pass is incomplete, so never cached: each one waits
            reply, seconds, c = timed_banner(receiver, LISTED)
            assert reply.code == 220, reply  # listed, but nobody said so in time
            assert deadline - 0.05 < seconds < deadline + 0.4
            c.close()
    assert sample(receiver.http_url, "floodgate_screen_verdicts_total", verdict="pass") == 3


def test_screening_is_off_by_default_so_no_lookup_is_made(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver()
    reply, seconds, _ = timed_banner(receiver, LISTED)
    assert reply.code == 220 and seconds < 0.3
    metrics = httpx.get(f"{receiver.http_url}/metrics", timeout=5).text
    assert "floodgate_screen_" not in metrics  # no screen was built at all


# --- a hostile DNS (the findings S2-S4 of the resolver's review) -----------------------


def test_a_flood_of_forged_datagrams_never_lets_a_listed_client_in(
    make_receiver: ServiceFactory,
) -> None:
    # Every answer comes after 200 datagrams with the query's id and another question:
    # none of them may end the lookup (it used to, and the screen failed open).
    records = {
        listed(f"127.0.70.{n}", "zen.test"): Record("stray", ("127.0.0.2",)) for n in range(1, 31)
    }
    with DnsServer(records) as dns:
        receiver = make_receiver(
            dns_servers=dns.address, dnsbl_sites="zen.test", dnsbl_action="drop"
        )
        codes = [client(receiver, f"127.0.70.{n}").reply().code for n in range(1, 31)]
    assert codes == [521] * 30


def test_one_forged_refusal_does_not_turn_a_list_off(make_receiver: ServiceFactory) -> None:
    first, second = "127.0.71.1", "127.0.71.2"
    records = {
        listed(first, "zen.test"): Record.a("127.255.255.254"),  # "you query too much": forged
        listed(second, "zen.test"): Record.a("127.0.0.2"),
        listed("127.0.0.2", "zen.test"): Record.a("127.0.0.2"),  # the list's test entry
    }
    with DnsServer(records) as dns:
        receiver = make_receiver(
            dns_servers=dns.address, dnsbl_sites="zen.test", dnsbl_action="drop"
        )
        assert client(receiver, first).reply().code == 220  # that one lookup fails open
        deadline = time.monotonic() + 5
        while listed("127.0.0.2", "zen.test") not in dns.queries and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listed("127.0.0.2", "zen.test") in dns.queries  # confirmed, on a query of its own
        assert client(receiver, second).reply().code == 521  # the list still works
    assert "dnsbl_disabled" not in receiver.log()


def test_a_not_listed_answer_is_kept_only_as_long_as_its_soa_allows(
    make_receiver: ServiceFactory,
) -> None:
    source = "127.0.72.1"
    with DnsServer({listed(source, "zen.test"): Record("nxdomain", ("1",))}) as dns:
        receiver = make_receiver(dns_servers=dns.address, dnsbl_sites="zen.test")
        assert client(receiver, source).reply().code == 220
        assert client(receiver, source).reply().code == 220
        assert dns.queries.count(listed(source, "zen.test")) == 1  # kept within its TTL
        time.sleep(1.2)
        assert client(receiver, source).reply().code == 220
        assert dns.queries.count(listed(source, "zen.test")) == 2  # not an hour's pass


def test_one_network_cannot_spend_the_lookups_of_the_others(make_receiver: ServiceFactory) -> None:
    # A listed /24 brings ever new addresses: past its budget it hears 421, and another
    # listed network is still screened and refused, never greeted unscreened.
    records = {listed(f"127.0.73.{n}", "zen.test"): Record.a("127.0.0.2") for n in range(1, 61)}
    records |= {listed(f"127.0.74.{n}", "zen.test"): Record.a("127.0.0.2") for n in range(1, 11)}
    with DnsServer(records) as dns:
        receiver = make_receiver(
            dns_servers=dns.address,
            dnsbl_sites="zen.test",
            dnsbl_action="drop",
            dns_network_rate="20",
            autoban_refusal_threshold="0",
        )
        flood = [client(receiver, f"127.0.73.{n}").reply().code for n in range(1, 61)]
        others = [client(receiver, f"127.0.74.{n}").reply().code for n in range(1, 11)]
    assert flood.count(521) == 20 and flood.count(421) == 40 and 220 not in flood
    assert others == [521] * 10
    url = receiver.http_url
    assert sample(url, "floodgate_connections_total", outcome="screen_busy") == 40
