"""Group commit when the store fails: every member of a failed batch learns why, and the
batch is reported once, with its size and cause (through the injected log helper)."""

from __future__ import annotations

import asyncio

from mailstore import MessageStore, StoreConfig
from mailstore.errors import StoreError
from tests.mailstore.test_store import message
from tests.support.faultproxy import FaultProxy


async def test_a_failed_batch_is_reported_with_its_size_and_cause(
    store_fault: FaultProxy, db_name: str
) -> None:
    reported: list[tuple[str, dict[str, object]]] = []

    def report(event: str, **fields: object) -> None:
        reported.append((event, fields))

    config = StoreConfig(uri=store_fault.uri, database=db_name, timeout=1.0)
    store = await MessageStore.open(config, ensure_indexes=False, report=report)
    try:
        await store.insert(message())  # the store answers: nothing reported
        assert reported == []
        store_fault.set_mode("stall")  # a hung primary: nothing is confirmed
        outcomes = await asyncio.gather(
            *(store.insert(message()) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(o, StoreError) for o in outcomes), outcomes
        assert all(str(o) == "timeout: no durable write within 1s" for o in outcomes), outcomes
        for _ in range(40):  # the batch itself gives up at its own deadline
            if reported:
                break
            await asyncio.sleep(0.1)
        assert [event for event, _ in reported] == ["store_insert_failed"]
        fields = reported[0][1]
        assert fields["size"] == 3 and fields["failed"] == 3
        assert str(fields["error"]).startswith("timeout: "), fields
    finally:
        store_fault.set_mode("pass")
        await store.close()
