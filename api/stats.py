"""`GET /v1/stats`: who is at the door right now, across every live receiver.

Each receiver publishes a small snapshot of its bounded live statistics every few seconds
(`receiver.telemetry.stats`); this merges the fresh ones (top-K summed per measure and window) and
adds the blocklist state of each client named, so an operator can ban from one place.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError

from api import models
from api.docs import Tag
from blocklist import BlocklistRepository
from mailstore import MessageStore
from receiver.telemetry.stats import MEASURES, TOP, TOP_PER_REASON, merge_top

MAX_AGE = 30.0  # a snapshot older than this is a receiver that stopped publishing

router = APIRouter()


@router.get(
    "/v1/stats",
    response_model=models.Stats,
    tags=[Tag.STATS],
    summary="Live statistics: who is at the door now",
)
async def stats(request: Request) -> dict[str, Any]:
    """Every live receiver's statistics (published every 5 s; silent for 30 s: left out),
    merged: top clients by refusals, connections, messages and bytes over 1 and 5 minutes,
    refusals by reason, open connections, and each named client's blocklist state."""
    store: MessageStore = request.app.state.store
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
    blocklist: BlocklistRepository = request.app.state.blocklist
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
