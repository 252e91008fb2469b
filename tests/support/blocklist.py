"""Blocklist documents written straight into the collection, as an operator's script or
another tool would (bypassing the API on purpose)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


def entry_document(cidr: str, ttl: float | None = None, reason: str = "test") -> dict[str, Any]:
    """A `blocklist` document for a normalized CIDR, expiring after `ttl` seconds if given."""
    now = datetime.now(UTC)
    return {
        "_id": cidr,
        "reason": reason,
        "source": "manual",
        "created_at": now,
        "created_by": "test",
        "updated_at": now,
        "expires_at": None if ttl is None else now + timedelta(seconds=ttl),
    }
