"""The message store: durable inserts, inbox queries and retention, over one MongoDB database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import bson
import pymongo
from bson.errors import InvalidDocument
from bson.raw_bson import RawBSONDocument
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from mailstore import retention
from mailstore.batcher import InsertBatcher, Report
from mailstore.connection import Document, connect, database
from mailstore.documents import to_document
from mailstore.errors import StoreError, StoreRejected, brief, cause
from mailstore.ids import id_floor
from mailstore.message import MessageDocument, MessageKey, utcnow

MESSAGES = "messages"
K = MessageKey
LIST_FIELDS = {key: 1 for key in (K.ID, K.MAIL_FROM, K.RCPT, K.HEADERS, K.RECEIVED_AT, K.SIZE)}
NEWEST_FIRST = [(K.RECEIVED_AT, DESCENDING), (K.ID, DESCENDING)]
HEALTH = "health"  # one probe document per receiver
STATS = "receiver_stats"  # one live-statistics snapshot per receiver (receiver.telemetry.stats)
STATS_FORGET = 3600.0  # a snapshot this old is deleted when the stats are read
TRIM_BATCH = 5_000
MAX_DOCUMENT = 16 * 1024 * 1024  # MongoDB's maxBsonObjectSize
# Listings page by id (ids sort by time, like received_at) on this index. No index may
# name _id beside another field: nx-27017 then fails every insert ("JSON path error").
INBOX_INDEX = "inbox"
RETENTION_INDEX = "retention"
# One document per fingerprint (a sender's retry is the same message), on any receiver,
# after any restart. Sparse: documents from before fingerprints are not indexed.
FINGERPRINT_INDEX = "fingerprint"


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
        self._batcher = InsertBatcher(
            self.messages,
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
        """Inbox listing (recipient, newest first) and TTL retention on `expires_at`."""
        with pymongo.timeout(self.config.timeout):
            await self.messages.create_index(
                [(K.RCPT, ASCENDING), (K.RECEIVED_AT, DESCENDING)], name=INBOX_INDEX
            )
            await self.messages.create_index(
                [(K.EXPIRES_AT, ASCENDING)], name=RETENTION_INDEX, expireAfterSeconds=0
            )
            await self.messages.create_index(
                [(K.FP, ASCENDING)], name=FINGERPRINT_INDEX, unique=True, sparse=True
            )

    @property
    def pending(self) -> int:
        return self._batcher.pending

    async def insert(self, message: MessageDocument) -> str:
        """Return the id it is stored under once the message is durable; raise
        `StoreError` otherwise.

        The id is the message's own, or, when a document with the same fingerprint is
        already stored (the sender's retry of a message whose first write landed after
        all), that document's: one copy, and the retry hears the first id.
        `StoreRejected` (before anything is queued) when the document cannot be encoded:
        that message alone fails, never the batch it would have joined.
        """
        document = encode(to_document(message, self.config.retention))
        for _ in range(2):
            if await self._batcher.insert(document):
                return message.id
            first = await self._first_copy(message.fp)
            if first is not None:
                return first
            # The first copy went (deleted, expired) between the two: store this one.
        raise StoreError("fingerprint conflict did not resolve")

    async def _first_copy(self, fingerprint: str) -> str | None:
        try:
            with pymongo.timeout(self.config.timeout):
                found = await self.messages.find_one({K.FP: fingerprint}, {K.ID: 1})
        except PyMongoError as error:
            raise StoreError(f"fingerprint lookup failed: {brief(error)}") from None
        return str(found[K.ID]) if found is not None else None

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
        id page through the mailbox, `since` a time bounds it."""
        query: Document = {K.RCPT: address.lower()}
        bounds: Document = {}
        if before is not None:
            bounds["$lt"] = before
        if after is not None:
            bounds["$gt"] = after
        if since is not None:  # ids sort by time: a time bound is an id bound
            bounds["$gte"] = id_floor(since.timestamp())
        if bounds:
            query[K.ID] = bounds
        with pymongo.timeout(self.config.timeout):
            cursor = self.messages.find(query, LIST_FIELDS).sort(NEWEST_FIRST).limit(limit)
            return [MessageDocument.read(doc) for doc in await cursor.to_list(length=limit)]

    async def trim_mailbox(self, address: str, keep: int) -> int:
        """Take `address` off all but its `keep` newest messages (at most `TRIM_BATCH` at a
        time); messages left with no mailbox are deleted. Returns how many it left."""
        mailbox = address.lower()
        with pymongo.timeout(self.config.timeout):
            cursor = (
                self.messages.find({K.RCPT: mailbox}, {K.ID: 1})
                .sort(NEWEST_FIRST)
                .skip(keep)
                .limit(TRIM_BATCH)
            )
            ids = [doc[K.ID] async for doc in cursor]
            if not ids:
                return 0
            await self.messages.update_many({K.ID: {"$in": ids}}, {"$pull": {K.RCPT: mailbox}})
            await self.messages.delete_many({K.ID: {"$in": ids}, K.RCPT: {"$size": 0}})
        return len(ids)

    async def delete_mailbox(self, address: str) -> int:
        """Take `address` off every message it received; a message left with no recipient
        is deleted. Returns how many messages the mailbox held."""
        mailbox = address.lower()
        with pymongo.timeout(self.config.timeout):
            result = await self.messages.update_many(
                {K.RCPT: mailbox}, {"$pull": {K.RCPT: mailbox}}
            )
            await self.messages.delete_many({K.RCPT: {"$size": 0}})
        return result.modified_count

    async def get(self, message_id: str) -> MessageDocument | None:
        with pymongo.timeout(self.config.timeout):
            found = await self.messages.find_one({K.ID: message_id})
        return MessageDocument.read(found) if found is not None else None

    async def delete(self, message_id: str) -> bool:
        with pymongo.timeout(self.config.timeout):
            result = await self.messages.delete_one({K.ID: message_id})
        return result.deleted_count > 0

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
        not), within the store timeout; return how many."""
        with pymongo.timeout(self.config.timeout):
            if not await retention.acquire_lease(self.db, holder, lease):
                return None
        return await retention.sweep_expired(self.db, MESSAGES, self.config.timeout)

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
            await self.db[STATS].delete_many({"at": {"$lt": now - STATS_FORGET}})
            docs = [doc async for doc in self.db[STATS].find({}).limit(1000)]
        fresh = now - max_age
        return [d for d in docs if isinstance(d.get("at"), int | float) and d["at"] >= fresh]

    async def index_info(self) -> MutableMapping[str, Any]:
        with pymongo.timeout(self.config.timeout):
            return await self.messages.index_information()
