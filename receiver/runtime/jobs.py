"""The receiver's periodic jobs: each its own task, with its own interval and error handling.

A store probe, a retention sweep, the live-statistics snapshot, a certificate reload check
and the summary log each run on their own clock: a sweep held up by a slow store never
delays a probe, and one job's failure never stops another (or itself: the next round
tries again, and the failure is logged once per round, never per message).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from receiver.telemetry.events import emit


@dataclass(frozen=True)
class Job:
    """One periodic job: `run` every `interval` seconds while `due()` says so."""

    name: str
    interval: float
    run: Callable[[], Awaitable[None]]
    due: Callable[[], bool] = lambda: True
    first_delay: float = 0.0
    recheck: float = 0.25  # seconds until `due()` is asked again after a "not now"


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _every(job: Job, stop: asyncio.Event) -> None:
    await _pause(stop, job.first_delay)
    while not stop.is_set():
        if not job.due():
            # Not now (say, the store is not up yet): look again soon, so the first round
            # runs as soon as it can rather than a whole interval later.
            await _pause(stop, min(job.recheck, job.interval))
            continue
        try:
            await job.run()
        except Exception as error:  # the next round tries again
            emit("job_failed", job=job.name, error=type(error).__name__)
        await _pause(stop, job.interval)


class Housekeeping:
    """Runs a set of jobs until `stop` is set (or `close` is called)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(_every(job, stop), name=job.name) for job in self.jobs]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
