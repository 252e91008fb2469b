"""Webhook endpoints and their deliveries in the store: durable, so a delivery survives a
dispatcher's restart and is retried under the same id.

Two collections. `webhooks`: one document per endpoint (its URL, what it matches, its
secret, and its health: failures in a row, the last error, disabled or not).
`webhook_deliveries`: one document per message and endpoint, its `_id` the `webhook-id`
every attempt sends (a second enqueue of the same pair is the same document: at least
once, never twice by our doing). A pending delivery has a `due` time (POSIX seconds, a
number: the embedded store compares numbers from an index, dates it does not, see
mailstore.queries); a delivered or failed one has none, so the sparse `due` index holds
only the work to do. `ekey` (endpoint, creation time, message) orders an endpoint's
deliveries for its listing by one index range, and `expiry` lets the dispatcher drop them
with the messages they announce.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any

import pymongo
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

Document = dict[str, Any]

ENDPOINTS = "webhooks"
DELIVERIES = "webhook_deliveries"
STATE = "webhook_state"  # where the dispatcher keeps its place in the change stream
FOLLOWER = "follower"
ASCENDING, DESCENDING = 1, -1
PENDING_COUNTED = 10_000  # the pending gauge counts this many at most
INDEXES: tuple[tuple[str, str, str, bool], ...] = (
    # (collection, name, field, sparse)
    (DELIVERIES, "due", "due", True),
    (DELIVERIES, "ekey", "ekey", False),
    (DELIVERIES, "expiry", "expiry", False),
)


class State(StrEnum):
    """Where a delivery stands (closed: the API and the metrics use these words)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def delivery_id(message_id: str, endpoint_id: str) -> str:
    """The `webhook-id` of one message to one endpoint, the same on every attempt."""
    return f"msg_{message_id}_{endpoint_id}"


def endpoint_range(endpoint_id: str) -> Document:
    # ";" follows ":": every key of this endpoint, and no other's.
    return {"$gt": f"{endpoint_id}:", "$lt": f"{endpoint_id};"}


class WebhookStore:
    """Endpoints and deliveries over one database (`timeout` seconds per operation)."""

    def __init__(self, db: AsyncDatabase[Document], timeout: float = 5.0) -> None:
        self.endpoints = db[ENDPOINTS]
        self.deliveries = db[DELIVERIES]
        self.state = db[STATE]
        self.timeout = timeout

    async def ensure_indexes(self) -> None:
        with pymongo.timeout(self.timeout):
            for collection, name, field, sparse in INDEXES:
                options: dict[str, Any] = {"name": name}
                if sparse:
                    options["sparse"] = True
                await self.deliveries.database[collection].create_index(
                    [(field, ASCENDING)], **options
                )

    # --- endpoints ---------------------------------------------------------------------

    async def add_endpoint(self, endpoint: Document, most: int) -> bool:
        """Store a new endpoint; False when `most` are registered already."""
        with pymongo.timeout(self.timeout):
            if await self.endpoints.count_documents({}) >= most:
                return False
            await self.endpoints.insert_one(endpoint)
        return True

    async def endpoints_page(self, limit: int) -> list[Document]:
        with pymongo.timeout(self.timeout):
            return await self.endpoints.find({}).sort("_id", ASCENDING).to_list(limit)

    async def endpoint(self, endpoint_id: str) -> Document | None:
        with pymongo.timeout(self.timeout):
            return await self.endpoints.find_one({"_id": endpoint_id})

    async def remove_endpoint(self, endpoint_id: str) -> bool:
        """The endpoint and its deliveries (pending ones are never sent)."""
        with pymongo.timeout(self.timeout):
            removed = await self.endpoints.delete_one({"_id": endpoint_id})
            await self.deliveries.delete_many({"ekey": endpoint_range(endpoint_id)})
        return removed.deleted_count > 0

    async def enable(self, endpoint_id: str) -> Document | None:
        """Enabled again, its failure count cleared; None if unknown."""
        with pymongo.timeout(self.timeout):
            return await self.endpoints.find_one_and_update(
                {"_id": endpoint_id},
                {"$set": {"disabled": False, "disabled_reason": None, "failures": 0}},
                return_document=pymongo.ReturnDocument.AFTER,
            )

    async def succeeded(self, endpoint_id: str, at: float) -> None:
        with pymongo.timeout(self.timeout):
            await self.endpoints.update_one(
                {"_id": endpoint_id},
                {"$set": {"failures": 0, "last_success_at": at}},
            )

    async def failed(self, endpoint_id: str, error: str, at: float) -> int:
        """Count one failed attempt; the endpoint's failures in a row now (0 if gone)."""
        with pymongo.timeout(self.timeout):
            found = await self.endpoints.find_one_and_update(
                {"_id": endpoint_id},
                {"$inc": {"failures": 1}, "$set": {"last_error": error, "last_failure_at": at}},
                return_document=pymongo.ReturnDocument.AFTER,
            )
        return int(found.get("failures", 0)) if found else 0

    async def disable(self, endpoint_id: str, reason: str) -> bool:
        """Disabled now; False if it already was (or is gone), so one disabling is told once."""
        with pymongo.timeout(self.timeout):
            changed = await self.endpoints.update_one(
                {"_id": endpoint_id, "disabled": False},
                {"$set": {"disabled": True, "disabled_reason": reason}},
            )
        return changed.modified_count > 0

    # --- deliveries --------------------------------------------------------------------

    async def enqueue(self, deliveries: Sequence[Document]) -> set[str]:
        """Store new pending deliveries; one already stored (the same message to the same
        endpoint, seen again after a restart) is left as it is. The ids of the new ones."""
        added: set[str] = set()
        with pymongo.timeout(self.timeout):
            for delivery in deliveries:
                try:
                    await self.deliveries.insert_one(delivery)
                except DuplicateKeyError:
                    continue
                added.add(str(delivery["_id"]))
        return added

    async def claim(
        self,
        now: float,
        lease: float,
        candidates: int,
        wanted: Callable[[Document], bool],
        most: int,
    ) -> list[Document]:
        """Up to `most` deliveries due by `now`, among the `candidates` due first, that
        `wanted` accepts; each held for `lease` seconds (its `due` moved on, only if no
        other dispatcher moved it first)."""
        claimed: list[Document] = []
        with pymongo.timeout(self.timeout):
            cursor = self.deliveries.find({"due": {"$lte": now}}).sort("due", ASCENDING)
            for delivery in await cursor.limit(candidates).to_list(candidates):
                if len(claimed) >= most:
                    break
                if not wanted(delivery):
                    continue
                held = await self.deliveries.update_one(
                    {"_id": delivery["_id"], "due": delivery["due"]},
                    {"$set": {"due": now + lease}},
                )
                if held.modified_count:
                    claimed.append(delivery)
        return claimed

    async def settle(self, delivery_id: str, changes: Document, done: bool) -> None:
        """Record an attempt: `changes` set; `done` removes `due` (delivered or failed)."""
        update: Document = {"$set": {**changes, "updated_at": time.time()}, "$inc": {"attempts": 1}}
        if done:
            update["$unset"] = {"due": ""}
        with pymongo.timeout(self.timeout):
            await self.deliveries.update_one({"_id": delivery_id}, update)

    async def recent(self, endpoint_id: str, limit: int) -> list[Document]:
        """An endpoint's deliveries, newest first, without their payloads."""
        with pymongo.timeout(self.timeout):
            cursor = self.deliveries.find({"ekey": endpoint_range(endpoint_id)}, {"payload": 0})
            return await cursor.sort("ekey", DESCENDING).limit(limit).to_list(limit)

    async def pending(self, most: int = PENDING_COUNTED) -> int:
        """Deliveries waiting, counted up to `most` (a count_documents would read every
        document on the embedded store; ids from the `due` index do not)."""
        with pymongo.timeout(self.timeout):
            cursor = self.deliveries.find({"due": {"$gte": 0}}, {"_id": 1}).limit(most)
            return len(await cursor.to_list(most))

    async def expire(self, now: float) -> int:
        """Deliveries of messages past retention, gone."""
        with pymongo.timeout(self.timeout):
            result = await self.deliveries.delete_many({"expiry": {"$lt": now}})
        return result.deleted_count

    # --- the dispatcher's place in the change stream -----------------------------------

    async def resume_token(self) -> Document | None:
        with pymongo.timeout(self.timeout):
            found = await self.state.find_one({"_id": FOLLOWER})
        token = found.get("token") if found else None
        return token if isinstance(token, dict) else None

    async def save_resume_token(self, token: Mapping[str, Any] | None) -> None:
        with pymongo.timeout(self.timeout):
            await self.state.update_one(
                {"_id": FOLLOWER},
                {"$set": {"token": dict(token) if token else None, "at": time.time()}},
                upsert=True,
            )
