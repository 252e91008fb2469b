"""The receiver's periodic jobs: each its own task, with its own interval and error handling.

A worker's store probe, retention sweep, certificate reload check and summary log, and a
host's live-statistics snapshot and summary log, each run on their own clock: a sweep held
up by a slow store never delays a probe, and one job's failure never stops another (or
itself: the next round tries again, and the failure is logged once per round, never per
message). Everything a worker's jobs write is keyed by its id (probe document, sweep
lease), so the workers of one host never share or delete one another's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from receiver.delivery.store_health import StoreHealth
from receiver.runtime.intervals import Intervals
from receiver.smtp.tls import Certificates
from receiver.telemetry.events import emit
from receiver.telemetry.summary import SummaryLog

SUMMARY_TICK = 1.0  # the summary log looks this often (it logs once per its own interval)


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


class Jobs:
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


class UpkeepStore(Protocol):
    """What the periodic jobs ask of the store."""

    async def probe(self, name: str, within: float) -> str | None: ...

    async def ensure_indexes(self) -> None: ...

    async def sweep_expired(self, holder: str, lease: float) -> int | None: ...


class WorkerJobs:
    """The periodic jobs of one worker, named by its id."""

    def __init__(
        self,
        worker: str,
        store: UpkeepStore,
        health: StoreHealth,
        summary: SummaryLog,
        intervals: Intervals,
        *,
        store_timeout: float,
        on_expired: Callable[[int], None] = lambda _n: None,
        certificates: Certificates | None = None,
    ) -> None:
        self.worker = worker
        self.store = store
        self.health = health
        self.summary = summary
        self.intervals = intervals
        self.store_timeout = store_timeout
        self.on_expired = on_expired
        self.certificates = certificates
        self._indexes_ensured = False

    @property
    def holder(self) -> str:
        """The name its probe document and sweep lease are held under."""
        return f"receiver {self.worker}"

    def jobs(self) -> list[Job]:
        def up() -> bool:
            return self.health.up is True

        every = self.intervals
        jobs = [
            # The store is judged by writes before mail hits it; indexes once it answers.
            Job("store-probe", every.store_probe_interval, self.check_store),
            # Retention on every store, one receiver at a time (a lease in the store).
            Job(
                "retention-sweep",
                every.sweep_interval,
                self.sweep,
                up,
                first_delay=every.store_probe_interval,
            ),
            Job("log-summary", SUMMARY_TICK, self._flush_summary),
        ]
        if self.certificates is not None:
            jobs.append(Job("tls-reload", every.tls_reload_interval, self._reload_tls))
        return jobs

    async def check_store(self) -> None:
        """Probe the store with one durable write, under the insert deadline; once it
        answers, make sure its indexes (inbox listing, TTL retention) exist."""
        reason = await self.store.probe(self.holder, self.store_timeout)
        self.health.record(reason is None, reason or "")
        if reason is None and not self._indexes_ensured:
            try:
                await self.store.ensure_indexes()
            except Exception as error:  # retried at the next probe
                emit("indexes_not_ensured", error=type(error).__name__)
            else:
                self._indexes_ensured = True

    async def sweep(self) -> None:
        try:
            deleted = await self.store.sweep_expired(self.holder, self.intervals.sweep_lease)
        except Exception as error:  # the next sweep tries again
            emit("retention_sweep_failed", error=type(error).__name__)
            return
        if deleted:
            self.on_expired(deleted)
            emit("retention_swept", deleted=deleted)

    async def _flush_summary(self) -> None:
        self.summary.flush()  # logs only once its own interval has passed

    async def _reload_tls(self) -> None:
        if self.certificates is not None and self.certificates.reload_if_changed():
            emit("tls_reloaded", cert=str(self.certificates.settings.cert))
