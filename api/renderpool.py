"""Render jobs in worker processes: bounded in memory, time and concurrency.

Each job runs in a worker process (`api.renderworker`, a `processes.FramedChild`) that
limits its own address space; at the deadline the worker is killed, so the work really stops
(a thread cannot be), and a fresh one takes its place. Two lanes: one worker for small
messages, so everyday mail renders at once whatever big messages are doing, and
`render_workers` for the rest. A lane starts its workers at its first job, not with the API:
an API nobody reads from runs no worker, and the first job waits for the start (not counted
against its deadline). A lane lets at most `render_queue` jobs wait; one more is `Busy` (the
API says 503). A job that failed (deadline, memory, a crashed worker) leaves a verdict under
its key, so asking again answers at once instead of starting the same work; the same job
asked for while running is run once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

import processes
from api.charsets import clean_all
from api.limits import ApiLimits
from processes import FramedChild, ProcessGone

log = logging.getLogger("floodgate.api")

SMALL_MESSAGE = 64 * 1024  # bytes: rendered in the small lane
VERDICTS = 4_096  # failed jobs remembered (a few hundred bytes each)
WORKER = ("-m", "api.renderworker")


class Busy(Exception):
    """Every worker of the lane is busy and its queue is full."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """A job's answer (`head`, `body`), or why there is none (`failure`)."""

    head: dict[str, Any]
    body: bytes = b""
    failure: str | None = None
    lasting: bool = True  # a failure that says something about the message (cached)


class Lane:
    """`size` workers, started at the first job, and a queue of at most `queue` waiting jobs."""

    def __init__(
        self, name: str, command: Sequence[str], size: int, queue: int, seconds: float
    ) -> None:
        self.name, self.command, self.size = name, tuple(command), size
        self.queue, self.seconds = queue, seconds
        self.waiting = 0
        self._idle: asyncio.Queue[FramedChild] = asyncio.Queue()
        self._all: set[FramedChild] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.started = False
        self.closed = False

    @property
    def workers(self) -> int:
        """Worker processes started and not retired (busy or idle)."""
        return len(self._all)

    def _start(self) -> None:
        self.started = True
        for _ in range(self.size):
            self._replace()

    def _replace(self) -> None:
        task = asyncio.get_running_loop().create_task(self._spawn(), name=f"render-{self.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _spawn(self) -> None:
        while not self.closed:
            try:
                worker = await FramedChild.start(self.command)
            except (OSError, ProcessGone, ValueError, TimeoutError) as error:
                log.error("event=render_worker_failed_to_start error=%s", type(error).__name__)
                await asyncio.sleep(processes.RESTART_POLICY.delay)
                continue
            if self.closed:
                await _end(worker)
                return
            self._all.add(worker)
            self._idle.put_nowait(worker)
            return

    async def run(self, head: dict[str, Any], body: bytes) -> Outcome:
        if not self.started:
            self._start()  # this job waits for the first worker up: never Busy
        elif self.waiting >= self.queue and self._idle.empty():
            raise Busy(self.name)
        for _ in range(self.size + 1):
            outcome = await self._attempt(head, body)
            if outcome is not None:
                return outcome
        return Outcome({}, failure="the render workers are restarting", lasting=False)

    async def _attempt(self, head: dict[str, Any], body: bytes) -> Outcome | None:
        """One worker's answer; None when that worker had died while idle (it never
        saw the job, so the job is not to blame: another worker takes it)."""
        self.waiting += 1
        try:
            worker = await self._idle.get()
        finally:
            self.waiting -= 1
        if not worker.alive:
            self._all.discard(worker)
            await _end(worker)
            if not self.closed:
                self._replace()
            return None
        healthy = False
        try:
            async with asyncio.timeout(self.seconds):
                answer, data = await worker.ask(head, body)
            healthy = not answer.pop("retire", False)
            failure = answer.pop("failed", None)
            return Outcome(clean_all(answer), data, failure)
        except TimeoutError:
            log.warning("event=render_deadline lane=%s seconds=%g", self.name, self.seconds)
            return Outcome({}, failure=f"rendering took longer than {self.seconds:g}s")
        except (ProcessGone, ConnectionError, ValueError):
            log.warning("event=render_worker_died lane=%s", self.name)
            return Outcome({}, failure="the render worker failed (out of memory?)")
        finally:
            if healthy:
                self._idle.put_nowait(worker)
            else:
                self._all.discard(worker)
                await _end(worker)
                if not self.closed:
                    self._replace()

    async def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        workers, self._all = list(self._all), set()
        for worker in workers:
            worker.kill()
        for worker in workers:
            with contextlib.suppress(Exception):
                await worker.wait()


async def _end(worker: FramedChild) -> None:
    """Kill `worker` and reap it (shielded: a caller that goes away still reaps it)."""
    worker.kill()
    await asyncio.shield(worker.wait())


def _counter(lane: Lane) -> Callable[[], float]:
    return lambda: lane.workers


class RenderPool:
    """The API's render workers: a small lane, a general lane, verdicts, single flight."""

    def __init__(
        self,
        limits: ApiLimits,
        command: Sequence[str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        command = command or (sys.executable, *WORKER)
        command = (*command, str(limits.render_memory))
        self.small = Lane("small", command, 1, limits.render_queue, limits.render_seconds)
        self.general = Lane(
            "general", command, limits.render_workers, limits.render_queue, limits.render_seconds
        )
        self._verdicts: OrderedDict[str, str] = OrderedDict()
        self._running: dict[str, asyncio.Future[Outcome]] = {}
        if registry is not None:
            gauge = Gauge(
                "floodgate_render_workers",
                "Render worker processes up, by lane (none before the lane's first job)",
                ["lane"],
                registry=registry,
            )
            for lane in (self.small, self.general):
                gauge.labels(lane.name).set_function(_counter(lane))

    async def close(self) -> None:
        await self.small.close()
        await self.general.close()

    async def run(self, key: str, head: dict[str, Any], raw: bytes) -> Outcome:
        """The answer to job `head` on message `raw`; `key` names the job (message id and
        what is asked), for its verdict and to join a run of the same job."""
        verdict = self._verdicts.get(key)
        if verdict is not None:
            return Outcome({}, failure=verdict)
        running = self._running.get(key)
        if running is None:
            lane = self.small if len(raw) <= SMALL_MESSAGE else self.general
            running = asyncio.ensure_future(lane.run(head, raw))
            self._running[key] = running
            running.add_done_callback(lambda done: self._finished(key, done))
        # Shielded: a client that goes away does not abandon a job others may wait for.
        return await asyncio.shield(running)

    def _finished(self, key: str, done: asyncio.Future[Outcome]) -> None:
        self._running.pop(key, None)
        if done.cancelled() or done.exception() is not None:
            return
        failure = done.result().failure
        if failure is not None and done.result().lasting:
            self._verdicts[key] = failure
            while len(self._verdicts) > VERDICTS:
                self._verdicts.popitem(last=False)
