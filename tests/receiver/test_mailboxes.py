"""Per-mailbox limits: a rate per mailbox at RCPT, and a cap on messages kept."""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo import MongoClient

from receiver.delivery.mailboxes import MailboxKeeper
from tests.conftest import ServiceFactory
from tests.support.api import listing
from tests.support.engine import Harness
from tests.support.metrics import sample
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient, send_message, wait_for


async def test_a_mailbox_is_trimmed_once_it_passes_its_cap_by_the_slack() -> None:
    calls: list[tuple[str, int]] = []

    async def trim(mailbox: str, keep: int) -> int:
        calls.append((mailbox, keep))
        return 1

    keeper = MailboxKeeper(100, trim, asyncio.get_running_loop().create_task)
    for _ in range(109):
        keeper.stored(["busy@mx.test", "quiet@mx.test"] if _ < 5 else ["busy@mx.test"])
    await asyncio.sleep(0)
    assert calls == []  # 109 < 100 + 10: not yet
    keeper.stored(["busy@mx.test"])
    await asyncio.sleep(0)
    assert calls == [("busy@mx.test", 100)]
    for _ in range(9):
        keeper.stored(["busy@mx.test"])
    await asyncio.sleep(0)
    assert len(calls) == 1  # counted from 100 again after the trim


def test_the_mailbox_rate_answers_450_4_2_1_for_that_mailbox_only() -> None:
    harness = Harness(mailbox_rate=2)
    client = harness.connect()
    client.new()
    client.send("EHLO c.test")
    for n in range(3):
        assert client.send(f"MAIL FROM:<s{n}@example.org>") == [250]
        codes = client.send("RCPT TO:<loop@mx.test>") + client.send(f"RCPT TO:<calm{n}@mx.test>")
        assert codes == ([250, 250] if n < 2 else [450, 250]), n
        client.send("RSET")
    assert harness.events.recipients["mailbox_rate"] == 1
    assert harness.events.refused["mailbox_rate"] == 1


def test_a_flooded_mailbox_keeps_its_newest_messages(
    make_receiver: ServiceFactory,
    api: ServiceProcess,
    mongo: MongoClient[dict[str, Any]],
    db_name: str,
) -> None:
    receiver = make_receiver(mailbox_max_messages="20", message_rate="0", recipient_rate="0")
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    for n in range(35):
        body = f"Subject: alert {n}\r\n\r\nx\r\n".encode()
        recipients = ["flooded@mx.test", "archive@mx.test"] if n == 0 else ["flooded@mx.test"]
        assert send_message(client, "alerts@example.org", recipients, body).code == 250

    # Trimmed back to its 20 newest once it holds 30 (the trim runs beside the next
    # deliveries, so it may find a message or two more), then 5 more arrive: the newest
    # 24 or 25 remain, none older, none missing between.
    def subjects() -> list[str]:
        return [m["subject"] for m in listing(api, "flooded@mx.test")]

    assert wait_for(lambda: len(subjects()) <= 25, timeout=10), subjects()
    kept = subjects()
    assert 24 <= len(kept) <= 25 and kept == [f"alert {n}" for n in range(34, 34 - len(kept), -1)]
    assert [m["subject"] for m in listing(api, "archive@mx.test")] == ["alert 0"]


def test_the_mailbox_rate_through_a_real_receiver(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(mailbox_rate="3", autoban_threshold="0")
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    for _ in range(3):
        assert send_message(client, "a@example.org", ["hot@mx.test"], b"x\r\n").code == 250
    assert client.cmd("MAIL FROM:<a@example.org>").code == 250
    reply = client.cmd("RCPT TO:<hot@mx.test>")
    assert (reply.code, reply.text[:5]) == (450, "4.2.1")
    url = receiver.http_url
    assert sample(url, "floodgate_recipients_total", outcome="mailbox_rate") == 1
