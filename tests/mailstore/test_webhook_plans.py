"""The deliveries' queries are index searches on the embedded store (SQLite's query plan of
every statement the server traced): claiming due work, an endpoint's recent deliveries,
the pending count, settling and expiring never scan the deliveries' table. (The endpoints
themselves are read whole by design: at most `FLOODGATE_WEBHOOK_MAX_ENDPOINTS` of them.)"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mailstore import MessageStore, StoreConfig
from mailstore.embedded import EmbeddedStore
from mailstore.webhooks import DELIVERIES, WebhookStore, delivery_id

SCAN = re.compile(rf"^SCAN {DELIVERIES}\b")


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedStore]:
    server = EmbeddedStore(tmp_path / "store", trace_sql=tmp_path / "trace.sql")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def hooks(embedded: EmbeddedStore) -> AsyncIterator[WebhookStore]:
    store = await MessageStore.open(StoreConfig(uri=embedded.uri), ensure_indexes=False)
    hooks = WebhookStore(store.db)
    await hooks.ensure_indexes()
    for n in range(40):  # enough rows that SQLite's planner has a choice to make
        endpoint = f"wh_{n % 4:016x}"
        await hooks.enqueue([delivery(endpoint, f"m{n:04d}", due=float(n) if n % 2 else None)])
    yield hooks
    await store.close()


def delivery(endpoint: str, message: str, due: float | None) -> dict[str, object]:
    document: dict[str, object] = {
        "_id": delivery_id(message, endpoint),
        "endpoint": endpoint,
        "message_id": message,
        "ekey": f"{endpoint}:{1000.0:017.6f}:{message}",
        "expiry": 5000.0,
        "payload": b"{}",
    }
    if due is not None:
        document["due"] = due
    return document


def scans(embedded: EmbeddedStore, since: int) -> dict[str, list[str]]:
    assert embedded.trace_sql is not None
    with embedded.trace_sql.open(encoding="utf-8") as lines:
        lines.seek(since)
        statements = [
            line.strip()
            for line in lines
            if line.split(maxsplit=1)[:1] in (["SELECT"], ["DELETE"], ["UPDATE"])
            and DELIVERIES in line
        ]
    assert statements, "the server traced no statement on the deliveries"
    found = {}
    with sqlite3.connect(f"file:{embedded.database_path}?mode=ro", uri=True) as db:
        for statement in statements:
            plan = [str(row[3]) for row in db.execute("EXPLAIN QUERY PLAN " + statement)]
            if any(SCAN.match(step) for step in plan):
                found[statement[:300]] = plan
    return found


async def test_the_dispatchers_queries_on_deliveries_are_index_searches(
    embedded: EmbeddedStore, hooks: WebhookStore
) -> None:
    assert embedded.trace_sql is not None
    since = embedded.trace_sql.stat().st_size
    claimed = await hooks.claim(20.0, 5.0, 8, lambda _: True, most=4)
    assert len(claimed) == 4 and all(float(d["due"]) <= 20 for d in claimed)  # type: ignore[arg-type]
    await hooks.settle(str(claimed[0]["_id"]), {"state": "delivered"}, done=True)
    await hooks.settle(str(claimed[1]["_id"]), {"due": 90.0}, done=False)
    assert len(await hooks.recent("wh_0000000000000001", 5)) == 5
    assert await hooks.pending() == 19
    assert await hooks.expire(6000.0) == 40
    assert scans(embedded, since) == {}
