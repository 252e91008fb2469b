"""The render lanes' queue: each client's share of the waiting places, and freed workers
handed to the waiting clients in turn (in process, no worker started)."""

from __future__ import annotations

import asyncio

import pytest

from api.fairqueue import Busy, FairQueue, OverShare


async def test_a_freed_item_goes_to_the_waiting_clients_in_turn() -> None:
    queue: FairQueue[str] = FairQueue(total=100, share=10)
    served: list[str] = []

    async def job(client: str) -> None:
        item = await queue.wait(client, queue.reserve(client))
        served.append(client)
        queue.put(item)

    # The greedy client queues eight jobs before the everyday one asks once.
    jobs = [asyncio.ensure_future(job("greedy")) for _ in range(8)]
    jobs.append(asyncio.ensure_future(job("everyday")))
    await asyncio.sleep(0)
    assert queue.waiting == 9
    queue.put("worker")  # one worker comes up: the clients take turns on it
    await asyncio.gather(*jobs)
    assert served[:2] == ["greedy", "everyday"]  # not behind the other seven
    assert queue.waiting == 0 and queue.idle == 1


async def test_past_its_share_a_client_is_refused_and_others_still_queue() -> None:
    queue: FairQueue[str] = FairQueue(total=5, share=2)
    places = [queue.reserve("a"), queue.reserve("a")]
    with pytest.raises(OverShare):
        queue.reserve("a")
    places += [queue.reserve("b"), queue.reserve("b"), queue.reserve("c")]
    with pytest.raises(Busy):  # the lane's queue is full, whoever asks
        queue.reserve("d")
    queue.put("worker")  # with an idle item there is always a place
    assert places[0].result() == "worker" and queue.waiting_for("a") == 1


async def test_a_cancelled_wait_gives_its_place_back() -> None:
    queue: FairQueue[str] = FairQueue(total=2, share=1)
    waiting = asyncio.ensure_future(queue.wait("a", queue.reserve("a")))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert queue.waiting == 0 and queue.waiting_for("a") == 0
    queue.put("worker")  # nobody waits: it is idle, not handed to the cancelled job
    assert queue.idle == 1
    assert queue.reserve("a").result() == "worker"
