"""Render jobs in worker processes: bounded in memory, time and concurrency, shared fairly.

Each job runs in a worker process (`api.renderworker`, a `processes.FramedChild`) that
limits its own address space; at the deadline the worker is killed, so the work really stops
(a thread cannot be), and a fresh one takes its place. Two lanes: `SMALL_WORKERS` workers
for small messages, so everyday mail renders at once whatever big messages are doing, and
`render_workers` for the rest. The small lane has a deadline of its own (`SMALL_SECONDS`): a
job still running then is run again in the general lane, and a message that was slow there
(`SLOW`) is remembered and rendered in the general lane from then on. A lane starts its
workers at its first job, not with the API: an API nobody reads from runs no worker, and the
first job waits for the start (not counted against its deadline). A lane lets at most
`render_queue` jobs wait (one more is `Busy`: 503), at most `render_queue_per_client` of
them from one client (one more is `OverShare`: 429); one client holds at most half its
workers (rounded up) at once, and a freed worker serves the waiting clients in turn
(`api.fairqueue`): a reader never waits for another client's renders, only for its own
turn among clients. A successful answer is kept (`api.rendercache`: messages
never change); a job that failed (deadline, memory, a crashed worker) leaves a verdict under
its key, so asking again answers at once instead of starting the same work; the same job
asked for while running is run once. An attachment job also tells how many such parts its
message has, so asking for any index past them (attachments 0-99 of every message, say) is
answered "missing" without a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache
from prometheus_client import CollectorRegistry, Counter, Gauge

import processes
from api.charsets import clean_all
from api.fairqueue import Busy, FairQueue, OverShare
from api.limits import ApiLimits
from api.rendercache import RenderCache, size_of
from processes import FramedChild, ProcessGone

__all__ = ["SMALL_MESSAGE", "Busy", "Outcome", "OverShare", "RenderPool"]

log = logging.getLogger("floodgate.api")

SMALL_MESSAGE = 64 * 1024  # bytes: rendered in the small lane
VERDICTS = 4_096  # failed jobs remembered (a few hundred bytes each)
# Seconds of work past which a small message is rendered in the general lane from then on:
# everyday mail takes milliseconds, and one slow message must not hold the lane that keeps
# everyday mail quick.
SLOW = 0.25
# The small lane's own deadline: a job still running then is stopped and run again in the
# general lane (with the whole `render_seconds`), so an everyday read waits behind one
# crafted message for at most this long, not for the whole render deadline.
SMALL_SECONDS = 0.5
# Two, so that one client (holding at most one) never leaves the small lane without a
# worker for everyone else, even while its own crafted job runs to the deadline.
SMALL_WORKERS = 2
SLOW_MESSAGES = 4_096  # message ids remembered as slow (least recently seen out first)
PART_COUNTS = 16_384  # messages' attachment and inline-image counts remembered
PART_KINDS = ("attachment", "inline")  # by whether the job asks for an inline image
WORKER = ("-m", "api.renderworker")
# The workers run at the API's own scheduling priority: a render's deadline is wall-clock
# time, and a lower priority made ordinary renders miss it on any busy host (a 0.25 s links
# job of a 5,000-link message took over 3 s at nice 15 beside a busy receiver: a 504). What
# keeps one reader from another is each lane's queue share, not the CPU's scheduler.


@dataclass(frozen=True, slots=True)
class Outcome:
    """A job's answer (`head`, `body`), or why there is none (`failure`)."""

    head: dict[str, Any]
    body: bytes = b""
    failure: str | None = None
    lasting: bool = True  # a failure that says something about the message (cached)
    seconds: float = 0.0  # the worker's time on it
    timed_out: bool = False  # stopped at its lane's deadline


class Lane:
    """`size` workers, started at the first job, and a queue of at most `queue` waiting jobs,
    `share` of them from one client."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        size: int,
        queue: int,
        seconds: float,
        share: int | None = None,
        jobs: Counter | None = None,
    ) -> None:
        self.name, self.command, self.size = name, tuple(command), size
        self.jobs = jobs  # floodgate_render_jobs, counted by how each job ended
        self.queue, self.seconds = queue, seconds
        # One client holds at most half the lane's workers (rounded up): the others find one.
        hold = None if share is None else max(1, (size + 1) // 2)
        self._idle: FairQueue[FramedChild] = FairQueue(
            queue, queue if share is None else share, hold
        )
        self._all: set[FramedChild] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.started = False
        self.closed = False

    @property
    def workers(self) -> int:
        """Worker processes started and not retired (busy or idle)."""
        return len(self._all)

    @property
    def waiting(self) -> int:
        """Jobs waiting for a worker."""
        return self._idle.waiting

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
            self._idle.put(worker)
            return

    def full_for(self, client: str) -> bool:
        """True when `client` already has its share of this lane's queue waiting."""
        return self.started and self._idle.full_for(client)

    def reserve(self, client: str, check: bool = True) -> asyncio.Future[FramedChild]:
        """A place in this lane for a job of `client`, or (with `check`) `Busy` or
        `OverShare`; the lane's workers start at its first job."""
        if not self.started:  # the first job waits for the first worker: never refused
            self._start()
            check = False
        return self._idle.reserve(client, check)

    async def run(
        self,
        head: dict[str, Any],
        body: bytes,
        client: str = "",
        place: asyncio.Future[FramedChild] | None = None,
    ) -> Outcome:
        """Job `head` on `body`, in the `place` reserved for it (or a new one)."""
        for _ in range(self.size + 1):
            if place is None:
                place = self._idle.reserve(client, check=False)
            outcome = await self._attempt(head, body, client, place)
            if outcome is not None:
                return outcome
            place = None
        return Outcome({}, failure="the render workers are restarting", lasting=False)

    async def _attempt(
        self,
        head: dict[str, Any],
        body: bytes,
        client: str,
        place: asyncio.Future[FramedChild],
    ) -> Outcome | None:
        """One worker's answer; None when that worker had died while idle (it never
        saw the job, so the job is not to blame: another worker takes it)."""
        worker = await self._idle.wait(client, place)
        if not worker.alive:
            self._idle.release(client)
            self._all.discard(worker)
            await _end(worker)
            if not self.closed:
                self._replace()
            return None
        healthy = False
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.seconds):
                answer, data = await worker.ask(head, body)
            healthy = not answer.pop("retire", False)
            failure = answer.pop("failed", None)
            self._ended("done")
            return Outcome(clean_all(answer), data, failure, seconds=time.monotonic() - started)
        except TimeoutError:
            log.warning("event=render_deadline lane=%s seconds=%g", self.name, self.seconds)
            failure = f"rendering took longer than {self.seconds:g}s"
            self._ended("deadline")
            return Outcome({}, failure=failure, seconds=self.seconds, timed_out=True)
        except (ProcessGone, ConnectionError, ValueError):
            log.warning("event=render_worker_died lane=%s", self.name)
            self._ended("died")
            return Outcome({}, failure="the render worker failed (out of memory?)")
        finally:
            if healthy:
                self._idle.put(worker, client)
            else:
                self._idle.release(client)
                self._all.discard(worker)
                await _end(worker)
                if not self.closed:
                    self._replace()

    def _ended(self, outcome: str) -> None:
        if self.jobs is not None:
            self.jobs.labels(self.name, outcome).inc()

    async def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._idle.take_idle()
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


def _parts_key(message: str, head: dict[str, Any]) -> str | None:
    """Where an attachment job's part count is kept (None for other jobs)."""
    if head.get("job") != "attachment":
        return None
    return f"{message}/{PART_KINDS[bool(head.get('inline'))]}"


def _counter(lane: Lane) -> Callable[[], float]:
    return lambda: lane.workers


class RenderPool:
    """The API's render workers: a small lane, a general lane, answers kept, verdicts,
    single flight."""

    def __init__(
        self,
        limits: ApiLimits,
        command: Sequence[str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        command = command or (sys.executable, *WORKER)
        worker = (*command, str(limits.render_memory))
        queue, share = limits.render_queue, limits.render_queue_per_client
        small_seconds = min(limits.render_seconds, SMALL_SECONDS)
        registry = registry if registry is not None else CollectorRegistry()
        self.jobs = Counter(
            "floodgate_render_jobs",
            "Render jobs a worker took, by lane and how each ended (done: an answer or a "
            "verdict on the message; deadline: stopped at the lane's; died: the worker did)",
            ["lane", "outcome"],
            registry=registry,
        )
        self.kept = Counter(
            "floodgate_render_kept",
            "Render jobs answered without a worker: a kept answer or verdict, or a run of "
            "the same job already under way",
            registry=registry,
        )
        self.small = Lane("small", worker, SMALL_WORKERS, queue, small_seconds, share, self.jobs)
        self.general = Lane(
            "general",
            worker,
            limits.render_workers,
            queue,
            limits.render_seconds,
            share,
            self.jobs,
        )
        self.answers = RenderCache(limits.render_cache)
        self._verdicts: OrderedDict[str, str] = OrderedDict()
        self._running: dict[str, asyncio.Future[Outcome]] = {}
        self._slow: LRUCache[str, bool] = LRUCache(SLOW_MESSAGES)
        # How many attachments (inline images) a message has, by "<message id>/<kind>":
        # learnt from any attachment job on it (a few bytes each).
        self._parts: LRUCache[str, int] = LRUCache(PART_COUNTS)
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

    def over_share(self, client: str) -> bool:
        """True when `client` has its share waiting in a lane: the API then refuses its next
        render before reading the message from the store (a refused read costs nothing)."""
        return self.small.full_for(client) or self.general.full_for(client)

    def lane(self, message: str, raw: bytes) -> Lane:
        """The general lane for a big message, or one that was slow in the small lane."""
        if len(raw) > SMALL_MESSAGE or message in self._slow:
            return self.general
        return self.small

    async def run(self, key: str, head: dict[str, Any], raw: bytes, client: str = "") -> Outcome:
        """The answer to job `head` on message `raw`; `key` names the job (`<message
        id>/<what is asked>`), for its kept answer or verdict and to join a run of the same
        job; `client` (see `api.push.client_key`) for its share of the queue: `Busy` or
        `OverShare` when there is no room for it."""
        kept = self.answers.get(key)
        if kept is not None:
            assert isinstance(kept, Outcome)
            self.kept.inc()
            return kept
        verdict = self._verdicts.get(key)
        if verdict is not None:
            self.kept.inc()
            return Outcome({}, failure=verdict)
        message = key.partition("/")[0]
        parts = _parts_key(message, head)
        count = None if parts is None else self._parts.get(parts)
        if count is not None and int(head["index"]) >= count:
            self.kept.inc()
            return Outcome({"missing": True, "parts": count})
        running = self._running.get(key)
        if running is not None:
            self.kept.inc()
        else:
            lane = self.lane(message, raw)
            place = lane.reserve(client)
            running = asyncio.ensure_future(self._job(message, lane, head, raw, client, place))
            self._running[key] = running
            running.add_done_callback(lambda done: self._finished(key, parts, lane, done))
        # Shielded: a client that goes away does not abandon a job others may wait for.
        return await asyncio.shield(running)

    async def _job(
        self,
        message: str,
        lane: Lane,
        head: dict[str, Any],
        raw: bytes,
        client: str,
        place: asyncio.Future[FramedChild],
    ) -> Outcome:
        outcome = await lane.run(head, raw, client, place)
        if lane is self.small and outcome.timed_out and self.general.seconds > lane.seconds:
            self._slow[message] = True  # its other jobs go straight to the general lane
            # Admitted already: its new place is not refused.
            moved = self.general.reserve(client, check=False)
            outcome = await self.general.run(head, raw, client, moved)
        return outcome

    def forget(self, message: str) -> None:
        """Drop what is kept about `message` (it was deleted)."""
        self.answers.forget(message)
        prefix = f"{message}/"
        for key in [key for key in self._verdicts if key.startswith(prefix)]:
            del self._verdicts[key]
        self._slow.pop(message, None)
        for kind in PART_KINDS:
            self._parts.pop(f"{message}/{kind}", None)

    def _finished(
        self, key: str, parts: str | None, lane: Lane, done: asyncio.Future[Outcome]
    ) -> None:
        self._running.pop(key, None)
        if done.cancelled() or done.exception() is not None:
            return
        outcome = done.result()
        if parts is not None and isinstance(outcome.head.get("parts"), int):
            self._parts[parts] = outcome.head["parts"]
        if lane is self.small and (outcome.seconds > SLOW or outcome.failure is not None):
            self._slow[key.partition("/")[0]] = True
        if outcome.failure is None:
            self.answers.put(key, outcome, len(outcome.body) + size_of(outcome.head))
        elif outcome.lasting:
            self._verdicts[key] = outcome.failure
            while len(self._verdicts) > VERDICTS:
                self._verdicts.popitem(last=False)
