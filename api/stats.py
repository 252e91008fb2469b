"""`GET /v1/stats`: who is at the door right now, across every live receiver.

Each receiver publishes a small snapshot of its bounded live statistics every few seconds
(`receiver.telemetry.stats`); this merges the fresh ones (top-K summed per measure and window) and
adds the blocklist state of each client named, so an operator can ban from one place.

The statistics live in the store, and an operator looks hardest when the store is away.
So the API keeps the last statistics it read (`StatsCache`, refreshed every few seconds
even when nobody asks) and, while the store does not answer, serves those within a short
deadline with `store.up` false and since when: a console or `floodgate top` opened during
the outage shows the last snapshot and says how old it is, instead of nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from typing import Any

import pymongo
from fastapi import APIRouter, Request
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from api import models
from api.docs import Tag
from blocklist import BlocklistRepository
from mailstore import MessageStore
from receiver.telemetry.stats import MEASURES, TOP, TOP_PER_REASON, merge_top

MAX_AGE = 30.0  # a snapshot older than this is a receiver that stopped publishing
READ_WITHIN = 2.0  # a poll is answered within this (plus the cause's 0.5 s), store or not
REFRESH = 5.0  # the kept snapshot is this fresh while the store answers (receivers: 5 s)

router = APIRouter()


class StatsCache:
    """The last statistics read from the store, and since when the store is away."""

    def __init__(self) -> None:
        self.last: dict[str, Any] | None = None
        self.read_at: float | None = None
        self.away_since: float | None = None
        self.reason = ""

    async def read(self, store: MessageStore, blocklist: BlocklistRepository) -> dict[str, Any]:
        """Live statistics, or the last ones read (an empty set if none) while the store
        does not answer; `store` says which."""
        try:
            with pymongo.timeout(READ_WITHIN):  # caps the store's own, longer deadline
                stats = await _live(store, blocklist)
        except PyMongoError:
            if self.away_since is None:
                self.away_since = time.time()
            self.reason = await store.check(within=0.5) or "not answering"
            return self._kept()
        self.last, self.read_at = stats, time.time()
        self.away_since, self.reason = None, ""
        return {**stats, "store": self._state()}

    def _state(self) -> dict[str, Any]:
        return {
            "up": self.away_since is None,
            "read_at": self.read_at,
            "away_since": self.away_since,
            "reason": self.reason,
        }

    def _kept(self) -> dict[str, Any]:
        if self.last is None:
            kept: dict[str, Any] = {"receivers": [], "overall": _overall([]), "clients": {}}
        else:
            kept = copy.deepcopy(self.last)
            now = time.time()
            for receiver in kept["receivers"]:  # ages go on growing: the page says how old
                receiver["age_s"] = round(max(0.0, now - receiver["at"]), 1)
        return {**kept, "store": self._state()}

    async def refresh(self, store: MessageStore, blocklist: BlocklistRepository) -> None:
        """Keep a recent snapshot, so a page opened during an outage has one to show."""
        while True:
            with contextlib.suppress(Exception):  # the next round tries again
                await self.read(store, blocklist)
            await asyncio.sleep(REFRESH)


@router.get(
    "/v1/stats",
    response_model=models.Stats,
    tags=[Tag.STATS],
    summary="Live statistics: who is at the door now",
)
async def stats(request: Request) -> dict[str, Any]:
    """Every live receiver's statistics (published every 5 s; silent for 30 s: left out),
    merged: top clients by refusals, connections, messages and bytes over 1 and 5 minutes,
    refusals by reason, open connections, and each named client's blocklist state. While
    the store does not answer: the last statistics this API read, with `store.up` false,
    `store.away_since` and the reason, within about 2.5 s."""
    cache: StatsCache = request.app.state.stats
    return await cache.read(request.app.state.store, request.app.state.blocklist)


async def _live(store: MessageStore, blocklist: BlocklistRepository) -> dict[str, Any]:
    docs = await store.live_stats(MAX_AGE)
    now = time.time()
    receivers = []
    for doc in sorted(docs, key=lambda d: str(d["_id"])):
        try:  # a receiver of another version may publish another shape: left out, not a 500
            receivers.append(models.ReceiverStats.model_validate(_receiver(doc, now)).model_dump())
        except (ValidationError, KeyError, TypeError, ValueError):
            continue
    overall = _overall(receivers)
    named = {key for key, _ in overall["top_open"]}
    for window in overall["windows"].values():
        for measure in MEASURES:
            named.update(key for key, _ in window[measure])
    clients = {key: await _state(blocklist, key) for key in sorted(named)}
    return {"receivers": receivers, "overall": overall, "clients": clients}


def _receiver(doc: dict[str, Any], now: float) -> dict[str, Any]:
    return {
        "receiver": str(doc.get("receiver", doc["_id"])),
        "at": float(doc["at"]),
        "age_s": round(max(0.0, now - float(doc["at"])), 1),
        "stress": bool(doc.get("stress")),
        "store_up": doc.get("store_up"),
        "store_reason": str(doc.get("store_reason", "")),
        "open_connections": int(doc.get("open_connections", 0)),
        "spool": doc.get("spool"),
        "top_open": doc.get("top_open", []),
        "totals": doc.get("totals", {}),
        "windows": doc.get("windows", {}),
    }


def _overall(receivers: list[dict[str, Any]]) -> dict[str, Any]:
    windows: dict[str, Any] = {}
    for name in ("1m", "5m"):
        parts = [r["windows"].get(name, {}) for r in receivers]
        reasons: dict[str, int] = {}
        by_reason: dict[str, list[Any]] = {}
        for part in parts:
            for reason, count in part.get("reasons", {}).items():
                reasons[reason] = reasons.get(reason, 0) + int(count)
            for reason, tops in part.get("by_reason", {}).items():
                by_reason.setdefault(reason, []).append(tops)
        windows[name] = {
            **{m: merge_top((p.get(m, []) for p in parts), TOP) for m in MEASURES},
            "reasons": reasons,
            "by_reason": {r: merge_top(tops, TOP_PER_REASON) for r, tops in by_reason.items()},
            "error_bound": {
                m: sum(int(p.get("error_bound", {}).get(m, 0)) for p in parts) for m in MEASURES
            },
        }
    return {
        "receivers": len(receivers),
        "open_connections": sum(r["open_connections"] for r in receivers),
        "top_open": merge_top((r["top_open"] for r in receivers), TOP),
        "windows": windows,
    }


async def _state(blocklist: BlocklistRepository, key: str) -> dict[str, Any]:
    address = key.split("/", 1)[0]  # an IPv6 client is a /64: its first address
    try:
        entry = await blocklist.check(address)
    except ValueError:
        return {"blocked": False}
    if entry is None:
        return {"blocked": False}
    expires = None if entry.expires_at is None else entry.expires_at.isoformat()
    return {"blocked": True, "source": entry.source, "expires_at": expires}
