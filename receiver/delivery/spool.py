"""The local spool: accepted messages kept on this host's disk while the store is away.

Postfix never refuses mail because its next hop is down: it queues. A receiver does the same
when the store is known down, or an insert fails or times out: the message (id, envelope,
trace header, bytes, fingerprint) is appended to a segment file under the data directory and
synced to disk (group commit: one `fsync` per batch, off the event loop) before the sender
hears `250`. Replay (`receiver.delivery.replay`) writes the records to the store later, in order and
idempotently, and deletes each segment once every record in it is stored.

Each record is framed and authenticated with the spool's own key (receiver.delivery.records):
nothing a sender writes can pass for one. A crash mid-append leaves a torn last record,
dropped (it was never acknowledged). Anything else unreadable is damage: the records
around it are still read and stored, and the segment is then kept in `quarantine/` with a
warning and the bytes skipped, never deleted. The spool is bounded by bytes, and by a floor
of free disk space it never eats into: past either, appends fail and the sender hears
`451`, and `full_reason` says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from pathlib import Path

from mailstore.message import MessageDocument
from receiver.delivery.records import Segment, encode, read_segment, spool_key
from receiver.telemetry.events import emit

SEGMENT_BYTES = 64 * 1024 * 1024  # a new segment after this many bytes
_SUFFIX = ".spool"
QUARANTINE = "quarantine"  # beside the segments: what could not be stored, kept as evidence


class SpoolFull(Exception):
    """No room: the spool's byte cap, or the free-space floor of its disk, is reached."""


class SpoolFailed(Exception):
    """The disk refused the write (an I/O error, the disk full despite the floor)."""


def segment_paths(directory: Path) -> list[Path]:
    """Segment files, oldest first (names sort by creation)."""
    try:
        return sorted(p for p in directory.iterdir() if p.name.endswith(_SUFFIX))
    except FileNotFoundError:
        return []


class Spool:
    """The spool of one receiver: appends with group commit, sealed segments for replay."""

    def __init__(
        self, directory: Path, *, max_bytes: int, min_free: int, segment_bytes: int = SEGMENT_BYTES
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.min_free = min_free
        self.segment_bytes = segment_bytes
        self.messages = 0  # records not yet replayed
        self.bytes = 0
        self._oldest: dict[Path, float] = {}  # segment -> wall time of its first record
        self._counts: dict[Path, tuple[int, int]] = {}  # segment -> (records, bytes)
        self._active: Path | None = None
        self._fd: int | None = None
        self._active_size = 0
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._serial = 0
        self._writing = False  # a batch is being written in a worker thread
        self.failing = False  # the last write failed (an I/O error): readiness says so
        self.failure = ""  # ... and why (the disk's own words: read-only, no space, I/O)
        self.key: bytes | None = None

    # --- lifecycle ------------------------------------------------------------------

    def open(self, create: bool = True, tidy: bool = True) -> None:
        """Create the directory and its key, and count what earlier runs left (replay
        takes it). `create=False`: a copied spool, read with the key it came with;
        `tidy=False`: only look (nothing is moved or deleted)."""
        try:
            if create:
                self.directory.mkdir(parents=True, exist_ok=True)
            self.key = spool_key(self.directory, create=create)
        except OSError as error:  # a read-only or broken disk: mail is taken while the
            self.failing = True  # store answers, and readiness names the cause
            self.failure = error.strerror or type(error).__name__
            emit("spool_failed", error=str(error)[:160])
            return
        for path in segment_paths(self.directory):
            segment = self.read(path)
            records = segment.records
            if not records:
                if not tidy:
                    continue
                if segment.damaged:
                    self.quarantine(path, segment)  # nothing readable: all of it evidence
                else:
                    with contextlib.suppress(OSError):
                        path.unlink()  # empty, or a torn record that was never answered
                continue
            size = sum(r.size for r in records)
            self._counts[path] = (len(records), size)
            self._oldest[path] = records[0].message.received_at.timestamp()
            self.messages += len(records)
            self.bytes += size

    def read(self, path: Path) -> Segment:
        """One of this spool's segments, with its key."""
        return read_segment(path, self.key)

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        for _, future in self._queue:
            if not future.done():
                future.set_exception(SpoolFailed("spool closing"))
        self._queue.clear()
        self._close_active()

    # --- appending ------------------------------------------------------------------

    def room(self, size: int) -> bool:
        """Whether a record of `size` bytes fits under the cap and above the disk floor."""
        return self.full_reason(size) is None

    def full_reason(self, size: int) -> str | None:
        """Why a record of `size` bytes would not fit, in words an operator acts on: the
        spool's own cap, the disk's free-space floor, or a disk it cannot write to."""
        if self.bytes + size > self.max_bytes:
            return f"full: {self.bytes} of {self.max_bytes} bytes held"
        try:
            usage = shutil.disk_usage(self.directory)
        except OSError as error:
            return f"its disk cannot be read: {error.strerror or type(error).__name__}"
        if usage.free < size:
            return f"its disk is full ({usage.free} bytes free)"
        if usage.free - size < self.min_free:
            free, floor = usage.free, self.min_free
            return f"its disk is at the free-space floor ({free} bytes free, floor {floor})"
        if not os.access(self.directory, os.W_OK):
            return "its directory is read-only"
        return None

    async def append(self, message: MessageDocument) -> None:
        """Return once the message is on disk (synced); raise SpoolFull or SpoolFailed."""
        if self.key is None:
            raise SpoolFailed("spool not opened")
        record = encode(message, self.key)
        if not self.room(len(record)):
            raise SpoolFull("spool full")
        if self._wakeup is None:
            raise SpoolFailed("spool not started")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((record, future))
        self._wakeup.set()
        await future

    async def _write_loop(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                data = b"".join(record for record, _ in batch)
                self._writing = True
                try:
                    path = await asyncio.to_thread(self._write, data)
                except OSError as error:
                    self.failing = True
                    self.failure = error.strerror or type(error).__name__
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(SpoolFailed(str(error)))
                    continue
                finally:
                    self._writing = False
                self.failing = False
                count, size = self._counts.get(path, (0, 0))
                self._counts[path] = (count + len(batch), size + len(data))
                self._oldest.setdefault(path, time.time())
                self.messages += len(batch)
                self.bytes += len(data)
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    def _write(self, data: bytes) -> Path:
        """Append and fsync (in a worker thread); on failure the segment is cut back."""
        if self._fd is None or self._active_size >= self.segment_bytes:
            self._roll()
        assert self._fd is not None and self._active is not None
        before = self._active_size
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, before)  # leave no torn record behind
                os.fsync(self._fd)
            except OSError:
                self._close_active()  # a fresh segment next time; the reader skips the tear
            raise
        self._active_size = before + len(data)
        return self._active

    def _roll(self) -> None:
        self._close_active()
        self._serial += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._serial:06d}{_SUFFIX}"
        path = self.directory / name
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _sync_directory(self.directory)  # the new name survives a crash too
        self._active = path
        self._active_size = 0

    def _close_active(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._active = None
        self._active_size = 0

    # --- replay's side --------------------------------------------------------------

    def sealed(self) -> list[Path]:
        """Segments no append will touch again, oldest first. The active one is sealed
        first when there is nothing else, so replay drains everything."""
        paths = [p for p in sorted(self._counts) if p != self._active]
        if not paths and self._active is not None and self._active in self._counts:
            if not self._queue and not self._writing:
                paths = [self._active]
                self._close_active()
        return paths

    def replayed(self, path: Path) -> None:
        """Every record of `path` is stored: delete it."""
        self._forget(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        _sync_directory(self.directory)

    def quarantine(self, path: Path, segment: Segment) -> Path:
        """Every readable record of `path` is stored, but some of it was damaged: keep the
        whole file in quarantine as evidence, never delete it, and say so once."""
        self._forget(path)
        folder = self.directory / QUARANTINE
        folder.mkdir(exist_ok=True)
        kept = folder / f"damaged-{path.name}"
        os.replace(path, kept)
        _sync_directory(self.directory)
        emit(
            "spool_damaged",
            segment=str(kept),
            records=len(segment.records),
            damaged_bytes=segment.damaged,
        )
        return kept

    def _forget(self, path: Path) -> None:
        count, size = self._counts.pop(path, (0, 0))
        self._oldest.pop(path, None)
        self.messages -= count
        self.bytes -= size

    def oldest_age(self) -> float:
        """Seconds since the oldest record still waiting was spooled (0 when empty)."""
        if not self._oldest:
            return 0.0
        return max(0.0, time.time() - min(self._oldest.values()))


def _sync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
