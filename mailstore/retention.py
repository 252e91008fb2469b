"""Retention that happens on any store: a sweeper, one at a time across receivers.

MongoDB's TTL monitor deletes expired messages by itself about once a minute; the
embedded store only expires them lazily, when something reads the collection, so a
receiver with no readers would fill its disk. Every receiver runs this sweeper; a lease
document lets one of them work at a time (where MongoDB's own TTL monitor already did the
work, the sweep deletes nothing and costs one indexed delete).

The sweep deletes without reading first: on the embedded store any read of the collection
(a find for the ids to delete, a count) makes the store drop the expired documents
itself, and the sweeper would count none of the deletions it caused. One delete under the
store deadline: a sweep that runs out of time leaves the rest to the next one (its partial
count is lost, never inflated).
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


async def sweep_expired(db: AsyncDatabase[Any], collection: str, within: float) -> int:
    """Delete messages whose `expires_at` has passed, within `within` seconds; return how
    many were deleted."""
    with pymongo.timeout(within):
        result = await db[collection].delete_many({"expires_at": {"$lt": utcnow()}})
    return result.deleted_count
