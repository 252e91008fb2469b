"""Sync from a real store: change stream, periodic resync, resume across a store restart,
snapshot. Runs unchanged against a replica set given by FLOODGATE_TEST_MONGODB_URI."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo.errors import DuplicateKeyError, PyMongoError

from blocklist import BlocklistCache, BlocklistRepository, BlocklistSync, Entry, parse_network
from blocklist.repository import COLLECTION
from mailstore.connection import connect, database
from mailstore.embedded import EmbeddedStore
from tests.conftest import drop_test_database
from tests.support.blocklist import entry_document

Doc = dict[str, Any]


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until `predicate()` held; fails the test after `timeout`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not within {timeout}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def insert_once_the_store_answers(coll: Any, document: dict[str, Any]) -> None:
    """Insert `document`, trying again for up to 30 s while the store is unreachable; a
    retry that finds it already written (its first try's answer was lost) is done."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await coll.insert_one(document)
            return
        except DuplicateKeyError:
            return
        except PyMongoError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture
async def db(store_uri: str, db_name: str, clean_store: None) -> AsyncIterator[Any]:
    # The test's own client waits as long as a busy store may take: with 3 s, a store
    # slow to answer the driver's heartbeat while it took 3,000 inserts (a loaded host)
    # was marked unknown, and the insert cancelled with it.
    client = connect(store_uri, timeout=30)
    yield database(client, db_name)
    await drop_test_database(client, db_name)
    await client.close()


async def running(sync: BlocklistSync) -> BlocklistSync:
    sync.load_snapshot()
    sync.start()
    await eventually(lambda: sync.staleness() < 1, timeout=10)
    return sync


async def test_change_stream_carries_adds_updates_and_deletes(db: Any) -> None:
    cache = BlocklistCache()
    sync = await running(BlocklistSync(db[COLLECTION], cache, resync_interval=3600))
    await asyncio.sleep(0.3)
    resyncs = sync.resyncs
    try:
        await db[COLLECTION].insert_one(entry_document("192.0.2.0/24"))
        took = await eventually(lambda: cache.check("192.0.2.77"))
        assert took < 1.0  # far below the hour-long resync interval: the stream carried it
        await db[COLLECTION].update_one(
            {"_id": "192.0.2.0/24"},
            {"$set": {"expires_at": datetime.now(UTC) + timedelta(seconds=1)}},
        )
        net = parse_network("192.0.2.0/24")
        await eventually(lambda: math.isfinite(cache.index.get(net) or math.inf))
        await eventually(lambda: not cache.check("192.0.2.77"), timeout=3)  # expired locally
        await db[COLLECTION].insert_one(entry_document("2001:db8::/32"))
        await eventually(lambda: cache.check("2001:db8:1::1"))
        await db[COLLECTION].delete_one({"_id": "2001:db8::/32"})
        await eventually(lambda: not cache.check("2001:db8:1::1"))
        assert sync.stream_events >= 4 and sync.resyncs == resyncs
    finally:
        await sync.stop()


async def test_resync_alone_converges_when_there_is_no_change_stream(db: Any) -> None:
    await db[COLLECTION].insert_one(entry_document("198.51.100.9"))
    cache = BlocklistCache()
    sync = BlocklistSync(db[COLLECTION], cache, resync_interval=0.3, change_stream=False)
    await running(sync)
    try:
        assert cache.check("198.51.100.9")
        await db[COLLECTION].insert_one(entry_document("198.51.100.0/28"))
        await db[COLLECTION].delete_one({"_id": "198.51.100.9"})
        await eventually(lambda: cache.check("198.51.100.3") and len(cache) == 1)
        assert sync.stream_events == 0 and sync.resyncs >= 2
        assert sync.staleness() < 1.0
    finally:
        await sync.stop()


async def test_changes_during_a_resync_are_not_undone(db: Any) -> None:
    cache = BlocklistCache()
    sync = BlocklistSync(db[COLLECTION], cache, resync_interval=3600, change_stream=False)
    await db[COLLECTION].insert_many(
        [entry_document(f"10.{i >> 8}.{i & 255}.0/24") for i in range(3000)]
    )
    task = asyncio.create_task(sync.resync())
    while sync._journal is None:  # the resync has started reading
        await asyncio.sleep(0)
    # A change delivered mid-read (as the change stream would) must survive the swap.
    sync.apply_change(
        {
            "operationType": "insert",
            "documentKey": {"_id": "203.0.113.5/32"},
            "fullDocument": entry_document("203.0.113.5/32"),
        }
    )
    assert await task == 3001
    assert cache.check("203.0.113.5") and cache.check("10.11.183.1")


async def test_snapshot_keeps_bans_when_the_store_is_gone(db: Any, tmp_path: Path) -> None:
    path = tmp_path / "bl.snapshot"
    await db[COLLECTION].insert_many(
        [entry_document("192.0.2.1"), entry_document("2001:db8:5::/48", ttl=3600)]
    )
    sync = await running(BlocklistSync(db[COLLECTION], BlocklistCache(), snapshot_path=path))
    await sync.stop()  # writes the snapshot
    assert path.exists()

    # A new cache on an unreachable store: bans come from disk, staleness from the file.
    dead = connect("mongodb://127.0.0.1:9/?directConnection=true", timeout=0.3)
    cache = BlocklistCache()
    offline = BlocklistSync(dead["x"][COLLECTION], cache, snapshot_path=path)
    assert offline.load_snapshot()
    offline.start()
    try:
        assert cache.check("192.0.2.1") and cache.check("2001:db8:5:ffff::1")
        assert not cache.check("192.0.2.2")
        assert 0 <= offline.staleness() < 30
        await eventually(lambda: offline.stream_errors >= 1)  # it tried the store, in vain
        assert offline.resyncs == 0
        assert not await offline.write_snapshot()  # never overwrite good data while stale
    finally:
        await offline.stop()
        await dead.close()


async def test_stream_resumes_after_the_store_restarts(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "own-store")
    uri = store.start()
    client = connect(uri, timeout=1)
    try:
        coll = database(client, "bl")[COLLECTION]
        cache = BlocklistCache()
        sync = await running(BlocklistSync(coll, cache, resync_interval=3600, max_backoff=0.5))
        await coll.insert_one(entry_document("192.0.2.10"))
        await eventually(lambda: cache.check("192.0.2.10"))

        store.kill()
        await eventually(lambda: sync.stream_errors >= 1)  # the stream saw the store go
        await asyncio.to_thread(store.start)
        # The test's own write waits for the driver to find the store again: its client's
        # 1 s server selection can end before the driver's monitor reconnects on a loaded
        # host (the sync under test retries by itself).
        await insert_once_the_store_answers(coll, entry_document("192.0.2.11"))
        # Carried by the resumed stream (the hour-long resync never runs again by itself).
        await eventually(lambda: cache.check("192.0.2.11"), timeout=15)
        assert sync.stream_errors >= 1
        await eventually(lambda: sync.staleness() < 1, timeout=5)
        await sync.stop()
    finally:
        await client.close()
        store.stop()


async def test_repository_add_is_idempotent_and_audited(db: Any) -> None:
    repo = BlocklistRepository(db)
    await repo.ensure_indexes()
    first, created = await repo.add(Entry.new("203.0.113.0/24", reason="one"), "op1")
    assert created and first.created_by == "op1"
    second, created = await repo.add(
        Entry.new("203.0.113.0/24", reason="two", ttl_seconds=60), "op2"
    )
    assert not created and second.reason == "two" and second.expires_at is not None
    assert second.created_by == "op1"  # the original author stays on record
    assert (await repo.check("203.0.113.200")) == second
    assert await repo.check("203.0.114.1") is None
    assert await repo.remove("203.0.113.0/24", "op3")
    assert not await repo.remove("203.0.113.0/24", "op3")
    history = await repo.history("203.0.113.0/24")
    assert [h["action"] for h in history] == ["remove", "update", "add"]
    assert [h["actor"] for h in history] == ["op3", "op2", "op1"]
    indexes = await db[COLLECTION].index_information()
    assert any(v.get("expireAfterSeconds") == 0 for v in indexes.values())
    assert any(v["key"] == [("source", 1)] for v in indexes.values())
