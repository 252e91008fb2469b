"""Retention on the embedded store, which has no TTL index (its TTL is a scan of every
document before each read): the receivers' sweeper deletes expired mail with nobody
reading, counts it, one sweeper at a time, and the file gives the space back."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from datetime import timedelta
from pathlib import Path

from pymongo import AsyncMongoClient, MongoClient

from mailstore import MessageDocument, MessageStore, StoreConfig, new_message_id
from mailstore._nxserver import JOURNAL_SIZE_LIMIT
from mailstore.embedded import EmbeddedStore
from mailstore.message import utcnow
from mailstore.retention import acquire_lease
from tests.conftest import ServiceFactory
from tests.support.metrics import sample
from tests.support.smtp import wait_for


def rows_on_disk(path: Path, prefix: str) -> int:
    """Rows in the store's own file, read without asking the store (no lazy expiry)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        row = db.execute("SELECT count(*) FROM messages WHERE _id LIKE ?", (prefix + "%",))
        return int(row.fetchone()[0])


def test_expired_mail_leaves_the_store_file_with_no_reader(
    make_receiver: ServiceFactory, tmp_path: Path, db_name: str
) -> None:
    store = EmbeddedStore(tmp_path / "retention-store")
    uri = store.start()
    try:
        now = utcnow()
        with MongoClient(uri) as client:
            messages = client[db_name]["messages"]
            past, future = now - timedelta(minutes=5), now + timedelta(days=1)
            messages.insert_many(
                [
                    {"_id": f"old{n:03d}", "expires_at": past, "rcpt": ["x@mx.test"]}
                    for n in range(60)
                ]
                + [
                    {"_id": f"new{n:03d}", "expires_at": future, "rcpt": ["x@mx.test"]}
                    for n in range(5)
                ]
            )
        database = tmp_path / "retention-store" / "floodgate.db"
        assert rows_on_disk(database, "old") == 60
        receiver = make_receiver(mongodb_uri=uri)
        assert wait_for(lambda: rows_on_disk(database, "old") == 0, timeout=30)
        assert rows_on_disk(database, "new") == 5
        # Counted: the sweeper deletes without reading first, so the embedded store's
        # lazy expiry (on any read) does not take the deletions from under the counter.
        expired = sample(receiver.http_url, "floodgate_messages_expired_total")
        assert expired == 60, expired
        assert "event=retention_swept deleted=60" in receiver.log()
        assert receiver.alive()
    finally:
        store.stop()


async def test_one_sweeper_holds_the_lease_until_it_expires(store_uri: str, db_name: str) -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(store_uri)
    try:
        db = client[db_name]
        await db["leases"].delete_many({})
        assert await acquire_lease(db, "receiver a", 60)
        assert not await acquire_lease(db, "receiver b", 60)  # a's lease is live
        assert await acquire_lease(db, "receiver a", 60)  # a renews its own
        await db["leases"].update_one(
            {"_id": "retention"}, {"$set": {"expires_at": utcnow() - timedelta(seconds=1)}}
        )
        assert await acquire_lease(db, "receiver b", 60)  # a died: b takes over
        assert not await acquire_lease(db, "receiver a", 60)
    finally:
        await client.close()


async def test_swept_mail_gives_its_space_back_to_the_file_system(tmp_path: Path) -> None:
    server = EmbeddedStore(tmp_path / "space-store")
    uri = server.start()
    database, log = server.database_path, Path(f"{server.database_path}-wal")
    store = await MessageStore.open(StoreConfig(uri=uri, timeout=60))
    brief = await MessageStore.open(StoreConfig(uri=uri, timeout=60, retention=1))
    try:
        incompressible = [
            MessageDocument(
                id=new_message_id(),
                raw=b"Subject: x\r\n\r\n" + os.urandom(3000),
                mail_from="a@example.org",
                rcpt=(f"u{n}@mx.test",),
                peer_ip="192.0.2.1",
                helo="client.test",
                received_at=utcnow(),
            )
            for n in range(3000)
        ]
        for start in range(0, len(incompressible), 500):
            await asyncio.gather(*(brief.insert(m) for m in incompressible[start : start + 500]))
        written = database.stat().st_size
        assert written > 10 * 2**20
        await asyncio.sleep(2.1)
        assert await store.sweep_expired("space", 60) == 3000
        assert database.stat().st_size < written / 10
        assert log.stat().st_size <= JOURNAL_SIZE_LIMIT
    finally:
        await brief.close()
        await store.close()
        server.stop()
