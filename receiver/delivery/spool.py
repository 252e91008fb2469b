"""The local spool: accepted messages kept on this host's disk while the store is away.

Postfix never refuses mail because its next hop is down: it queues. A receiver does the same
when the store is known down, or an insert fails or times out: the message (id, envelope,
trace header, bytes, fingerprint) is appended to a segment file under the data directory and
synced to disk (group commit: one `fsync` per batch, off the event loop) before the sender
hears `250`. Replay (`receiver.delivery.replay`) writes the records to the store later, in order and
idempotently, and deletes each segment once every record in it is stored.

A record is framed by length and checksum:

    MAGIC (4) | payload length (4, big-endian) | CRC-32 of the payload (4) | payload
    payload = metadata length (4) | metadata (JSON) | trace header | message bytes

A crash mid-append leaves a torn last record: it fails its length or checksum and is
skipped (it was never acknowledged). Anything unreadable in the middle of a segment is
skipped up to the next record that proves itself whole, so one bad sector costs its own
records, never the ones after it. The spool is bounded by bytes, and by a floor of free disk
space it never eats into: past either, appends fail and the sender hears `451`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mailstore.message import MessageDocument, MessageKey, TlsInfo

MAGIC = b"FGS1"
_HEADER = struct.Struct(">4sII")
_META = struct.Struct(">I")
MAX_RECORD = 32 * 1024 * 1024  # a message is at most 15 MiB (receiver.limits): room to spare
SEGMENT_BYTES = 64 * 1024 * 1024  # a new segment after this many bytes
_SUFFIX = ".spool"
TRACE = "trace"  # the metadata key: length of the trace header before the message bytes


class SpoolFull(Exception):
    """No room: the spool's byte cap, or the free-space floor of its disk, is reached."""


class SpoolFailed(Exception):
    """The disk refused the write (an I/O error, the disk full despite the floor)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One spooled message, where it sits in its segment."""

    offset: int
    size: int
    message: MessageDocument


def encode(message: MessageDocument) -> bytes:
    """The record for `message`, framed (see the module docstring). Its metadata carries
    the message's own field names (mailstore.message), bytes apart."""
    meta = {
        key: value
        for key, value in message.fields().items()
        if key not in (MessageKey.RAW, MessageKey.RECEIVED_HEADER)
    }
    meta[MessageKey.RECEIVED_AT] = message.received_at.isoformat()
    meta[TRACE] = len(message.received_header)
    # ensure_ascii: lone surrogates survive as escapes
    text = json.dumps(meta, separators=(",", ":")).encode("ascii")
    payload = b"".join((_META.pack(len(text)), text, message.received_header, message.raw))
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode(payload: bytes) -> MessageDocument:
    """The message in a payload whose checksum was verified. Raises ValueError if not one.

    Records written before the spool used the message's field names (`id`, `rcpt_to`,
    `fingerprint`, `tls` as a list) are read too: an upgrade never strands spooled mail."""
    (meta_size,) = _META.unpack_from(payload)
    meta = json.loads(payload[_META.size : _META.size + meta_size])
    body = payload[_META.size + meta_size :]
    trace = int(meta[TRACE])
    if not 0 <= trace <= len(body):
        raise ValueError("trace length out of range")
    tls = meta.get(MessageKey.TLS)
    rcpt = meta.get(MessageKey.RCPT, meta.get("rcpt_to"))
    if not isinstance(rcpt, list):
        raise ValueError("no recipients")
    auth = meta.get(MessageKey.AUTH)
    headers = meta.get(MessageKey.HEADERS) or {}
    return MessageDocument(
        id=str(meta[MessageKey.ID] if MessageKey.ID in meta else meta["id"]),
        raw=body[trace:],
        mail_from=str(meta[MessageKey.MAIL_FROM]),
        rcpt=tuple(str(r) for r in rcpt),
        peer_ip=str(meta[MessageKey.PEER_IP]),
        helo=str(meta[MessageKey.HELO]),
        received_at=datetime.fromisoformat(meta[MessageKey.RECEIVED_AT]),
        received_header=body[:trace],
        headers={str(k): str(v) for k, v in dict(headers).items()},
        tls=_tls(tls),
        fp=str(meta.get(MessageKey.FP, meta.get("fingerprint", ""))),
        auth=dict(auth) if isinstance(auth, dict) else None,
    )


def _tls(value: object) -> TlsInfo | None:
    if isinstance(value, dict):
        return TlsInfo(str(value.get("version", "")), str(value.get("cipher", "")))
    if isinstance(value, list) and len(value) == 2:  # records of earlier versions
        return TlsInfo(str(value[0]), str(value[1]))
    return None


def read_records(data: bytes) -> Iterator[Record]:
    """Every whole record in a segment's bytes, in order; never raises, never invents."""
    position = 0
    end = len(data)
    while position + _HEADER.size <= end:
        magic, size, crc = _HEADER.unpack_from(data, position)
        start = position + _HEADER.size
        if magic == MAGIC and size <= MAX_RECORD and start + size <= end:
            payload = data[start : start + size]
            if zlib.crc32(payload) == crc:
                try:
                    message = decode(payload)
                except (ValueError, KeyError, TypeError, IndexError, struct.error):
                    pass  # a whole record we cannot read: skip it, keep the rest
                else:
                    yield Record(position, _HEADER.size + size, message)
                    position = start + size
                    continue
        # Not a whole record here (torn, corrupt): look for the next one.
        found = data.find(MAGIC, position + 1)
        if found < 0:
            return
        position = found


def read_segment(path: Path) -> list[Record]:
    """The whole records of one segment file (a missing file has none)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return list(read_records(data))


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

    # --- lifecycle ------------------------------------------------------------------

    def open(self) -> None:
        """Create the directory and count what earlier runs left (replay takes it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in segment_paths(self.directory):
            records = read_segment(path)
            if not records:
                with contextlib.suppress(OSError):
                    path.unlink()  # empty, or only a torn record that was never answered
                continue
            size = sum(r.size for r in records)
            self._counts[path] = (len(records), size)
            self._oldest[path] = records[0].message.received_at.timestamp()
            self.messages += len(records)
            self.bytes += size

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
        if self.bytes + size > self.max_bytes:
            return False
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            return False
        return free - size >= self.min_free

    async def append(self, message: MessageDocument) -> None:
        """Return once the message is on disk (synced); raise SpoolFull or SpoolFailed."""
        record = encode(message)
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
        count, size = self._counts.pop(path, (0, 0))
        self._oldest.pop(path, None)
        self.messages -= count
        self.bytes -= size
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        _sync_directory(self.directory)

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
