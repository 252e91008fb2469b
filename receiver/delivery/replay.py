"""Replay: spooled messages go to the store once it answers again, and leave the spool.

In order (oldest segment first), in small batches, at a bounded rate so a recovering store
can breathe, and behind live mail (a batch waits while live inserts are pending).
Idempotent: a record keeps the id it was given at DATA time, so a duplicate `_id` (an
earlier replay that was cut short, a write that landed after its timeout) counts as stored,
and a duplicate fingerprint (the sender's retry was stored first) is the same message. A
segment is deleted only once every record in it is stored. A record the store rejects
outright (it can never hold it) goes to a quarantine file with one log line and never
blocks the rest; a store failure stops the pass, which starts over later.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mailstore.errors import StoreError, StoreRejected
from mailstore.message import MessageDocument
from receiver.delivery.records import Record, encode
from receiver.delivery.spool import QUARANTINE, Spool
from receiver.telemetry.events import emit
from receiver.vocabulary import ReplayOutcome


class Inserter(Protocol):
    @property
    def pending(self) -> int: ...

    async def insert(self, message: MessageDocument) -> str: ...


@dataclass(frozen=True)
class ReplayConfig:
    rate: float = 500.0  # messages per second at most
    batch: int = 32
    live_first: int = 64  # a batch waits while this many live inserts are pending
    idle: float = 0.5  # seconds between looks while nothing is to be done
    backoff: float = 2.0  # seconds after a failed pass


class Replay:
    """Drains one spool into the store; `run` is its long-lived task."""

    def __init__(
        self,
        spool: Spool,
        sink: Inserter,
        config: ReplayConfig,
        *,
        on_outcome: Callable[[ReplayOutcome, int], None] = lambda outcome, n: None,
        on_stored: Callable[[MessageDocument], None] = lambda message: None,
        on_damaged: Callable[[int], None] = lambda _bytes: None,
    ) -> None:
        self.spool = spool
        self.sink = sink
        self.config = config
        self._on_outcome = on_outcome
        self._on_stored = on_stored
        self._on_damaged = on_damaged
        self.quarantined = spool.directory / QUARANTINE

    async def run(
        self, store_up: Callable[[], bool], stop: asyncio.Event, *, until_empty: bool = False
    ) -> None:
        """Drain whenever the store is up, until `stop`; or, `until_empty` (a spool nothing
        appends to any more), until it holds nothing."""
        while not stop.is_set():
            wait = self.config.idle
            if self.spool.messages and store_up():
                try:
                    await self.drain(stop)
                except StoreError as error:
                    emit("spool_replay_paused", reason=type(error).__name__)
                    wait = self.config.backoff
            if until_empty and not self.spool.messages:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def drain(self, stop: asyncio.Event | None = None) -> int:
        """Replay every sealed segment; return how many records were stored. Raises
        StoreError when the store fails (what was stored stays stored)."""
        done = 0
        for path in self.spool.sealed():
            segment = await asyncio.to_thread(self.spool.read, path)
            records = segment.records
            for start in range(0, len(records), self.config.batch):
                if stop is not None and stop.is_set():
                    return done
                await self._live_first()
                done += await self._batch(records[start : start + self.config.batch])
            if segment.damaged:  # what could be read is stored; the rest is evidence
                self.spool.quarantine(path, segment)
                self._on_damaged(segment.damaged)
            else:
                self.spool.replayed(path)
            emit("spool_segment_replayed", records=len(records), damaged_bytes=segment.damaged)
        if done and not self.spool.messages:
            emit("spool_off", replayed=done)  # drained: a state change, logged once
        return done

    async def _live_first(self) -> None:
        # Polled: the live inserts' count has no event of its own, and a wait here is
        # rare and short (10 ms a look).
        for _ in range(int(self.config.backoff / 0.01)):
            if self.sink.pending < self.config.live_first:
                return
            await asyncio.sleep(0.01)

    async def _batch(self, records: list[Record]) -> int:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await asyncio.gather(
            *(self.sink.insert(r.message) for r in records), return_exceptions=True
        )
        stored = duplicates = 0
        failure: BaseException | None = None
        for record, result in zip(records, results, strict=True):
            if isinstance(result, StoreRejected):
                await asyncio.to_thread(self._quarantine, record)
            elif isinstance(result, BaseException):
                failure = failure or result
            else:
                stored += 1
                duplicates += result != record.message.id
                self._on_stored(record.message)
        self._on_outcome(ReplayOutcome.STORED, stored - duplicates)
        self._on_outcome(ReplayOutcome.DUPLICATE, duplicates)
        if failure is not None:
            self._on_outcome(ReplayOutcome.FAILED, 1)
            raise failure if isinstance(failure, StoreError) else StoreError(str(failure))
        # Pace: this batch may take no less than its share of a second at `rate`.
        pause = len(records) / self.config.rate - (loop.time() - started)
        if pause > 0:
            await asyncio.sleep(pause)
        return stored

    def _quarantine(self, record: Record) -> None:
        self.quarantined.mkdir(parents=True, exist_ok=True)
        path = self.quarantined / "rejected.spool"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            assert self.spool.key is not None
            os.write(fd, encode(record.message, self.spool.key))
            os.fsync(fd)
        finally:
            os.close(fd)
        emit("spool_record_quarantined", id=record.message.id, file=str(path))
        self._on_outcome(ReplayOutcome.QUARANTINED, 1)
