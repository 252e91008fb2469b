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


async def test_a_client_at_its_hold_waits_and_the_idle_worker_stays_for_the_others() -> None:
    queue: FairQueue[str] = FairQueue(total=10, share=4, hold=1)
    queue.put("w1")
    queue.put("w2")
    first = queue.reserve("greedy")
    assert first.result() in ("w1", "w2") and queue.held_by("greedy") == 1
    second = queue.reserve("greedy")  # an idle worker, but greedy holds its one
    assert not second.done() and queue.idle == 1 and queue.waiting_for("greedy") == 1
    assert queue.full_for("greedy") is False  # it may still queue up to its share
    everyday = queue.reserve("everyday")  # served at once by the worker left idle
    assert everyday.done() and queue.idle == 0
    queue.put(first.result(), "greedy")  # greedy's first job ends: its next one starts
    assert second.done() and queue.held_by("greedy") == 1
    queue.put(everyday.result(), "everyday")
    assert queue.idle == 1 and queue.held_by("everyday") == 0


async def test_a_holder_whose_worker_died_takes_the_idle_one_for_its_waiting_job() -> None:
    queue: FairQueue[str] = FairQueue(total=10, share=4, hold=1)
    queue.put("w1")
    queue.put("w2")
    held = queue.reserve("greedy")
    waiting = queue.reserve("greedy")
    assert held.done() and not waiting.done()
    queue.release("greedy")  # its worker died mid-job: not put back
    assert waiting.done() and queue.idle == 0 and queue.held_by("greedy") == 1
