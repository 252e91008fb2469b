"""Group commit: inserts that arrive together go to MongoDB as one `insert_many`.

Documents arrive already BSON-encoded (see `mailstore.store`), so nothing in a batch can
fail to encode: one bad message never costs its neighbours a 451. Each caller still waits
for its own document to be durable (write concern majority + journal) and learns its own
outcome. A message's mailbox entries (mailstore.mailboxes) are written after the batch's
messages, in one more `insert_many`, before anyone hears that the message is stored.
Everything is bounded: the number of documents whose fate is unknown, the batch
size, the batches in flight, and the time a caller waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import pymongo
from bson.raw_bson import RawBSONDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, PyMongoError

from mailstore.errors import StoreBusy, StoreError, StoreTimeout, cause

DUPLICATE_KEY = 11000
Item = tuple[RawBSONDocument, Sequence[RawBSONDocument], "asyncio.Future[bool]"]


class Report(Protocol):
    """Logs one named event with fields: the process's one log helper, injected by the
    composition root (the store imports nothing of ours)."""

    def __call__(self, event: str, **fields: object) -> None: ...


class InsertBatcher:
    """Collects documents and writes them in batches; see the module docstring."""

    def __init__(
        self,
        collection: AsyncCollection[dict[str, Any]],
        *,
        entries: AsyncCollection[dict[str, Any]] | None = None,
        timeout: float,
        max_pending: int,
        max_batch: int = 256,
        max_batches_in_flight: int = 2,
        report: Report | None = None,
    ) -> None:
        self._collection = collection
        self._entries = entries
        self._report = report
        self._timeout = timeout
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._slots = asyncio.Semaphore(max_batches_in_flight)
        self._queue: deque[Item] = deque()
        self._wakeup = asyncio.Event()
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Documents submitted whose outcome is not known yet."""
        return self._pending

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop after the batches in flight finish; queued documents fail with StoreError."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        while self._queue:
            _, _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(StoreError("store shutting down"))

    async def insert(
        self, document: RawBSONDocument, entries: Sequence[RawBSONDocument] = ()
    ) -> bool:
        """Return once `document` and its `entries` are durable: True, or False when a
        document with its fingerprint is (the same message, stored before; its entries are
        then not written). Raise StoreError (or a subclass) otherwise."""
        if self._pending >= self._max_pending:
            raise StoreBusy(f"{self._pending} inserts pending")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending += 1
        future.add_done_callback(self._release)
        self._queue.append((document, entries, future))
        self._wakeup.set()
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._timeout)
        except TimeoutError:
            raise StoreTimeout(f"timeout: no durable write within {self._timeout:g}s") from None

    def _release(self, future: asyncio.Future[bool]) -> None:
        self._pending -= 1
        if not future.cancelled():
            future.exception()  # mark retrieved: a caller that timed out no longer asks

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                await self._slots.acquire()
                if len(self._queue) < self._max_batch:
                    # One turn of the event loop: every session whose final dot arrived
                    # in this turn joins the batch. Each insert_many costs the driver
                    # ~250 us whatever its size, so fuller batches cost less CPU.
                    await asyncio.sleep(0)
                batch = [
                    self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))
                ]
                if not batch:
                    self._slots.release()
                    break
                task = asyncio.get_running_loop().create_task(self._write(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _write(self, batch: list[Item]) -> None:
        copies: set[int] = set()
        try:
            failed, copies, reason = await self._insert_many([doc for doc, _, _ in batch])
            indexed = [i for i in range(len(batch)) if i not in failed and i not in copies]
            lost = await self._insert_entries([e for i in indexed for e in batch[i][1]])
            if lost:
                failed, reason = failed | set(indexed), lost
        except Exception as error:  # every failure of the batch is a 451 for its members
            failed, reason = set(range(len(batch))), cause(error, self._timeout)
        finally:
            self._slots.release()
        if failed and self._report is not None:
            self._report("store_insert_failed", size=len(batch), failed=len(failed), error=reason)
        for index, (_, _, future) in enumerate(batch):
            if future.done():
                continue
            if index in failed:
                future.set_exception(StoreError(reason))
            else:
                future.set_result(index not in copies)

    async def _insert_many(
        self, documents: list[RawBSONDocument]
    ) -> tuple[set[int], set[int], str]:
        """Insert; return the indexes of documents that are not durably stored, of those
        whose fingerprint a stored document already has, and why any failed."""
        everything = set(range(len(documents)))
        try:
            # Client-side operation timeout: the driver gives up (and retries within it).
            with pymongo.timeout(self._timeout):
                await self._collection.insert_many(documents, ordered=False)
        except BulkWriteError as error:
            details = error.details
            for concern in details.get("writeConcernErrors", []):
                return everything, set(), cause(WriteError(concern), self._timeout)
            failed: set[int] = set()
            copies: set[int] = set()
            reason = ""
            for write_error in details.get("writeErrors", []):
                index = int(write_error["index"])
                # A duplicate _id means an earlier attempt of this very insert (a driver
                # retry, a spool replay) already stored it: the ID is assigned once, at
                # DATA time. A duplicate fingerprint: the same message, stored before.
                if write_error.get("code") != DUPLICATE_KEY:
                    failed.add(index)
                    reason = reason or cause(WriteError(write_error), self._timeout)
                elif _on_fingerprint(write_error):
                    copies.add(index)
            return failed, copies, reason
        except PyMongoError as error:
            return everything, set(), cause(error, self._timeout)
        return set(), set(), ""

    async def _insert_entries(self, entries: list[RawBSONDocument]) -> str:
        """Write mailbox entries; "" when all are durable (an entry stored before, by a
        retry of the same message, is), else why not."""
        if not entries or self._entries is None:
            return ""
        try:
            with pymongo.timeout(self._timeout):
                await self._entries.insert_many(entries, ordered=False)
        except BulkWriteError as error:
            details = error.details
            for concern in details.get("writeConcernErrors", []):
                return cause(WriteError(concern), self._timeout)
            for write_error in details.get("writeErrors", []):
                if write_error.get("code") != DUPLICATE_KEY:
                    return cause(WriteError(write_error), self._timeout)
        except PyMongoError as error:
            return cause(error, self._timeout)
        return ""


def _on_fingerprint(write_error: dict[str, Any]) -> bool:
    """Whether a duplicate-key error is on the fingerprint index, not on `_id`. MongoDB
    names the key (`keyPattern`); nx-27017 only says it in the message."""
    pattern = write_error.get("keyPattern")
    if pattern:
        return "fp" in pattern
    return "_id" not in str(write_error.get("errmsg", ""))


class WriteError(Exception):
    """One write error or write-concern error of a bulk reply, as an error to classify."""

    def __init__(self, details: dict[str, Any]) -> None:
        super().__init__(str(details.get("errmsg", "")))
        self.code = details.get("code")
