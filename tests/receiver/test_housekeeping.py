"""The periodic jobs: each on its own clock, and one job's failure stops nothing."""

from __future__ import annotations

import asyncio

from receiver.runtime.jobs import Job, Jobs


async def test_a_slow_job_never_delays_another_and_a_failing_one_keeps_running() -> None:
    rounds = {"probe": 0, "failing": 0}
    release = asyncio.Event()

    async def probe() -> None:
        rounds["probe"] += 1

    async def slow() -> None:
        await release.wait()  # a sweep held up by a slow store

    async def failing() -> None:
        rounds["failing"] += 1
        raise RuntimeError("store gone")

    stop = asyncio.Event()
    jobs = Jobs([Job("probe", 0.01, probe), Job("slow", 0.01, slow), Job("failing", 0.01, failing)])
    jobs.start(stop)
    await asyncio.sleep(0.3)
    assert rounds["probe"] >= 5 and rounds["failing"] >= 5
    stop.set()
    release.set()
    await jobs.close()


async def test_a_job_waits_while_it_is_not_due() -> None:
    ran = []
    due = False

    async def sweep() -> None:
        ran.append(1)

    stop = asyncio.Event()
    jobs = Jobs([Job("sweep", 0.01, sweep, lambda: due)])
    jobs.start(stop)
    await asyncio.sleep(0.1)
    assert ran == []
    due = True
    await asyncio.sleep(0.1)
    assert ran
    await jobs.close()


async def test_a_job_that_was_not_due_runs_as_soon_as_it_is_not_an_interval_later() -> None:
    ran = []
    due = False

    async def stats() -> None:
        ran.append(1)

    stop = asyncio.Event()
    jobs = Jobs([Job("live-stats", 60.0, stats, lambda: due, recheck=0.01)])
    jobs.start(stop)
    await asyncio.sleep(0.05)
    due = True  # the store just came up
    await asyncio.sleep(0.1)
    assert ran == [1]
    await jobs.close()
