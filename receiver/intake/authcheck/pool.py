"""Signature verification off the event loop: worker processes, a bounded queue.

RSA and ed25519 verification and the canonicalization and hashing of a body are CPU work a
sender controls (size, number of signatures): they run in worker processes
(`receiver.intake.authcheck.worker`), never on the loop. The workers start with the checks
(only a receiver with authentication checks on has them), in the background; jobs that come
first wait for the start (within their callers' deadlines; the start goes on if those pass).
At most `queue` verifications wait or run at once; one more gets `None` at once (a
temperror), never a wait.

The workers are `processes.FramedChild`ren. Jobs are pipelined: each goes down the pipe of
the worker with the fewest in flight at once, and the worker answers them in order, one
frame each. A worker woken once works through every job queued meanwhile, and the answers
come back together, so messages reach the store together (in one insert) rather than one per
wake-up of a process. A caller that stops waiting (its deadline) leaves its answer to be
dropped when it comes; a worker whose oldest job has been out longer than `stuck_after` is
killed and replaced, so the work really stops, and the jobs behind it end as failures
(temperror).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import sys
import time
from collections.abc import Coroutine
from typing import Any

import processes
from processes import FramedChild, ProcessGone
from receiver.telemetry.events import emit

__all__ = ["Verifier"]

COMMAND = (sys.executable, "-m", "receiver.intake.authcheck.worker")


def client_of(ip: str) -> str:
    """Whose share a job counts against: the address, or an IPv6 address's /64."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class Verifier:
    """`workers` processes and at most `queue` jobs waiting or running; one client (an
    address, an IPv6 /64) at most half of them, so the other half is always there for the
    rest (a client's jobs past its share get None at once, as past the queue), and its
    jobs go to at most half the workers (one at least), so with two or more the others
    are free for everyone else: a worker answers in order, and a job queued behind one
    sender's eight signatures over a large body would wait out its deadline. The clients
    whose jobs a stuck worker was killed for get None until its successor is up: they would
    otherwise take the workers left meanwhile."""

    def __init__(self, workers: int, queue: int, stuck_after: float = 2.0) -> None:
        self.workers = workers
        self.queue = queue
        self.stuck_after = stuck_after
        self.busy = 0
        self.share = max(1, queue // 2)
        self._clients: dict[str, int] = {}  # jobs in flight by client (never more than queue)
        self._placed: dict[str, dict[FramedChild, int]] = {}  # a client's jobs by worker
        self._benched: set[str] = set()  # clients of a killed worker, until its successor
        self._all: list[FramedChild] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._starting: asyncio.Task[None] | None = None
        self.closed = False

    async def start(self, now: bool = False) -> None:
        """Begin starting every worker, in the background: the receiver does not wait for
        them, and mail that comes before they are up waits for them within its deadline
        (a start at the first job instead put the whole start inside the first message's
        deadline: on a busy host its signatures were `temperror`). With `now`, every worker
        is up when this returns."""
        if self._starting is None:
            self._starting = self._track(self._start_all())
        if now:
            await asyncio.wait({self._starting})

    async def _start_all(self) -> None:
        await asyncio.gather(*(self._replace() for _ in range(self.workers)))

    async def verify(
        self,
        raw: bytes,
        keys: dict[str, str],
        todo: list[tuple[int, str]],
        arc: bool,
        client: str = "",
    ) -> dict[str, Any] | None:
        """The worker's outcome (signatures.verify), or None when the queue or the
        client's share of it is full, no worker is up, or the worker failed."""
        key = client_of(client)
        held = self._clients.get(key, 0)
        if self.busy >= self.queue or self.closed or held >= self.share or key in self._benched:
            return None
        self._clients[key] = held + 1
        try:
            return await self._verify(raw, keys, todo, arc, key)
        finally:
            left = self._clients[key] - 1
            if left:
                self._clients[key] = left
            else:
                del self._clients[key]

    async def _verify(
        self, raw: bytes, keys: dict[str, str], todo: list[tuple[int, str]], arc: bool, key: str
    ) -> dict[str, Any] | None:
        if self._starting is None:  # the first job: start every worker, once
            self._starting = self._track(self._start_all())
        if not self._starting.done():
            self.busy += 1  # a job waiting for the start counts against the queue
            try:
                # A caller whose deadline passes leaves the start going on.
                await asyncio.wait({self._starting})
            finally:
                self.busy -= 1
        if self.closed or not self._all:
            return None
        worker = self._pick(key)
        placed = self._placed.setdefault(key, {})
        placed[worker] = placed.get(worker, 0) + 1
        self.busy += 1
        try:
            answer, _ = await worker.ask({"keys": keys, "todo": todo, "arc": arc}, raw)
        except (OSError, ProcessGone, ValueError) as error:
            emit("auth_worker_failed", error=type(error).__name__)
            self._retire(worker)
            return None
        except asyncio.CancelledError:  # the caller's deadline
            if time.monotonic() - worker.oldest() >= self.stuck_after:
                self._retire(worker)  # stuck on a job, or hopelessly behind
            raise
        finally:
            self.busy -= 1
            self._unplace(key, worker)
        return {"dkim": {int(k): tuple(v) for k, v in answer["dkim"].items()}} | (
            {"arc": tuple(answer["arc"])} if "arc" in answer else {}
        )

    def _pick(self, key: str) -> FramedChild:
        """The least loaded worker, among those the client already uses once it uses
        half of them."""
        placed = self._placed.get(key, {})
        used = [w for w in self._all if placed.get(w)]
        pool = used if len(used) >= max(1, len(self._all) // 2) else self._all
        return min(pool, key=lambda w: w.load)

    def _unplace(self, key: str, worker: FramedChild) -> None:
        placed = self._placed[key]
        placed[worker] -= 1
        if not placed[worker]:
            del placed[worker]
        if not placed:
            del self._placed[key]

    def _retire(self, worker: FramedChild) -> None:
        if worker not in self._all:
            return  # retired already (its other jobs fail with it)
        worker.kill()
        self._track(worker.wait())  # reaped
        self._all.remove(worker)
        benched = {key for key, placed in self._placed.items() if worker in placed}
        self._benched |= benched
        if not self.closed:
            self._track(self._replace(benched))

    def _track(self, job: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task of ours: cancelled at `close`."""
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _replace(self, benched: frozenset[str] | set[str] = frozenset()) -> None:
        try:
            await self._start_one()
        finally:
            self._benched -= benched

    async def _start_one(self) -> None:
        while not self.closed:
            try:
                worker = await FramedChild.start(COMMAND)
            except (OSError, ProcessGone, ValueError, TimeoutError):
                await asyncio.sleep(processes.RESTART_POLICY.delay)
                continue
            if self.closed:
                worker.kill()
                return
            self._all.append(worker)
            return

    async def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        workers, self._all = self._all, []
        for worker in workers:
            worker.kill()
        for worker in workers:
            with contextlib.suppress(Exception):
                await worker.wait()
