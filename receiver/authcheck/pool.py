"""Signature verification off the event loop: worker processes, a bounded queue.

RSA and ed25519 verification and the canonicalization and hashing of a body are CPU work
a sender controls (size, number of signatures): they run in worker processes
(`receiver.authcheck.worker`), never on the loop. At most `queue` verifications wait or
run at once; one more gets `None` at once (a temperror), never a wait. A job still running
at its deadline, or whose caller stopped waiting, has its worker killed and replaced: the
work really stops, and no late answer can be read as the next job's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from typing import Any

__all__ = ["Verifier"]

log = logging.getLogger("floodgate.receiver")
COMMAND = (sys.executable, "-m", "receiver.authcheck.worker")
RESPAWN_PAUSE = 1.0  # seconds between attempts when a worker fails to start


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            *COMMAND, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        worker = cls(process)
        try:
            await worker.read()  # {"ready": true} once dkimpy is imported
        except BaseException:
            worker.kill()
            raise
        return worker

    async def ask(self, job: dict[str, Any], raw: bytes) -> dict[str, Any]:
        stdin = self.process.stdin
        assert stdin is not None
        head = json.dumps(job).encode()
        stdin.write(len(head).to_bytes(4, "big") + head + len(raw).to_bytes(4, "big") + raw)
        await stdin.drain()
        return await self.read()

    async def read(self) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        size = int.from_bytes(await stdout.readexactly(4), "big")
        answer: dict[str, Any] = json.loads(await stdout.readexactly(size))
        return answer

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        if self.process.stdin is not None:
            self.process.stdin.close()


class Verifier:
    """`workers` processes and at most `queue` jobs waiting or running."""

    def __init__(self, workers: int, queue: int) -> None:
        self.workers = workers
        self.queue = queue
        self.busy = 0
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: set[_Worker] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    async def start(self) -> None:
        """Start every worker now, not at the first signed message."""
        for worker in await asyncio.gather(*(_Worker.start() for _ in range(self.workers))):
            self._all.add(worker)
            self._idle.put_nowait(worker)

    async def verify(
        self, raw: bytes, keys: dict[str, str], todo: list[tuple[int, str]], arc: bool
    ) -> dict[str, Any] | None:
        """The worker's outcome (signatures.verify), or None when the queue is full or a
        worker failed."""
        if self.busy >= self.queue or self.closed:
            return None
        self.busy += 1
        worker: _Worker | None = None
        try:
            worker = await self._idle.get()
            answer = await worker.ask({"keys": keys, "todo": todo, "arc": arc}, raw)
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            log.error("auth_worker_failed", extra={"fields": {"error": type(error).__name__}})
            self._retire(worker)
            return None
        except BaseException:  # cancelled at the deadline: the worker may be mid-job
            self._retire(worker)
            raise
        finally:
            self.busy -= 1
        self._idle.put_nowait(worker)
        return {"dkim": {int(k): tuple(v) for k, v in answer["dkim"].items()}} | (
            {"arc": tuple(answer["arc"])} if "arc" in answer else {}
        )

    def _retire(self, worker: _Worker | None) -> None:
        if worker is None:
            return
        worker.kill()
        self._all.discard(worker)
        if not self.closed:
            task = asyncio.get_running_loop().create_task(self._replace())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _replace(self) -> None:
        while not self.closed:
            try:
                worker = await _Worker.start()
            except (OSError, asyncio.IncompleteReadError, ValueError):
                await asyncio.sleep(RESPAWN_PAUSE)
                continue
            if self.closed:
                worker.kill()
                return
            self._all.add(worker)
            self._idle.put_nowait(worker)
            return

    async def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        for worker in list(self._all):
            worker.kill()
        for worker in list(self._all):
            with contextlib.suppress(Exception):
                await worker.process.wait()
        self._all.clear()
