"""Keep a receiver's local cache equal to the `blocklist` collection, straight from MongoDB.

Two paths, either sufficient on its own:

* a **change stream** for sub-second propagation. Its resume token is kept across
  reconnects, so a dropped connection misses nothing; when the token is no longer usable
  (history lost, invalid) the stream restarts fresh and a full resync fills the gap;
* a **periodic full resync** (default every 30 s, sooner on demand) that rebuilds the index
  off to the side and swaps it in. It also covers stores without change streams and drops
  expired entries. Changes that arrive while a resync reads are replayed onto the new index
  before the swap, so a resync can never undo a newer change.

Freshness: the cache is *fresh* as of the last successful full resync, or the last
successful read of a change stream that has been continuous since such a resync.
`staleness()` is the seconds since then; after a restart from the snapshot it counts from
the snapshot's own sync time. The snapshot is rewritten (atomically, off the event loop)
after changes, at most every `snapshot_interval` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import OperationFailure, PyMongoError

from blocklist import snapshot
from blocklist.cache import BlocklistCache
from blocklist.entries import InvalidEntry, Net, expiry_timestamp, parse_network
from blocklist.index import PrefixIndex
from mailstore.connection import stop_if_cancelled
from mailstore.errors import brief

log = logging.getLogger("floodgate.blocklist")

Document = dict[str, Any]

# Server error codes meaning "this store cannot do change streams at all".
_NO_CHANGE_STREAMS = {40573, 40324, 115}
# ... and "the resume point is gone or unusable: start fresh and resync".
_RESUME_LOST = {280, 286, 136, 9, 2}

_BATCH = 10_000


class BlocklistSync:
    def __init__(
        self,
        collection: AsyncCollection[Document],
        cache: BlocklistCache,
        *,
        snapshot_path: Path | None = None,
        resync_interval: float = 30.0,
        snapshot_interval: float = 5.0,
        change_stream: bool = True,
        max_backoff: float = 10.0,
        poll_interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        overlay: Callable[[], Iterable[tuple[Net, float]]] = tuple,
    ) -> None:
        self.collection = collection
        # Entries this receiver made that the store has not confirmed yet (its own
        # auto-bans): a resync keeps them instead of undoing them until the write lands.
        self.overlay = overlay
        self.cache = cache
        self.snapshot_path = snapshot_path
        self.resync_interval = resync_interval
        self.snapshot_interval = snapshot_interval
        self.change_stream_enabled = change_stream
        self.max_backoff = max_backoff
        self.poll_interval = poll_interval
        self._clock = clock
        self._fresh_at: float | None = None  # monotonic
        self._snapshot_synced_at: float | None = None  # wall clock, from a loaded snapshot
        self._token: Mapping[str, Any] | None = None
        self._stream_epoch = 0
        self._synced_epoch = -1
        self._journal: list[tuple[str, Any, float]] | None = None
        self._resync_now = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._snapshot_changes = -1
        self._snapshot_lock = asyncio.Lock()
        self.resyncs = 0
        self.stream_events = 0
        self.stream_errors = 0
        self._complaints = _Complaints()

    # -- freshness -----------------------------------------------------------------------

    def staleness(self) -> float:
        """Seconds since the cache was last known to equal the store (inf if never)."""
        if self._fresh_at is not None:
            return max(0.0, self._clock() - self._fresh_at)
        if self._snapshot_synced_at is not None:
            return max(0.0, time.time() - self._snapshot_synced_at)
        return float("inf")

    def _mark_fresh(self) -> None:
        self._fresh_at = self._clock()

    @property
    def synced_at(self) -> float:
        """Wall-clock time of the last known-fresh moment (0 if never)."""
        if self._fresh_at is not None:
            return time.time() - (self._clock() - self._fresh_at)
        return self._snapshot_synced_at or 0.0

    # -- lifecycle -----------------------------------------------------------------------

    def load_snapshot(self) -> bool:
        """Fill the cache from the on-disk snapshot, if a valid one exists."""
        if self.snapshot_path is None or not self.snapshot_path.exists():
            return False
        try:
            index, info = snapshot.read(self.snapshot_path)
        except (OSError, snapshot.SnapshotError) as error:
            log.warning("blocklist snapshot ignored: %s", error)
            return False
        index.sweep(time.time())
        self.cache.replace(index)
        self._snapshot_synced_at = info.synced_at
        self._snapshot_changes = self.cache.changes
        log.info(
            "blocklist: %d entries loaded from snapshot (synced %.0fs ago)",
            len(index),
            time.time() - info.synced_at,
        )
        return True

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._resync_loop(), name="blocklist-resync")]
        if self.change_stream_enabled:
            self._tasks.append(asyncio.create_task(self._watch_loop(), name="blocklist-watch"))
        self._tasks.append(asyncio.create_task(self._snapshot_loop(), name="blocklist-snapshot"))

    async def stop(self, grace: float = 2.0) -> None:
        """Cancel the loops and write a last snapshot; bounded even if the store hangs.

        A task cancelled while the driver is selecting a server can outlive its cancel
        (the driver finishes its own cleanup first): wait `grace` seconds, not forever.
        """
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        # An operation cancelled mid-read leaves the driver's socket to the garbage
        # collector, which closes it with a ResourceWarning: let go of the tasks (and their
        # frames) and collect now, the sockets closed without the warning.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            self._tasks = []
            gc.collect()
        await self.write_snapshot()

    def request_resync(self) -> None:
        self._resync_now.set()

    # -- full resync ---------------------------------------------------------------------

    async def resync(self) -> int:
        """Rebuild the index from the collection and swap it in; return its size."""
        epoch = self._stream_epoch
        self._journal = []
        try:
            fresh = PrefixIndex()
            now = time.time()
            cursor = self.collection.find({}, {"_id": 1, "expires_at": 1}).batch_size(_BATCH)
            async for doc in cursor:
                expires = expiry_timestamp(doc.get("expires_at"))
                if expires <= now:
                    continue
                try:
                    fresh.add(parse_network(str(doc["_id"])), expires)
                except InvalidEntry:
                    log.warning("blocklist: ignoring malformed entry %r", doc["_id"])
            for kind, key, expires in self._journal:
                _apply(fresh, kind, key, expires)
            for net, expires in self.overlay():
                if expires > now and (fresh.get(net) or 0.0) < expires:
                    fresh.add(net, expires)
        finally:
            journal, self._journal = self._journal, None
        if fresh._tables != self.cache.index._tables:
            self.cache.replace(fresh)
        else:
            self.cache.sweep()
        del journal
        self._synced_epoch = epoch
        self.resyncs += 1
        self._mark_fresh()
        return len(fresh)

    async def _resync_loop(self) -> None:
        failures = 0
        while True:
            self._resync_now.clear()
            try:
                await self.resync()
                failures = 0
                wait = self.resync_interval
                self._complaints.recovered("resync")
            except PyMongoError as error:
                stop_if_cancelled(error)
                failures += 1
                wait = min(self.resync_interval, self.max_backoff, 0.5 * 2**failures)
                self._complaints.failed("resync", f"blocklist resync failed: {_brief(error)}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resync_now.wait(), wait)

    # -- change stream -------------------------------------------------------------------

    def apply_change(self, change: Document) -> None:
        kind = change.get("operationType")
        key = (change.get("documentKey") or {}).get("_id")
        if kind in ("insert", "update", "replace"):
            doc = change.get("fullDocument")
            if doc is None:  # deleted again before the lookup: the delete event follows
                return
            self._apply("upsert", doc["_id"], expiry_timestamp(doc.get("expires_at")))
        elif kind == "delete" and key is not None:
            self._apply("delete", key, 0.0)
        elif kind in ("drop", "rename", "dropDatabase", "invalidate"):
            self._token = None
            self.request_resync()

    def _apply(self, kind: str, key: Any, expires: float) -> None:
        if self._journal is not None:
            self._journal.append((kind, key, expires))
        try:
            net = parse_network(str(key))
        except InvalidEntry:
            log.warning("blocklist: ignoring malformed entry %r", key)
            return
        if kind == "upsert" and expires > time.time():
            self.cache.upsert(net, expires)
        else:
            self.cache.delete(net)

    async def _watch_loop(self) -> None:
        backoff = 0.25
        while True:
            try:
                await self._watch()
                return  # change streams unsupported: the resync loop carries on alone
            except PyMongoError as error:
                stop_if_cancelled(error)
                self.stream_errors += 1
                code = getattr(error, "code", None)
                if isinstance(error, OperationFailure) and code in _RESUME_LOST:
                    self._token = None
                self._complaints.failed(
                    "change stream", f"blocklist change stream lost: {_brief(error)}"
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            else:
                backoff = 0.25

    async def _watch(self) -> None:
        options: Document = {"full_document": "updateLookup", "max_await_time_ms": 500}
        if self._token is not None:
            options["resume_after"] = self._token
        try:
            stream = await self.collection.watch(**options)
        except OperationFailure as error:
            if error.code in _NO_CHANGE_STREAMS:
                log.warning("blocklist: store has no change streams; resync only (%s)", error)
                return
            raise
        self._complaints.recovered("change stream")
        async with stream:
            if self._token is None:
                # A fresh stream: what happened before it opened is only known after a
                # full resync that starts now.
                self._stream_epoch += 1
                self.request_resync()
            while True:
                change = await stream.try_next()
                self._token = stream.resume_token
                if change is not None:
                    self.stream_events += 1
                    self.apply_change(change)
                if self._synced_epoch == self._stream_epoch:
                    self._mark_fresh()
                if change is None:
                    # MongoDB holds an empty getMore for max_await_time_ms; the embedded
                    # store answers at once, so pace empty polls rather than spin.
                    await asyncio.sleep(self.poll_interval)

    # -- snapshot ------------------------------------------------------------------------

    async def write_snapshot(self) -> bool:
        """Write the snapshot if the cache changed since the last one; True if written."""
        if self.snapshot_path is None or self._fresh_at is None:
            return False
        async with self._snapshot_lock:
            if self.cache.changes == self._snapshot_changes:
                return False
            changes = self.cache.changes
            index = self.cache.index
            body_index = _copy(index)
            path, synced = self.snapshot_path, self.synced_at
            try:
                await asyncio.to_thread(snapshot.write, path, body_index, synced)
            except OSError as error:
                log.warning("blocklist snapshot not written: %s", error)
                return False
            self._snapshot_changes = changes
            return True

    async def _snapshot_loop(self) -> None:
        while True:
            await asyncio.sleep(self.snapshot_interval)
            await self.write_snapshot()


def _apply(index: PrefixIndex, kind: str, key: Any, expires: float) -> None:
    try:
        net = parse_network(str(key))
    except InvalidEntry:
        return
    if kind == "upsert" and expires > time.time():
        index.add(net, expires)
    else:
        index.remove(net)


def _copy(index: PrefixIndex) -> PrefixIndex:
    """A shallow copy the snapshot thread can read while the loop keeps changing the cache."""
    copy = PrefixIndex()
    for version, length, table in index.tables():
        copy.add_table(version, length, dict(table))
    return copy


def _brief(error: BaseException) -> str:
    return brief(error)


class _Complaints:
    """A store outage is logged when it starts, then at most once a minute while it
    lasts (with how many failures were not logged), and again when it is over."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self._since: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def failed(self, kind: str, message: str) -> None:
        now = time.monotonic()
        last = self._since.get(kind)
        if last is not None and now - last < self.every:
            self._quiet[kind] = self._quiet.get(kind, 0) + 1
            return
        quiet = self._quiet.pop(kind, 0)
        self._since[kind] = now
        log.warning("%s%s", message, f" ({quiet} more failures not logged)" if quiet else "")

    def recovered(self, kind: str) -> None:
        if self._since.pop(kind, None) is not None:
            self._quiet.pop(kind, None)
            log.info("blocklist %s: working again", kind)
