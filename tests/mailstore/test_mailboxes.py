"""The mailbox index (mailstore.mailboxes) through the store: listings, cursors, trims,
deletes and the migration of messages stored before it, against a real server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest
from pymongo.errors import AutoReconnect

from mailstore import MessageDocument, MessageStore, StoreConfig, new_message_id, utcnow
from mailstore.engine import Engine
from mailstore.mailboxes import ENTRIES, entry_key, first_key, past_key
from mailstore.store import READ_SHARE, READS_IN_FLIGHT, ReadPacer
from tests.conftest import drop_test_database


@pytest.fixture
async def store(store_uri: str, db_name: str, clean_store: None) -> AsyncIterator[MessageStore]:
    opened = await MessageStore.open(StoreConfig(uri=store_uri, database=db_name, retention=3600))
    yield opened
    await drop_test_database(opened.client, db_name)
    await opened.close()


def message(*rcpt: str, fp: str = "") -> MessageDocument:
    return MessageDocument(
        id=new_message_id(),
        raw=b"Subject: s\r\n\r\nb\r\n",
        mail_from="a@example.org",
        rcpt=rcpt,
        peer_ip="127.0.0.1",
        helo="client.test",
        received_at=utcnow(),
        fp=fp,
    )


def test_a_mailbox_range_holds_its_keys_and_no_other_mailboxes() -> None:
    box = "a@mx.test"
    key = entry_key(box, "06h4v995xmqkm04qe3393vzyx4")
    assert first_key(box) < key < past_key(box)
    # Mailboxes that share a prefix with it sort outside its range.
    for other in ("a@mx.test.org", "a@mx.tesu", '"a@mx.test x"@mx.test', "a@mx.tes"):
        assert not first_key(box) < entry_key(other, "0" * 26) < past_key(box)


async def test_every_recipient_lists_the_message_once(store: MessageStore) -> None:
    both = message("One@mx.test", "two@mx.test", "one@mx.test")
    await store.insert(both)
    for box in ("one@mx.test", "TWO@mx.test"):
        assert [m.id for m in await store.list_mailbox(box)] == [both.id]
    # The first mailbox's key is in the message; the second has an entry.
    assert await store.entries.count_documents({}) == 1


async def test_cursors_page_through_a_mailbox_newest_first(store: MessageStore) -> None:
    sent = [message("page@mx.test") for _ in range(7)]
    for m in sent:
        await store.insert(m)
    await store.insert(message("page@mx.tes"))  # a neighbour whose keys sort just before
    ids = [m.id for m in reversed(sent)]
    assert [m.id for m in await store.list_mailbox("page@mx.test", 3)] == ids[:3]
    assert [m.id for m in await store.list_mailbox("page@mx.test", 3, before=ids[2])] == ids[3:6]
    assert [m.id for m in await store.list_mailbox("page@mx.test", 50, after=ids[2])] == ids[:2]
    since = sent[4].received_at - timedelta(milliseconds=0)
    listed = [m.id for m in await store.list_mailbox("page@mx.test", 50, since=since)]
    assert listed[: len(ids[:3])] == ids[:3] and set(listed) <= set(ids)
    assert await store.list_mailbox("empty@mx.test") == []


async def test_a_mailbox_named_first_by_some_and_later_by_others_lists_and_pages_as_one(
    store: MessageStore,
) -> None:
    sent = []
    for n in range(6):  # alternately the first and the second recipient
        rcpt = ("mix@mx.test", "a@mx.test") if n % 2 else ("b@mx.test", "mix@mx.test")
        sent.append(message(*rcpt))
        await store.insert(sent[-1])
    ids = [m.id for m in reversed(sent)]
    assert [m.id for m in await store.list_mailbox("mix@mx.test")] == ids
    assert [m.id for m in await store.list_mailbox("mix@mx.test", 2, before=ids[1])] == ids[2:4]
    assert await store.trim_mailbox("mix@mx.test", 3) == 3
    assert [m.id for m in await store.list_mailbox("mix@mx.test")] == ids[:3]
    for m in sent[:3]:  # still held by their other mailbox
        kept = await store.get(m.id)
        assert kept is not None and "mix@mx.test" not in kept.rcpt


async def test_trim_keeps_the_newest_and_deletes_messages_no_mailbox_holds(
    store: MessageStore,
) -> None:
    shared = message("trim@mx.test", "keep@mx.test")
    await store.insert(shared)
    alone = [message("trim@mx.test") for _ in range(4)]
    for m in alone:
        await store.insert(m)
    assert await store.trim_mailbox("trim@mx.test", 2) == 3
    assert [m.id for m in await store.list_mailbox("trim@mx.test")] == [alone[3].id, alone[2].id]
    assert await store.get(alone[0].id) is None  # no mailbox left: deleted
    kept = await store.get(shared.id)  # still in keep@: only left trim@
    assert kept is not None and kept.rcpt == ("keep@mx.test",)
    assert [m.id for m in await store.list_mailbox("keep@mx.test")] == [shared.id]


async def test_deleting_a_message_or_a_mailbox_leaves_no_entry(store: MessageStore) -> None:
    one = message("del@mx.test", "other@mx.test")
    two = message("del@mx.test")
    await store.insert(one)
    await store.insert(two)
    assert await store.delete(one.id)
    assert not await store.delete(one.id)
    assert await store.list_mailbox("other@mx.test") == []
    assert await store.delete_mailbox("del@mx.test") == 1
    assert await store.list_mailbox("del@mx.test") == []
    assert await store.entries.count_documents({}) == 0
    assert await store.messages.count_documents({}) == 0


async def test_a_retry_answered_with_the_first_id_leaves_no_entry_of_its_own(
    store: MessageStore,
) -> None:
    first = message("fp@mx.test", "fp2@mx.test", fp="f" * 32)
    retry = replace(first, id=new_message_id())
    assert await store.insert(first) == first.id
    await store.entries.delete_many({})  # as if the first attempt stopped before its entries
    assert await store.insert(retry) == first.id
    for box in ("fp@mx.test", "fp2@mx.test"):
        assert [m.id for m in await store.list_mailbox(box)] == [first.id]
    assert await store.entries.count_documents({}) == 1


async def test_the_sweep_indexes_messages_stored_before_the_index_and_expires_them(
    store: MessageStore,
) -> None:
    now = utcnow()
    later, earlier = now + timedelta(days=1), now - timedelta(hours=1)
    legacy = [  # the previous version's documents: no `expiry`, no keys
        {"_id": new_message_id(), "rcpt": ["old@mx.test", "old2@mx.test"], "expires_at": later},
        {"_id": new_message_id(), "rcpt": ["old@mx.test"], "expires_at": earlier},
    ]
    await store.messages.insert_many(legacy)
    assert await store.list_mailbox("old@mx.test") == []
    assert await store.sweep_expired("sweeper", 60) == 1
    for box in ("old@mx.test", "old2@mx.test"):
        assert [m.id for m in await store.list_mailbox(box)] == [legacy[0]["_id"]]
    assert await store.db[ENTRIES].count_documents({}) == 1


class CompactionCut(MessageStore):
    """A store whose compaction is cut off mid-way, as the driver cuts an operation when
    its monitor loses the server (a heartbeat timed out while the store was busy)."""

    async def compact(self) -> int:
        raise AutoReconnect("operation cancelled")


async def test_a_compaction_cut_off_leaves_the_sweeps_deletes_counted_and_says_so(
    store: MessageStore,
) -> None:
    reported: list[str] = []
    sweeper = CompactionCut(
        store.client, store.config, lambda event, **fields: reported.append(event)
    )
    earlier = utcnow() - timedelta(hours=1)
    await store.messages.insert_many(
        [{"_id": new_message_id(), "rcpt": ["cut@mx.test"], "expires_at": earlier}]
    )
    assert await sweeper.sweep_expired("sweeper", 60) == 1
    compacts = (await store._engine()).keeps_freed_pages  # MongoDB frees pages itself
    assert reported == (["store_compact_failed"] if compacts else [])


async def test_expired_messages_and_their_entries_are_swept(store: MessageStore) -> None:
    short = replace(store.config, retention=1)
    quick = MessageStore(store.client, short)
    quick._batcher.start()
    try:
        await quick.insert(message("gone@mx.test", "gone2@mx.test"))
        await store.insert(message("stays@mx.test", "stays2@mx.test"))
        await asyncio.sleep(2.1)
        assert await store.sweep_expired("sweeper", 60) == 1
        assert await store.list_mailbox("gone@mx.test") == []
        assert len(await store.list_mailbox("stays@mx.test")) == 1
        assert await store.entries.count_documents({}) == 1
    finally:
        await quick._batcher.close()


async def test_readers_take_turns_on_a_store_that_runs_one_command_at_a_time(
    store: MessageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_flight, most = 0, 0

    async def slow_pages(*args: object) -> tuple[dict[str, object], list[str]]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return {}, []

    monkeypatch.setattr(store, "_pages", slow_pages)
    await asyncio.gather(*(store.list_mailbox("busy@mx.test") for _ in range(8)))
    # nx-27017 holds a lock per database around each command: 8 readers queued there
    # would be 8 listings ahead of every insert. MongoDB serves them side by side.
    assert most == (READS_IN_FLIGHT if store.engine is Engine.EMBEDDED else 8)


def test_reads_take_at_most_their_share_of_the_time() -> None:
    pacer = ReadPacer(share=0.5, longest=0.5)
    assert pacer.wait(10.0) == 0  # nothing read yet
    pacer.done(started=10.0, now=10.04)
    assert pacer.wait(10.04) == pytest.approx(0.04)  # as long again: half the time
    pacer.done(started=10.01, now=10.05)  # another read in flight meanwhile: both count
    assert pacer.wait(10.05) == pytest.approx(0.07)
    pacer.done(started=20.0, now=23.0)  # slowed by the store (inserts ahead of it)
    assert pacer.wait(23.0) == pytest.approx(0.5)  # counted up to `longest`
    quarter = ReadPacer(share=0.25, longest=0.5)
    quarter.done(started=0.0, now=0.04)
    assert quarter.wait(0.04) == pytest.approx(0.12)
    everything = ReadPacer(share=1.0)
    everything.done(started=0.0, now=0.04)
    assert everything.wait(0.04) == 0
    with pytest.raises(ValueError):
        ReadPacer(share=0)


async def test_a_store_that_runs_one_command_at_a_time_is_left_to_inserts_between_reads(
    store: MessageStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def slow_pages(*args: object) -> tuple[dict[str, object], list[str]]:
        await asyncio.sleep(0.05)
        return {}, []

    await store.list_mailbox("paced@mx.test")  # the store has answered: its engine known
    monkeypatch.setattr(store, "_pages", slow_pages)
    await asyncio.sleep(store._pacer.wait(asyncio.get_running_loop().time()))
    started = time.monotonic()
    for _ in range(4):
        await store.list_mailbox("paced@mx.test")
    took = time.monotonic() - started
    if store.engine is Engine.EMBEDDED:
        # Each read is followed by a pause as long (READ_SHARE 0.5): three pauses between
        # the four reads at least.
        assert took >= 4 * 0.05 + 3 * 0.05 * (1 - READ_SHARE) / READ_SHARE * 0.95
    else:  # MongoDB serves reads and inserts side by side: never paced
        assert store._pacer.resume_at == 0
