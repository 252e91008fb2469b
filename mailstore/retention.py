"""Retention that happens on any store: the sweeper's lease, one sweeper at a time across
receivers.

MongoDB's TTL monitor deletes expired messages by itself about once a minute; the
embedded store has no TTL index (mailstore.engine), so a receiver with no readers would
fill its disk. Every receiver runs the sweep (`MessageStore.sweep_expired`: one indexed
delete on `expiry`); this lease lets one of them work at a time (where MongoDB's own TTL
monitor already did the work, the sweep deletes nothing). A sweep that runs out of time
leaves the rest to the next one (its partial count is lost, never inflated).
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
