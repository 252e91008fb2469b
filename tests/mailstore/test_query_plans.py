"""Every query the store runs is answered from an index: on MongoDB (`explain()`, when
FLOODGATE_TEST_MONGODB_URI names one) an index scan, never COLLSCAN; on the embedded store
every SQL statement it turns a query into is an index search, never a scan of a
collection's table (SQLite's `EXPLAIN QUERY PLAN` on the statements the server traced).

The shapes come from mailstore.queries, the list the store builds its queries from; the
second embedded test drives the store's own methods, so a query sent around that list is
caught too.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest
from pymongo import MongoClient

from mailstore import MessageDocument, MessageStore, StoreConfig, new_message_id, utcnow
from mailstore.embedded import EmbeddedStore
from mailstore.mailboxes import ENTRIES
from mailstore.queries import MESSAGES, STATS, Op, Query, examples
from tests.support.plans import Plans

TABLES = (MESSAGES, ENTRIES, STATS)
INDEX_STAGES = {"IXSCAN", "IDHACK", "EXPRESS_IXSCAN", "EXPRESS_CLUSTERED_IXSCAN"}


class Traced(Plans):
    """The store under test, and its trace."""

    def __init__(self, server: EmbeddedStore, store: MessageStore) -> None:
        super().__init__(server, TABLES)
        self.store = store


@pytest.fixture
async def traced(embedded: EmbeddedStore) -> AsyncIterator[Traced]:
    store = await MessageStore.open(StoreConfig(uri=embedded.uri, retention=3600))
    for n in range(30):  # enough rows that SQLite's planner has a choice to make
        await store.insert(message(f"box{n % 3}@mx.test", f"other{n}@mx.test"))
    yield Traced(embedded, store)
    await store.close()


def message(*rcpt: str) -> MessageDocument:
    return MessageDocument(
        id=new_message_id(),
        raw=b"Subject: s\r\n\r\nbody\r\n",
        mail_from="a@example.org",
        rcpt=rcpt,
        peer_ip="127.0.0.1",
        helo="client.test",
        received_at=utcnow(),
        fp=new_message_id(),
    )


async def run(store: MessageStore, query: Query) -> None:
    if query.op is Op.FIND:
        await store._find(query)
    else:
        await store._run(query)


async def test_every_query_shape_is_an_index_search_on_the_embedded_store(
    traced: Traced,
) -> None:
    since = traced.mark()
    for query in examples().values():
        await run(traced.store, query)
    assert traced.statements(since), "the server traced no statement"
    assert traced.scans(since) == {}


async def test_the_stores_own_operations_never_scan_a_collection_on_the_embedded_store(
    traced: Traced,
) -> None:
    store = traced.store
    since = traced.mark()
    first = message("flow@mx.test", "flow2@mx.test")
    await store.insert(first)
    assert await store.insert(replace(first, id=new_message_id())) == first.id  # a retry
    for _ in range(5):
        await store.insert(message("flow@mx.test"))
    listed = await store.list_mailbox("flow@mx.test", 3)
    await store.list_mailbox("flow@mx.test", 3, before=listed[-1].id)
    await store.list_mailbox("flow@mx.test", 3, after=listed[-1].id)
    await store.list_mailbox("flow@mx.test", 3, since=utcnow())
    await store.list_mailbox("nobody@mx.test")
    assert await store.get(first.id) is not None
    await store.trim_mailbox("flow@mx.test", 2)
    await store.trim_mailbox("flow2@mx.test", 0)  # named second: through its entries
    await store.delete(first.id)
    await store.delete_mailbox("box1@mx.test")
    await store.sweep_expired("plans", 60)
    await store.publish_stats({"_id": "r1", "at": 1.0}, 5)
    await store.live_stats(60)
    assert traced.scans(since) == {}


async def test_the_check_sees_the_scans_of_the_previous_shapes(traced: Traced) -> None:
    since = traced.mark()
    old_listing = Query("old", MESSAGES, {"rcpt": "box1@mx.test"}, sort=(("received_at", -1),))
    await run(traced.store, old_listing)
    await run(traced.store, replace(old_listing, filter={"_id": {"$lt": "zz"}}))
    assert len(traced.scans(since)) == 2


@pytest.mark.skipif(not os.environ.get("FLOODGATE_TEST_MONGODB_URI"), reason="needs a real MongoDB")
def test_every_query_shape_is_an_index_scan_on_mongodb(db_name: str) -> None:
    uri = os.environ["FLOODGATE_TEST_MONGODB_URI"]
    with MongoClient(uri) as client:
        db = client[db_name]
        try:
            _make_indexes(uri, db_name)
            for name, query in examples().items():
                plan = db.command("explain", _command(query), verbosity="queryPlanner")
                stages = set(_stages(plan["queryPlanner"]["winningPlan"]))
                assert "COLLSCAN" not in stages and stages & INDEX_STAGES, (name, stages)
        finally:
            client.drop_database(db_name)


def _make_indexes(uri: str, db_name: str) -> None:
    import asyncio

    async def make() -> None:
        store = await MessageStore.open(StoreConfig(uri=uri, database=db_name))
        await store.ensure_indexes()
        await store.close()

    asyncio.run(make())


def _command(query: Query) -> dict[str, Any]:
    if query.op is Op.DELETE:
        return {"delete": query.collection, "deletes": [{"q": query.filter, "limit": 0}]}
    if query.op is Op.UPDATE:
        update = {"q": query.filter, "u": query.update, "multi": True}
        return {"update": query.collection, "updates": [update]}
    command: dict[str, Any] = {"find": query.collection, "filter": query.filter}
    if query.sort:
        command["sort"] = dict(query.sort)
    if query.projection:
        command["projection"] = query.projection
    if query.skip:
        command["skip"] = query.skip
    if query.limit:
        command["limit"] = query.limit
    return command


def _stages(plan: Any) -> Iterator[str]:
    if isinstance(plan, dict):
        if "stage" in plan:
            yield str(plan["stage"])
        for value in plan.values():
            yield from _stages(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from _stages(item)
