"""The deliveries' queries are index searches on the embedded store (SQLite's query plan of
every statement the server traced): claiming due work, an endpoint's recent deliveries,
the pending count, settling and expiring never scan the deliveries' table. (The endpoints
themselves are read whole by design: at most `FLOODGATE_WEBHOOK_MAX_ENDPOINTS` of them.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mailstore import MessageStore, StoreConfig
from mailstore.embedded import EmbeddedStore
from mailstore.webhooks import DELIVERIES, WebhookStore, delivery_id
from tests.support.plans import Plans


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


async def test_the_dispatchers_queries_on_deliveries_are_index_searches(
    embedded: EmbeddedStore, hooks: WebhookStore
) -> None:
    plans = Plans(embedded, (DELIVERIES,))
    since = plans.mark()
    claimed = await hooks.claim(20.0, 5.0, 8, lambda _: True, most=4)
    assert len(claimed) == 4 and all(float(d["due"]) <= 20 for d in claimed)  # type: ignore[arg-type]
    await hooks.settle(str(claimed[0]["_id"]), {"state": "delivered"}, done=True)
    await hooks.settle(str(claimed[1]["_id"]), {"due": 90.0}, done=False)
    assert len(await hooks.recent("wh_0000000000000001", 5)) == 5
    assert await hooks.pending() == 19
    assert await hooks.expire(6000.0) == 40
    assert plans.statements(since), "the server traced no statement on the deliveries"
    assert plans.scans(since) == {}
