"""The blocklist in MongoDB: the source of truth the API and auto-bans write through.

`blocklist`: one document per entry, `_id` = normalized CIDR, TTL index on `expires_at` (the
server deletes expired entries; every reader also ignores them from the moment they expire,
since the TTL monitor runs only once a minute). `blocklist_audit`: one document per change
(who, what, when, before/after), kept for `AUDIT_RETENTION`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
from pymongo import ASCENDING, DESCENDING, DeleteOne, ReplaceOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from blocklist.entries import (
    Entry,
    InvalidEntry,
    Net,
    aware_datetime,
    covering_networks,
    expiry_timestamp,
    normalize,
    parse_network,
)

COLLECTION = "blocklist"
AUDIT_COLLECTION = "blocklist_audit"
ALLOWLIST = "allowlist"
ALLOWLIST_AUDIT = "allowlist_audit"
EXPIRY_INDEX = "expiry"
SOURCE_INDEX = "source"
AUDIT_RETENTION = timedelta(days=400)
MAX_BULK = 10_000
BULK_CHUNK = 500  # entries per write of a bulk add
BULK_PAUSE = 0.01  # seconds between chunks: the receivers' inserts get their turn
MAX_PAGE = 10_000

Document = dict[str, Any]


@dataclass(frozen=True)
class BulkResult:
    added: int
    updated: int


class PartialBulk(Exception):
    """A bulk add failed and could not be undone either; re-sending it completes it."""

    def __init__(self, written: int) -> None:
        super().__init__(f"{written} entries may have been written; send the request again")
        self.written = written


class BlocklistRepository:
    """Writes and store-side reads of an access list (the blocklist unless told otherwise);
    every write is audited."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        timeout: float = 5.0,
        collection: str = COLLECTION,
        audit: str = AUDIT_COLLECTION,
    ) -> None:
        self.db = db
        self.entries = db[collection]
        self.audit = db[audit]
        self.timeout = timeout

    async def ensure_indexes(self) -> None:
        with pymongo.timeout(self.timeout):
            await self.entries.create_index(
                [("expires_at", ASCENDING)], name=EXPIRY_INDEX, expireAfterSeconds=0
            )
            await self.audit.create_index(
                [("at", ASCENDING)],
                name="retention",
                expireAfterSeconds=int(AUDIT_RETENTION.total_seconds()),
            )
            await self.audit.create_index([("cidr", ASCENDING), ("at", DESCENDING)], name="cidr")
            # Lifting or removing the automatic bans (`remove_covered`, `remove_by_source`)
            # reads by source: without an index, every entry on either store.
            await self.entries.create_index([("source", ASCENDING)], name=SOURCE_INDEX)

    async def add(self, entry: Entry, actor: str) -> tuple[Entry, bool]:
        """Insert or update (reason, expiry, source); return the stored entry and `created`."""
        with pymongo.timeout(self.timeout):
            before = await self.entries.find_one({"_id": entry.cidr})
            created = before is None or _expired(before)
            # Whole-document replacement rather than `$set`: dates stay BSON dates on every
            # store (the embedded one turns `$set` dates into strings, which TTL ignores).
            document = _merged(entry, None if created else before, actor)
            await self.entries.replace_one({"_id": entry.cidr}, document, upsert=True)
            stored = await self.entries.find_one({"_id": entry.cidr})
            assert stored is not None
            result = Entry.from_document(stored)
            await self.audit.insert_one(
                _audit("add" if created else "update", result.cidr, actor, before, stored)
            )
        return result, created

    async def add_many(self, entries: Sequence[Entry], actor: str) -> BulkResult:
        """Upsert up to `MAX_BULK` entries, all or nothing, audited.

        Written in chunks of `BULK_CHUNK` with a pause between them, so a large import
        never holds the store long enough to stall the receivers' inserts. If a chunk
        fails, the chunks already written are put back as they were (new entries removed,
        replaced ones restored) and the error is raised: nothing was written. Should even
        that fail, `PartialBulk` says so; re-sending the same request completes it, since
        adding an entry again is idempotent.
        """
        if len(entries) > MAX_BULK:
            raise ValueError(f"at most {MAX_BULK} entries per bulk request")
        if not entries:
            return BulkResult(0, 0)
        with pymongo.timeout(max(self.timeout, len(entries) / 1000)):
            cursor = self.entries.find({"_id": {"$in": [e.cidr for e in entries]}})
            before = {d["_id"]: d async for d in cursor}
        live = {cidr: doc for cidr, doc in before.items() if not _expired(doc)}
        written: list[Entry] = []
        try:
            for start in range(0, len(entries), BULK_CHUNK):
                chunk = entries[start : start + BULK_CHUNK]
                operations = [
                    ReplaceOne({"_id": e.cidr}, _merged(e, live.get(e.cidr), actor), upsert=True)
                    for e in chunk
                ]
                written.extend(chunk)  # a failed chunk may be partly written: undo it too
                with pymongo.timeout(self.timeout):
                    await self.entries.bulk_write(operations, ordered=False)
                await asyncio.sleep(BULK_PAUSE)
        except PyMongoError:
            await self._undo(written, before)
            raise
        await self._audit_bulk(entries, actor)
        return BulkResult(added=len(entries) - len(live), updated=len(live))

    async def _undo(self, written: Sequence[Entry], before: dict[str, Document]) -> None:
        """Put back what a failed bulk add changed."""
        operations: list[Any] = [
            ReplaceOne({"_id": e.cidr}, before[e.cidr], upsert=True)
            if e.cidr in before
            else DeleteOne({"_id": e.cidr})
            for e in written
        ]
        try:
            for start in range(0, len(operations), BULK_CHUNK):
                with pymongo.timeout(self.timeout):
                    await self.entries.bulk_write(
                        operations[start : start + BULK_CHUNK], ordered=False
                    )
        except PyMongoError as error:
            raise PartialBulk(len(written)) from error

    async def _audit_bulk(self, entries: Sequence[Entry], actor: str) -> None:
        now = datetime.now(UTC)
        records = [
            {
                "action": "bulk_add",
                "cidr": e.cidr,
                "actor": actor,
                "at": now,
                "reason": e.reason,
                "expires_at": e.expires_at,
            }
            for e in entries
        ]
        for start in range(0, len(records), BULK_CHUNK):
            with pymongo.timeout(self.timeout):
                await self.audit.insert_many(records[start : start + BULK_CHUNK], ordered=False)

    async def remove(self, cidr: str, actor: str) -> bool:
        key = normalize(cidr)
        with pymongo.timeout(self.timeout):
            before = await self.entries.find_one_and_delete({"_id": key})
            if before is None:
                return False
            await self.audit.insert_one(_audit("remove", key, actor, before, None))
        return not _expired(before)

    async def get(self, cidr: str) -> Entry | None:
        with pymongo.timeout(self.timeout):
            doc = await self.entries.find_one({"_id": normalize(cidr)})
        return None if doc is None or _expired(doc) else Entry.from_document(doc)

    async def page(
        self, *, limit: int = 1000, after: str | None = None, source: str | None = None
    ) -> list[Entry]:
        """Unexpired entries in `_id` order, `limit` at a time, starting after `after`."""
        limit = max(1, min(limit, MAX_PAGE))
        # Conditions joined by an explicit $and: the embedded store ignores fields that sit
        # beside a top-level $or.
        conditions: list[Document] = [
            {"$or": [{"expires_at": None}, {"expires_at": {"$gt": datetime.now(UTC)}}]}
        ]
        if after is not None:
            conditions.append({"_id": {"$gt": after}})
        if source is not None:
            conditions.append({"source": source})
        query: Document = {"$and": conditions}
        with pymongo.timeout(self.timeout):
            cursor = self.entries.find(query).sort("_id", ASCENDING).limit(limit)
            return [Entry.from_document(doc) async for doc in cursor]

    async def check(self, ip: str) -> Entry | None:
        """The most specific unexpired entry covering `ip`, straight from the store."""
        candidates = covering_networks(ip)
        with pymongo.timeout(self.timeout):
            docs = [d async for d in self.entries.find({"_id": {"$in": candidates}})]
        live = {d["_id"]: d for d in docs if not _expired(d)}
        for cidr in candidates:
            if cidr in live:
                return Entry.from_document(live[cidr])
        return None

    async def remove_covered(
        self, network: str, actor: str, *, source: str = "auto", limit: int = 100_000
    ) -> list[str]:
        """Remove the `source` entries inside `network` (an allowlist entry lifting the
        automatic bans it covers); bounded by `limit` entries examined."""
        outer = parse_network(network)
        with pymongo.timeout(max(self.timeout, limit / 10_000)):
            cursor = self.entries.find({"source": source}, {"_id": 1}).limit(limit)
            inside = [d["_id"] async for d in cursor if _within(str(d["_id"]), outer)]
            removed = []
            for cidr in inside:
                before = await self.entries.find_one_and_delete({"_id": cidr, "source": source})
                if before is not None:
                    await self.audit.insert_one(_audit("lift", cidr, actor, before, None))
                    removed.append(cidr)
        return removed

    async def remove_by_source(
        self, source: str, actor: str, *, older_than: float = 0.0, limit: int = 100_000
    ) -> int:
        """Remove every `source` entry created at least `older_than` seconds ago (all the
        automatic bans after a load test, in one call); audited, in bounded chunks."""
        cutoff = datetime.now(UTC).timestamp() - older_than
        with pymongo.timeout(max(self.timeout, limit / 10_000)):
            cursor = self.entries.find({"source": source}, {"_id": 1, "created_at": 1})
            chosen = []
            async for doc in cursor.limit(limit):
                # Compared here: the embedded store's date range queries are unreliable.
                created = aware_datetime(doc.get("created_at"))
                if created is None or created.timestamp() <= cutoff:
                    chosen.append(str(doc["_id"]))
        removed = 0
        for start in range(0, len(chosen), BULK_CHUNK):
            chunk = chosen[start : start + BULK_CHUNK]
            with pymongo.timeout(self.timeout):
                result = await self.entries.delete_many({"_id": {"$in": chunk}, "source": source})
                await self.audit.insert_many(
                    [_audit("remove", cidr, actor, {"source": source}, None) for cidr in chunk],
                    ordered=False,
                )
            removed += result.deleted_count
        return removed

    async def history(self, cidr: str, limit: int = 100) -> list[Document]:
        with pymongo.timeout(self.timeout):
            cursor = (
                self.audit.find({"cidr": normalize(cidr)}, {"_id": 0})
                .sort("at", DESCENDING)
                .limit(limit)
            )
            return [doc async for doc in cursor]


def _merged(entry: Entry, existing: Document | None, actor: str) -> Document:
    """The document for `entry`; an existing live entry keeps its creation record."""
    document = entry.to_document()
    if existing is None:
        document["created_by"] = actor
    else:
        previous = Entry.from_document(existing)
        document["created_at"] = previous.created_at
        document["created_by"] = previous.created_by
    return document


def _within(cidr: str, outer: Net) -> bool:
    try:
        inner = parse_network(cidr)
    except InvalidEntry:
        return False
    return inner.prefixlen >= outer.prefixlen and outer.contains(inner.version, inner.value)


def _expired(doc: Document) -> bool:
    return expiry_timestamp(doc.get("expires_at")) <= time.time()


def _audit(
    action: str, cidr: str, actor: str, before: Document | None, after: Document | None
) -> Document:
    def brief(doc: Document | None) -> Document | None:
        if doc is None:
            return None
        return {k: doc.get(k) for k in ("reason", "source", "expires_at")}

    return {
        "action": action,
        "cidr": cidr,
        "actor": actor,
        "at": datetime.now(UTC),
        "before": brief(before),
        "after": brief(after),
    }
