"""Retention that happens on any store: a bounded sweeper, one at a time across receivers.

MongoDB's TTL monitor deletes expired messages by itself about once a minute; the
embedded store only expires them lazily, when something reads the collection, so a
receiver with no readers would fill its disk. Every receiver runs this sweeper; a lease
document lets one of them work at a time (where MongoDB's own TTL monitor already did the
work, the sweep finds nothing and costs one indexed query). Each sweep deletes in batches
and stops after a bounded number, so it never competes with inserts for long.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pymongo
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from mailstore.message import utcnow

LEASES = "leases"
LEASE = "retention"
BATCH = 500  # ids per delete
MAX_PER_SWEEP = 20_000  # the rest waits for the next sweep


async def acquire_lease(db: AsyncDatabase[Any], holder: str, seconds: float) -> bool:
    """Take or renew the sweeper's lease; False while another holder's lease is live."""
    now = utcnow()
    try:
        lease = await db[LEASES].find_one_and_update(
            {"_id": LEASE, "$or": [{"expires_at": {"$lt": now}}, {"holder": holder}]},
            {"$set": {"holder": holder, "expires_at": now + timedelta(seconds=seconds)}},
            upsert=True,
            return_document=pymongo.ReturnDocument.AFTER,
        )
    except DuplicateKeyError:  # the lease exists, live, held by another receiver
        return False
    return lease is not None and lease.get("holder") == holder


async def sweep_expired(db: AsyncDatabase[Any], collection: str, batch_seconds: float) -> int:
    """Delete messages whose `expires_at` has passed, in batches of `BATCH`, each within
    `batch_seconds`; return how many."""
    messages = db[collection]
    now = utcnow()
    deleted = 0
    while deleted < MAX_PER_SWEEP:
        with pymongo.timeout(batch_seconds):
            cursor = messages.find({"expires_at": {"$lt": now}}, {"_id": 1}).limit(BATCH)
            ids = [doc["_id"] async for doc in cursor]
            if not ids:
                break
            result = await messages.delete_many({"_id": {"$in": ids}, "expires_at": {"$lt": now}})
        deleted += result.deleted_count
        if len(ids) < BATCH:
            break
    return deleted
