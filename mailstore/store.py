"""The message store: durable inserts, inbox queries and retention, over one MongoDB database."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import bson
import pymongo
from bson.errors import InvalidDocument
from bson.raw_bson import RawBSONDocument
from pymongo import AsyncMongoClient, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from mailstore import queries, retention
from mailstore.batcher import InsertBatcher, Report
from mailstore.connection import Document, connect, database
from mailstore.documents import entries_of, expiry, to_document
from mailstore.engine import Engine, detect
from mailstore.errors import StoreError, StoreRejected, brief, cause
from mailstore.ids import id_floor
from mailstore.mailboxes import ENTRIES, EntryKey, entries, entry_key, message_id_of, split
from mailstore.message import MessageDocument, MessageKey, stored_datetime, utcnow
from mailstore.queries import MESSAGES, STATS, Op, Query

K = MessageKey
HEALTH = "health"  # one probe document per receiver
STATS_FORGET = 3600.0  # a snapshot this old is deleted when the stats are read
TRIM_BATCH = 5_000
MIGRATE_BATCH = 500  # messages from before the mailbox index given entries per round
MAX_DOCUMENT = 16 * 1024 * 1024  # MongoDB's maxBsonObjectSize
# The embedded store hands freed pages back to the file system once this much is free.
COMPACT_MB = 8
# Readers' queries one process has in flight on a store that runs one command at a time
# (the embedded store): an insert then waits behind at most this many, not behind every
# reader the API is serving.
READS_IN_FLIGHT = 2
# ... and the share of the time those reads may take (`ReadPacer`).
READ_SHARE = 0.5
READ_PAUSE_FROM = 0.5


class ReadPacer:
    """Reads take at most `share` of the time: after a read that took t seconds, the next
    starts no sooner than t * (1 - share) / share later (t counted up to `longest`), so the
    receivers' inserts find a store that runs one command at a time free the rest of the
    time. A read slowed by inserts (the store busy with them) is followed by a longer
    pause: readers yield to the mail coming in."""

    def __init__(self, share: float = READ_SHARE, longest: float = READ_PAUSE_FROM) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share={share} is not in (0, 1]")
        self.share = share
        self.longest = longest
        self.resume_at = 0.0  # no read starts before this (the clock's time)

    def wait(self, now: float) -> float:
        """Seconds the next read waits before it starts."""
        return max(0.0, self.resume_at - now)

    def done(self, started: float, now: float) -> None:
        """A read that started at `started` ended at `now`."""
        took = min(max(0.0, now - started), self.longest)
        self.resume_at = max(self.resume_at, now) + took * (1 - self.share) / self.share


@dataclass(frozen=True, slots=True)
class StoreConfig:
    uri: str
    database: str = "floodgate"
    timeout: float = 5.0
    max_pending: int = 2_000
    batch_size: int = 256
    retention: int = 86_400


def encode(document: Document) -> RawBSONDocument:
    """The document as BSON, checked now: the driver then sends these bytes as they are."""
    try:
        data = bson.encode(document)
    except (ValueError, InvalidDocument) as error:  # e.g. lone surrogates in a string
        raise StoreRejected(f"unencodable document: {type(error).__name__}") from None
    if len(data) > MAX_DOCUMENT:
        raise StoreRejected(f"document of {len(data)} bytes exceeds the BSON limit")
    return RawBSONDocument(data)


class MessageStore:
    """Messages in MongoDB. Create with `await MessageStore.open(config)`."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        config: StoreConfig,
        report: Report | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.db: AsyncDatabase[Document] = database(client, config.database)
        self.messages: AsyncCollection[Document] = self.db[MESSAGES]
        self.entries: AsyncCollection[Document] = self.db[ENTRIES]
        self.engine: Engine | None = None  # known once the store has answered
        self._report = report
        self._read_slots = asyncio.Semaphore(READS_IN_FLIGHT)
        self._pacer = ReadPacer()
        self._batcher = InsertBatcher(
            self.messages,
            entries=self.entries,
            timeout=config.timeout,
            max_pending=config.max_pending,
            max_batch=config.batch_size,
            report=report,
        )

    @classmethod
    async def open(
        cls, config: StoreConfig, *, ensure_indexes: bool = True, report: Report | None = None
    ) -> MessageStore:
        """Connect; create indexes when the store answers (a down store is not fatal here).
        `report` logs store events (a failed insert batch) in the caller's vocabulary."""
        store = cls(connect(config.uri, timeout=config.timeout), config, report)
        store._batcher.start()
        if ensure_indexes:
            try:
                await store.ensure_indexes()
            except PyMongoError:
                pass  # retried by the caller's health loop; inserts still answer 451 meanwhile
        return store

    async def close(self) -> None:
        await self._batcher.close()
        await self.client.close()

    async def ensure_indexes(self) -> None:
        """The indexes of `mailstore.queries.INDEXES`; a TTL only where the engine expires
        by itself (MongoDB), and none left where it does not (an earlier version's)."""
        engine = await self._engine()
        with pymongo.timeout(self.config.timeout):
            for collection, name in queries.RETIRED:
                await self._drop_index(collection, name)
            for index in queries.INDEXES:
                options: dict[str, Any] = {"name": index.name}
                if index.unique:
                    options["unique"] = True
                if index.sparse:
                    options["sparse"] = True
                if index.ttl is not None:
                    if not engine.expires_by_itself:
                        await self._drop_index(index.collection, index.name)
                        continue
                    options["expireAfterSeconds"] = index.ttl
                await self.db[index.collection].create_index(list(index.keys), **options)

    async def _engine(self) -> Engine:
        if self.engine is None:
            self.engine = await detect(self.client, self.config.timeout)
        return self.engine

    async def _drop_index(self, collection: str, name: str) -> None:
        """Drop the index `name` (MongoDB's name; nx-27017 names indexes after their
        keys, and is asked by those)."""
        wanted = {i.name: i.keys for i in queries.INDEXES if i.collection == collection}
        keys = wanted.get(name) or (((K.RCPT, 1), (K.RECEIVED_AT, -1)) if name == "inbox" else ())
        for found, spec in (await self.db[collection].index_information()).items():
            if found == name or (keys and list(spec.get("key", ())) == list(keys)):
                await self.db[collection].drop_index(found)

    @property
    def pending(self) -> int:
        return self._batcher.pending

    async def insert(self, message: MessageDocument) -> str:
        """Return the id it is stored under once the message is durable; raise
        `StoreError` otherwise.

        The id is the message's own, or, when a document with the same fingerprint is
        already stored (the sender's retry of a message whose first write landed after
        all), that document's: one copy, and the retry hears the first id (whose mailbox
        entries are written again, in case the first attempt stopped before them).
        `StoreRejected` (before anything is queued) when the document cannot be encoded:
        that message alone fails, never the batch it would have joined.
        """
        # Compressed only where the engine does not (known once the store answered).
        compress = self.engine is not None and not self.engine.compresses_documents
        fields = to_document(message, self.config.retention, compress=compress)
        document = encode(fields)
        indexed = [RawBSONDocument(bson.encode(e)) for e in entries_of(fields)]
        for _ in range(2):
            if await self._batcher.insert(document, indexed):
                return message.id
            first = await self._first_copy(message.fp)
            if first is not None:
                await self._index_again(first, fields)
                return first
            # The first copy went (deleted, expired) between the two: store this one.
        raise StoreError("fingerprint conflict did not resolve")

    async def _first_copy(self, fp: str) -> str | None:
        try:
            found = await self._find_one(queries.fingerprint(fp))
        except PyMongoError as error:
            raise StoreError(f"fingerprint lookup failed: {brief(error)}") from None
        return str(found[K.ID]) if found is not None else None

    async def _index_again(self, message_id: str, fields: Document) -> None:
        """Write the entries of the first copy again (a retry may come after an attempt
        that stored the message and stopped before its entries)."""
        _, others = split(message_id, fields[K.RCPT])
        if not others:
            return
        again = entries(message_id, others, int(fields[K.EXPIRY]))
        try:
            with pymongo.timeout(self.config.timeout):
                await self.entries.insert_many(again, ordered=False)
        except pymongo.errors.BulkWriteError as error:
            if any(e.get("code") != 11000 for e in error.details.get("writeErrors", [])):
                raise StoreError(f"mailbox index: {brief(error)}") from None
        except PyMongoError as error:
            raise StoreError(f"mailbox index: {brief(error)}") from None

    async def list_mailbox(
        self,
        address: str,
        limit: int = 50,
        *,
        before: str | None = None,
        after: str | None = None,
        since: datetime | None = None,
    ) -> list[MessageDocument]:
        """Newest first (ids are time-ordered), without the raw bytes; `before`/`after` an
        id page through the mailbox, `since` a time bounds it (ids sort by time).

        Two index ranges: the messages that name the mailbox first (with the listing's
        fields), and its entries (messages that name it later, read by id)."""
        mailbox = address.lower()
        floor = id_floor(since.timestamp()) if since is not None else None
        bounds = {"before": before, "after": after, "since": floor}
        async with self._reading():
            page, keys = await self._pages(mailbox, limit, bounds)
            if keys:
                ids = [message_id_of(k) for k in keys]
                with pymongo.timeout(self.config.timeout):
                    listed = await self._find(queries.listed_messages(ids))
                found = {str(d[K.ID]): d for d in listed}
                # An entry whose message is gone (a delete under way) lists nothing.
                page.update((k, found[message_id_of(k)]) for k in keys if message_id_of(k) in found)
        newest = sorted(page, reverse=True)[:limit]
        return [MessageDocument.read(page[key]) for key in newest]

    async def _pages(
        self, mailbox: str, limit: int, bounds: dict[str, str | None]
    ) -> tuple[dict[str, Document], list[str]]:
        """A mailbox's newest messages that name it first (by key), and its newest entry
        keys, both within the bounds."""
        with pymongo.timeout(self.config.timeout):
            page = {
                str(doc[K.BOX]): doc
                for doc in await self._find(queries.inline_page(mailbox, limit, **bounds))
            }
            keys = [
                str(doc[EntryKey.ID])
                for doc in await self._find(queries.entries_page(mailbox, limit, **bounds))
            ]
        return page, keys

    async def trim_mailbox(self, address: str, keep: int) -> int:
        """Take `address` off all but its `keep` newest messages (at most `TRIM_BATCH` at a
        time); messages left with no mailbox are deleted. Returns how many it left."""
        mailbox = address.lower()
        with pymongo.timeout(self.config.timeout):
            first, later = await self._beyond(mailbox, keep)
            if not first and not later:
                return 0
            await self._leave(mailbox, first, later)
        return len(first) + len(later)

    async def _beyond(self, mailbox: str, keep: int) -> tuple[list[str], list[str]]:
        """The keys past the `keep` newest of `mailbox` (at most `TRIM_BATCH`): those kept
        in messages, and those of entries."""
        if not await self._find(queries.entries_page(mailbox, 1)):
            # The usual case: every message names it first. The window is the store's.
            beyond = queries.inline_beyond(mailbox, keep, TRIM_BATCH)
            return [str(doc[K.BOX]) for doc in await self._find(beyond)], []
        window = keep + TRIM_BATCH
        first = [str(d[K.BOX]) for d in await self._find(queries.inline_beyond(mailbox, 0, window))]
        later = [
            str(d[EntryKey.ID])
            for d in await self._find(queries.entries_beyond(mailbox, 0, window))
        ]
        taken = set(sorted(first + later, reverse=True)[keep:window])
        return [k for k in first if k in taken], [k for k in later if k in taken]

    async def _leave(self, mailbox: str, first: list[str], later: list[str]) -> None:
        """Take `mailbox` off these messages: those it alone holds are deleted (one
        statement: nx-27017 commits each updated document on its own), the others lose it
        from their recipients (and their key, where it was their first mailbox)."""
        first_ids = [message_id_of(k) for k in first]
        later_ids = [message_id_of(k) for k in later]
        if later:
            await self._run(queries.entries_by_key(later))
        await self._run(queries.held_by_one(first_ids + later_ids))
        changed = 0
        if first_ids:  # what is left of them is held by other mailboxes too
            changed += await self._run(queries.leave_first_mailbox(first_ids, mailbox))
        if later_ids:
            changed += await self._run(queries.leave_mailbox(later_ids, mailbox))
        if changed:  # a recipient listed twice leaves an empty list
            await self._run(queries.left_empty(first_ids + later_ids))

    async def delete_mailbox(self, address: str) -> int:
        """Take `address` off every message it received; a message left with no recipient
        is deleted. Returns how many messages the mailbox held."""
        removed = 0
        while trimmed := await self.trim_mailbox(address, 0):
            removed += trimmed
        return removed

    async def get_many(self, ids: list[str]) -> list[MessageDocument]:
        """These messages whole (one query by id), those that still exist, in no order."""
        async with self._reading():
            with pymongo.timeout(self.config.timeout):
                found = await self._find(queries.whole_messages(ids))
        return [MessageDocument.read(doc) for doc in found]

    async def get(self, message_id: str) -> MessageDocument | None:
        async with self._reading():
            found = await self._find_one(queries.message(message_id))
        return MessageDocument.read(found) if found is not None else None

    async def delete(self, message_id: str) -> bool:
        """Delete the message from every mailbox: its entries first, then the message."""
        with pymongo.timeout(self.config.timeout):
            found = await self._find_one(queries.message(message_id, {K.RCPT: 1}))
            if found is None:
                return False
            _, others = split(message_id, found.get(K.RCPT) or [])
            if others:
                keys = [entry_key(m, message_id) for m in others]
                await self._run(queries.entries_by_key(keys))
            return await self._run(queries.delete_message(message_id)) > 0

    @contextlib.asynccontextmanager
    async def _reading(self) -> AsyncIterator[None]:
        """A reader's turn: on a store that runs one command at a time, at most
        `READS_IN_FLIGHT` of this process's reads at once, taking at most `READ_SHARE` of
        the time (a read slowed by the receivers' inserts is followed by a longer pause)."""
        if self.engine is None or not self.engine.serializes_commands:
            yield
            return
        async with self._read_slots:
            loop = asyncio.get_running_loop()
            pause = self._pacer.wait(loop.time())
            if pause > 0:
                await asyncio.sleep(pause)
            started = loop.time()
            try:
                yield
            finally:
                self._pacer.done(started, loop.time())

    async def _find(self, query: Query) -> list[Document]:
        cursor = self.db[query.collection].find(query.filter, query.projection)
        if query.sort:
            cursor = cursor.sort(list(query.sort))
        if query.skip:
            cursor = cursor.skip(query.skip)
        if query.limit:
            cursor = cursor.limit(query.limit)
        return await cursor.to_list(length=None)

    async def _find_one(self, query: Query) -> Document | None:
        with pymongo.timeout(self.config.timeout):
            found = await self._find(query)
        return found[0] if found else None

    async def _run(self, query: Query) -> int:
        """A delete or update; how many documents it deleted or changed."""
        collection = self.db[query.collection]
        if query.op is Op.DELETE:
            return (await collection.delete_many(query.filter)).deleted_count
        assert query.op is Op.UPDATE and query.update is not None
        return (await collection.update_many(query.filter, query.update)).modified_count

    async def probe(self, name: str, within: float) -> str | None:
        """Write one small document durably, as a message would be written.

        None if it was confirmed within `within` seconds, else a short reason: unlike a
        ping, this fails on a full disk, a read-only member or a stalled journal.
        """
        try:
            with pymongo.timeout(within):
                await self.db[HEALTH].update_one(
                    {"_id": name}, {"$set": {"at": utcnow()}}, upsert=True
                )
        except (TimeoutError, PyMongoError) as error:
            return cause(error, within)
        return None

    async def sweep_expired(self, holder: str, lease: float) -> int | None:
        """Delete expired messages if `holder` gets the sweeper's lease (None if it does
        not), within the store timeout; return how many.

        First gives messages stored before the mailbox index their entries (a bounded
        number per sweep); on the embedded store, hands the space freed back to the file
        system once enough of it is free.
        """
        started = time.monotonic()
        with pymongo.timeout(self.config.timeout):
            if not await retention.acquire_lease(self.db, holder, lease):
                return None
            while await self.index_unindexed(MIGRATE_BATCH):
                if time.monotonic() - started > self.config.timeout / 2:
                    break
            now = int(time.time())
            await self._run(queries.expired_entries(now))
            deleted = await self._run(queries.expired_messages(now))
        if deleted and (await self._engine()).keeps_freed_pages:
            try:
                await self.compact()
            except PyMongoError as error:  # housekeeping: the deletes stand; a later sweep
                if self._report is not None:  # that deletes compacts again
                    self._report("store_compact_failed", error=type(error).__name__)
        return deleted

    async def index_unindexed(self, limit: int) -> int:
        """Give up to `limit` messages stored before the mailbox index (no `expiry`) their
        entries and expiry; return how many there were."""
        found = await self._find(queries.unindexed_messages(limit))
        if not found:
            return 0
        now = utcnow()
        later = now + timedelta(seconds=self.config.retention)
        written = []
        updates = []
        for doc in found:
            until = stored_datetime(doc.get(K.EXPIRES_AT)) or later
            stamp, message_id = expiry(until), str(doc[K.ID])
            box, others = split(message_id, doc.get(K.RCPT) or [])
            written.extend(entries(message_id, others, stamp))
            updates.append(queries.index_message(message_id, stamp, box))
        if written:  # the entries first: a message with an `expiry` is indexed
            try:
                await self.entries.insert_many(written, ordered=False)
            except pymongo.errors.BulkWriteError as error:
                if any(e.get("code") != 11000 for e in error.details.get("writeErrors", [])):
                    raise
        await self.messages.bulk_write(
            [UpdateOne(u.filter, u.update or {}) for u in updates], ordered=False
        )
        return len(found)

    async def compact(self) -> int:
        """Hand the pages deleted documents left free back to the file system (the
        embedded store; SQLite's incremental vacuum once `COMPACT_MB` are free). Bytes
        freed."""
        with pymongo.timeout(self.config.timeout * 4):
            result = await self.db.command({"compact": MESSAGES, "freeSpaceTargetMB": COMPACT_MB})
            freed = int(result.get("bytesFreed", 0))
            if freed:  # the file shrinks at a checkpoint; the log then back to its limit
                await self.db.command({"wal_checkpoint": 1})
        return freed

    async def check(self, within: float) -> str | None:
        """None if the store answers a ping within `within` seconds, else why not (the
        cause first: refused, timeout, ...)."""
        try:
            # The driver's deadline leaves it time to say why (refused, ...); the outer
            # one holds whatever the driver does past its own (server selection overruns).
            async with asyncio.timeout(within):
                with pymongo.timeout(within * 0.7):
                    await self.client.admin.command("ping")
        except (TimeoutError, PyMongoError) as error:
            # The driver's monitor knows why a server is unreachable (refused, ...) even
            # when the deadline ran out first.
            return cause(self._server_error() or error, within, "answer")
        return None

    def _server_error(self) -> Exception | None:
        servers = self.client.topology_description.server_descriptions().values()
        return next((s.error for s in servers if s.error is not None), None)

    async def publish_stats(self, snapshot: Document, within: float) -> None:
        """Replace this receiver's live-statistics snapshot (one small document each)."""
        with pymongo.timeout(within):
            await self.db[STATS].replace_one({"_id": snapshot["_id"]}, snapshot, upsert=True)

    async def withdraw_stats(self, receiver: str, within: float) -> None:
        with pymongo.timeout(within):
            await self.db[STATS].delete_one({"_id": receiver})

    async def live_stats(self, max_age: float) -> list[Document]:
        """Every receiver's snapshot younger than `max_age` seconds (a dead receiver's
        goes quiet at once, and is deleted after an hour)."""
        now = time.time()
        with pymongo.timeout(self.config.timeout):
            await self._run(queries.stale_stats(now - STATS_FORGET))
            return await self._find(queries.fresh_stats(now - max_age, 1000))

    async def index_info(self) -> MutableMapping[str, Any]:
        with pymongo.timeout(self.config.timeout):
            return await self.messages.index_information()
