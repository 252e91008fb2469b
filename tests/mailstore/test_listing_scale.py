"""Listing cost does not grow with the store: through a real API process on a real
embedded store, a listing on a store of N messages and on one of 10·N cost the store about
as much CPU (within 2x). Before the mailbox index, every listing read the whole store: 10x
the messages were 6 to 10x the time. The store process's own CPU time is measured, not the
wall clock: a host busy with other tests stretches the one, hardly the other."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mailstore import MessageDocument, MessageStore, StoreConfig, new_message_id, utcnow
from mailstore.embedded import EmbeddedStore
from tests.conftest import ServiceFactory
from tests.support.api import AUTH, cpu_seconds

N = 1_000
LISTINGS = 100  # enough clock ticks (10 ms) of store CPU for the cheaper listing
BODY = b"Subject: filler\r\n\r\n" + b"a line of a message body\r\n" * 30


@pytest.fixture
def own_store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    server = EmbeddedStore(tmp_path / "scale-store")
    server.start()
    yield server
    server.stop()


def message(mailbox: str) -> MessageDocument:
    return MessageDocument(
        id=new_message_id(),
        raw=BODY,
        mail_from="filler@example.org",
        rcpt=(mailbox,),
        peer_ip="192.0.2.1",
        helo="client.test",
        received_at=utcnow(),
        headers={"subject": "filler"},
        fp=new_message_id(),
    )


async def fill(uri: str, mailboxes: list[str]) -> None:
    """One message to each of `mailboxes`, 500 at a time."""
    store = await MessageStore.open(StoreConfig(uri=uri, timeout=60, max_pending=5_000))
    try:
        for low in range(0, len(mailboxes), 500):
            batch = [message(m) for m in mailboxes[low : low + 500]]
            await asyncio.gather(*(store.insert(m) for m in batch))
    finally:
        await store.close()


def distinct(start: int, stop: int) -> list[str]:
    return [f"u{n}@mx.test" for n in range(start, stop)]


def settle(store_pid: int, within: float = 30.0) -> None:
    """Wait until the store idles (at most `within` s): after a fill, the API's change
    stream has thousands of copies to read, whose CPU is no listing's."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        before = cpu_seconds([store_pid])
        time.sleep(0.5)
        if cpu_seconds([store_pid]) - before <= 0.01:
            return


def store_cpu_ms(client: httpx.Client, path: str, store_pid: int) -> float:
    """The store process's CPU per listing of `path`, in ms."""
    settle(store_pid)
    before = cpu_seconds([store_pid])
    for _ in range(LISTINGS):
        assert client.get(path, headers=AUTH).status_code == 200
    return (cpu_seconds([store_pid]) - before) / LISTINGS * 1000


def test_a_listing_takes_as_long_on_ten_times_the_messages(
    own_store: EmbeddedStore, make_api: ServiceFactory
) -> None:
    api = make_api(mongodb_uri=own_store.uri, mongodb_database="floodgate")
    asyncio.run(fill(own_store.uri, distinct(0, N) + ["fifty@mx.test"] * 50))
    paths = {
        "empty": "/v1/mailboxes/nobody@mx.test/messages",
        "fifty": "/v1/mailboxes/fifty@mx.test/messages",
    }
    with httpx.Client(base_url=api.http_url, timeout=30) as client:
        assert len(client.get(paths["fifty"], headers=AUTH).json()["messages"]) == 50
        assert own_store.process is not None
        pid = own_store.process.pid
        small = {name: store_cpu_ms(client, path, pid) for name, path in paths.items()}
        asyncio.run(fill(own_store.uri, distinct(N, 10 * N)))
        large = {name: store_cpu_ms(client, path, pid) for name, path in paths.items()}
    print(f"store CPU ms per listing, {N} vs {10 * N} messages: {small} {large}")
    for name in paths:
        assert large[name] <= 2 * small[name], (name, small, large)
