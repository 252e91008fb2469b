"""The message store against a real server (embedded, or FLOODGATE_TEST_MONGODB_URI)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest

from mailstore import (
    MessageDocument,
    MessageStore,
    StoreConfig,
    new_message_id,
    scan_headers,
    utcnow,
)
from mailstore.engine import Engine
from tests.conftest import drop_test_database


@pytest.fixture
async def store(store_uri: str, db_name: str, clean_store: None) -> AsyncIterator[MessageStore]:
    # Emptied first: on the embedded store every test's database is the same collections.
    opened = await MessageStore.open(StoreConfig(uri=store_uri, database=db_name, retention=3600))
    yield opened
    await drop_test_database(opened.client, db_name)
    await opened.close()


def message(
    rcpt: tuple[str, ...] = ("box@mx.test",), raw: bytes = b"Subject: s\r\n\r\nb\r\n"
) -> MessageDocument:
    return MessageDocument(
        id=new_message_id(),
        raw=raw,
        mail_from="Sender@Example.org",
        rcpt=rcpt,
        peer_ip="127.0.0.1",
        helo="client.test",
        received_at=utcnow(),
        received_header=b"Received: x\r\n",
        headers=scan_headers(raw).values,
    )


async def test_insert_keeps_raw_bytes_and_lowercases_envelope(store: MessageStore) -> None:
    raw = b"Subject: =?utf-8?b?w6k=?=\r\n\r\n\x00\xff\r\n.\r\n"
    incoming = message(("Box@MX.test",), raw)
    await store.insert(incoming)
    doc = await store.get(incoming.id)
    assert doc is not None
    assert doc.raw == raw
    assert doc.mail_from == "sender@example.org" and doc.rcpt == ("box@mx.test",)
    assert doc.headers["subject"] == "=?utf-8?b?w6k=?="  # decoded by the read side
    assert doc.size == len(raw)
    assert doc == replace(
        incoming,
        mail_from="sender@example.org",
        rcpt=("box@mx.test",),
        expires_at=doc.expires_at,
        received_at=doc.received_at,
    )


async def test_retention_is_a_ttl_index_on_mongodb_and_an_expiry_number_everywhere(
    store: MessageStore,
) -> None:
    incoming = message()
    await store.insert(incoming)
    info = await store.index_info()
    ttl = [
        (spec["key"], spec["expireAfterSeconds"])
        for spec in info.values()
        if "expireAfterSeconds" in spec
    ]
    # nx-27017 runs a TTL index as a date comparison over every document before each read.
    assert ttl == ([] if store.engine is Engine.EMBEDDED else [([("expires_at", 1)], 0)])
    assert any(spec["key"] == [("expiry", 1)] for spec in info.values())
    doc = await store.get(incoming.id)
    assert doc is not None
    assert doc.expires_at is not None
    assert doc.expires_at - doc.received_at == timedelta(seconds=3600)
    stored = await store.messages.find_one({"_id": incoming.id})
    assert stored is not None and stored["expiry"] == math.ceil(doc.expires_at.timestamp())
    assert not any(spec["key"][0][0] == "rcpt" for spec in info.values())  # the old inbox index


async def test_bytes_are_stored_compressed_where_the_engine_does_not_compress(
    store: MessageStore,
) -> None:
    raw = b"Subject: s\r\n\r\n" + b"a line that repeats in every newsletter\r\n" * 50
    incoming = message(raw=raw)
    await store.insert(incoming)
    stored = await store.messages.find_one({"_id": incoming.id})
    assert stored is not None
    assert ("raw_zstd" in stored) is (store.engine is Engine.EMBEDDED)
    doc = await store.get(incoming.id)
    assert doc is not None and doc.raw == raw and doc.size == len(raw)


async def test_same_id_inserted_twice_is_stored_once(store: MessageStore) -> None:
    incoming = message()
    await store.insert(incoming)
    await store.insert(incoming)  # a retry: the id fixed at DATA time makes it idempotent
    assert await store.messages.count_documents({"_id": incoming.id}) == 1


async def test_mailbox_lists_newest_first_without_raw(store: MessageStore) -> None:
    ids = []
    for _ in range(3):
        incoming = message(("list@mx.test",))
        ids.append(incoming.id)
        await store.insert(incoming)
    docs = await store.list_mailbox("LIST@mx.test")
    assert [d.id for d in docs] == list(reversed(ids))
    assert all(d.raw == b"" and d.size == 17 for d in docs)


async def test_concurrent_inserts_are_grouped_and_all_durable(store: MessageStore) -> None:
    import asyncio

    batch = [message(("many@mx.test",)) for _ in range(300)]
    await asyncio.gather(*(store.insert(m) for m in batch))
    assert await store.messages.count_documents({"rcpt": "many@mx.test"}) == 300
    assert store.pending == 0


async def test_the_same_message_again_is_one_document_answered_with_the_first_id(
    store: MessageStore,
) -> None:
    from dataclasses import replace

    await store.ensure_indexes()
    first = replace(message(("fp@mx.test",)), fp="f" * 32)
    retry = replace(first, id=new_message_id())  # the sender's retry: a new id at DATA
    other = replace(message(("fp@mx.test",)), fp="e" * 32)
    assert await store.insert(first) == first.id
    assert await asyncio.gather(store.insert(retry), store.insert(other)) == [first.id, other.id]
    assert await store.messages.count_documents({"rcpt": "fp@mx.test"}) == 2
    assert await store.get(retry.id) is None


async def test_inserts_past_the_pending_bound_are_refused_not_queued(
    store_uri: str, db_name: str
) -> None:
    import asyncio

    from mailstore import StoreBusy

    small = await MessageStore.open(StoreConfig(uri=store_uri, database=db_name, max_pending=5))
    try:
        outcomes = await asyncio.gather(
            *(small.insert(message(("busy@mx.test",))) for _ in range(40)),
            return_exceptions=True,
        )
        stored = [o for o in outcomes if isinstance(o, str)]
        busy = [o for o in outcomes if isinstance(o, StoreBusy)]
        assert len(stored) == 5 and len(busy) == 35
        assert await small.messages.count_documents({"rcpt": "busy@mx.test"}) == 5
        assert small.pending == 0
    finally:
        await small.close()


async def test_an_unencodable_message_fails_alone_never_its_batch(store: MessageStore) -> None:
    from dataclasses import replace

    from mailstore import StoreRejected

    bad_sender = b"\xff\xfe@example.org".decode("utf-8", "surrogateescape")
    good = [message((f"n{n}@mx.test",)) for n in range(6)]
    bad = replace(message(), mail_from=bad_sender)
    outcomes = await asyncio.gather(
        *(store.insert(m) for m in [*good[:3], bad, *good[3:]]), return_exceptions=True
    )
    assert isinstance(outcomes[3], StoreRejected)
    assert [o for i, o in enumerate(outcomes) if i != 3] == [m.id for m in good]
    for stored in good:
        assert await store.get(stored.id) is not None
    assert await store.get(bad.id) is None
