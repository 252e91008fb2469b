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
from typing import Any, cast

__all__ = ["Verifier"]

log = logging.getLogger("floodgate.receiver")
COMMAND = (sys.executable, "-m", "receiver.authcheck.worker")
RESPAWN_PAUSE = 1.0  # seconds between attempts when a worker fails to start


class _Pipe(asyncio.SubprocessProtocol):
    """A worker's stdout, cut into frames; each frame answers the one job in flight."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.waiting: asyncio.Future[bytes] | None = None
        self.exited = False
        self.gone = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) < 4:
            return
        size = int.from_bytes(self.buffer[:4], "big")
        if len(self.buffer) >= 4 + size and self.waiting is not None:
            frame = bytes(self.buffer[4 : 4 + size])
            del self.buffer[: 4 + size]
            if not self.waiting.done():
                self.waiting.set_result(frame)

    def process_exited(self) -> None:
        self.exited = True
        self.gone.set()
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_exception(EOFError("the worker exited"))


class _Worker:
    def __init__(self, transport: asyncio.SubprocessTransport, pipe: _Pipe) -> None:
        self.transport = transport
        self.pipe = pipe

    @classmethod
    async def start(cls) -> _Worker:
        loop = asyncio.get_running_loop()
        transport, pipe = await loop.subprocess_exec(_Pipe, *COMMAND, stderr=None)
        worker = cls(transport, pipe)
        try:
            await worker.read()  # {"ready": true} once dkimpy is imported
        except BaseException:
            worker.kill()
            raise
        return worker

    async def ask(self, job: dict[str, Any], raw: bytes) -> dict[str, Any]:
        # uvloop's pipe transports are write transports without asyncio's base classes.
        stdin = cast(asyncio.WriteTransport, self.transport.get_pipe_transport(0))
        head = json.dumps(job).encode()
        # One job in flight per worker: the write buffer holds one message at most.
        stdin.write(len(head).to_bytes(4, "big") + head + len(raw).to_bytes(4, "big") + raw)
        return await self.read()

    async def read(self) -> dict[str, Any]:
        pipe = self.pipe
        if pipe.exited:
            raise EOFError("the worker exited")
        pipe.waiting = asyncio.get_running_loop().create_future()
        pipe.pipe_data_received(1, b"")  # a frame already buffered
        answer: dict[str, Any] = json.loads(await pipe.waiting)
        return answer

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.transport.kill()
        self.transport.close()

    async def wait(self) -> None:
        await self.pipe.gone.wait()


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
        except (OSError, EOFError, ValueError) as error:
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
            except (OSError, EOFError, ValueError):
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
                await worker.wait()
        self._all.clear()
