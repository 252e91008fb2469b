"""The screen at the door: the banner waits for it (within the pregreet wait when that is
on), and each action refuses in its own way. A fake screen stands in for
receiver.door.screen; the screen itself is tested against a real DNS server elsewhere."""

from __future__ import annotations

import asyncio
from typing import Any

from receiver import replies
from receiver.door.screen import PASS, Verdict
from tests.support.engine import Client, Harness, settle
from tests.support.proxy_headers import v1

LISTED = "Service unavailable; client [192.0.2.9] blocked using zen.test"


class FakeScreen:
    """Answers each client with `verdict` once `release` is set; records the deadlines."""

    def __init__(self, verdict: Verdict = PASS) -> None:
        self.verdict = verdict
        self.release = asyncio.Event()
        self.deadlines: list[float] = []
        self.ips: list[str] = []
        self.fail = False

    async def screen(self, ip: str, allowed: bool, deadline: float) -> Verdict:
        self.deadlines.append(deadline)
        self.ips.append(ip)
        await self.release.wait()
        if self.fail:
            raise RuntimeError("a bug in a check")
        return self.verdict


def screened(
    screen: FakeScreen, ip: str = "192.0.2.9", *, proxied: bool = False, **limits: Any
) -> tuple[Harness, Client]:
    harness = Harness(screen=screen, **limits)
    return harness, harness.connect(ip, proxied=proxied)


async def answer(screen: FakeScreen) -> None:
    screen.release.set()
    await settle()


async def test_the_banner_waits_for_the_screen_and_its_deadline_is_the_screen_timeout() -> None:
    screen = FakeScreen()
    _harness, client = screened(screen, screen_timeout=0.7)
    await settle()
    assert client.output() == b""
    await answer(screen)
    assert client.new() == [b"220 mx.test ESMTP Floodgate"]
    assert screen.deadlines == [0.7]


async def test_with_a_pregreet_wait_the_screen_runs_within_it() -> None:
    screen = FakeScreen()
    harness, client = screened(screen, greet_wait=2, screen_timeout=0.5)
    await answer(screen)  # the screen is done early: the banner still waits for the wait
    assert client.new() == [b"220-mx.test ESMTP"]
    harness.clock.advance(2.1)
    assert client.new() == [b"220 mx.test ESMTP Floodgate"]
    assert screen.deadlines == [2]


async def test_under_stress_the_deadline_tightens() -> None:
    screen = FakeScreen()
    harness = Harness(
        screen=screen,
        greet_wait=2,
        stress_screen_timeout=0.2,
        max_connections=4,
        stress_threshold=0.25,
    )
    harness.connect("192.0.2.9")  # one connection of four: the host is stressed
    assert harness.admission.stressed
    await answer(screen)
    assert screen.deadlines == [0.2]


async def test_a_screen_still_running_when_the_wait_ends_greets_when_it_ends() -> None:
    screen = FakeScreen()
    harness, client = screened(screen, greet_wait=1)
    harness.clock.advance(1.1)
    assert client.new() == [b"220-mx.test ESMTP"]
    await answer(screen)
    assert client.new() == [b"220 mx.test ESMTP Floodgate"]


async def test_drop_says_521_instead_of_the_banner_and_closes() -> None:
    reply = replies.DNSBL_DROP.with_text(LISTED)
    screen = FakeScreen(Verdict("drop", 3, "dnsbl zen.test", reply))
    harness, client = screened(screen)
    await answer(screen)
    assert client.replies() == [b"521 5.7.1 " + LISTED.encode()]
    assert client.closed and not client.handed  # refused at the door: never a session
    client.lose()
    assert harness.events.refused["dnsbl"] == 1 and harness.events.connections["dnsbl"] == 1
    assert harness.events.closed == {} and harness.open_connections == 0


async def test_enforce_greets_and_refuses_every_recipient() -> None:
    reply = replies.DNSBL_ENFORCE.with_text(LISTED)
    screen = FakeScreen(Verdict("enforce", 1, "dnsbl zen.test", reply))
    harness, client = screened(screen)
    await answer(screen)
    assert client.codes() == [220]
    assert client.send("EHLO c.test") == [250]
    assert client.send("MAIL FROM:<a@c.test>") == [250]
    client.feed(b"RCPT TO:<x@mx.test>\r\n")
    assert client.new() == [b"550 5.7.1 " + LISTED.encode()]
    assert client.send("RCPT TO:<postmaster>") == [550]
    assert client.send("DATA") == [503]
    assert harness.events.recipients["dnsbl"] == 2
    assert harness.events.refused["dnsbl"] == 1  # once per client, not per RCPT
    assert harness.events.connections["dnsbl"] == 0  # the connection itself was accepted


async def test_enforce_refusals_never_spend_the_error_budget() -> None:
    reply = replies.DNSBL_ENFORCE.with_text(LISTED)
    screen = FakeScreen(Verdict("enforce", 1, "dnsbl zen.test", reply))
    harness, client = screened(screen, hard_error_limit=3)
    await answer(screen)
    client.send("EHLO c.test")
    client.send("MAIL FROM:<a@c.test>")
    for n in range(10):
        assert client.send(f"RCPT TO:<r{n}@mx.test>") == [550]
    assert not client.closed and harness.events.recipients["dnsbl"] == 10
    assert client.send("QUIT") == [221]


async def test_ignore_greets_and_only_counts() -> None:
    screen = FakeScreen(Verdict("ignore", 1, "dnsbl-ignored zen.test"))
    harness, client = screened(screen)
    await answer(screen)
    assert client.codes() == [220]
    assert client.send("EHLO c.test") == [250]
    assert client.send("MAIL FROM:<a@c.test>") == [250]
    assert client.send("RCPT TO:<x@mx.test>") == [250]
    assert harness.events.refused == {"dnsbl_ignored": 1}


async def test_a_failing_screen_greets_the_client() -> None:
    screen = FakeScreen()
    screen.fail = True
    _harness, client = screened(screen)
    await answer(screen)
    assert client.codes() == [220]


async def test_a_pregreet_talker_is_refused_while_the_screen_runs_and_its_verdict_ignored() -> None:
    screen = FakeScreen(Verdict("drop", 1, "dnsbl zen.test", replies.DNSBL_DROP))
    harness, client = screened(screen, greet_wait=2)
    client.feed(b"EHLO bot.test\r\n")
    assert client.replies()[-1] == replies.PREGREET.wire.rstrip() and client.closed
    await answer(screen)
    assert harness.events.refused == {"pregreet": 1}


async def test_reverse_dns_from_the_screen_names_the_client() -> None:
    screen = FakeScreen(Verdict(client_name="mta.sender.test"))
    _harness, client = screened(screen)
    await answer(screen)
    assert client.session.client.name == "mta.sender.test"


async def test_behind_a_trusted_proxy_the_client_in_the_header_is_screened() -> None:
    screen = FakeScreen()
    _harness, client = screened(screen, "127.0.0.1", proxied=True)
    client.feed(v1("198.51.100.7"))
    await answer(screen)
    assert screen.ips == ["198.51.100.7"] and client.codes() == [220]
