"""The on-disk copy of the local index, so a receiver restarted while MongoDB is down still
enforces every ban it knew.

Format (all little-endian): the magic line `FGBL1\\n`, one JSON header line
(`written_at`, `synced_at`, `entries`, `sha256` of the body), then the body: per populated
(family, prefix length) a `<BBI` group header followed by the table keys (`uint32` for IPv4;
two `uint64` arrays, high then low halves, for IPv6) and one `float64` expiry per key
(`inf` = never). Arrays convert to and from the index's dicts at C speed: a million entries
load in well under a second.

Writes are atomic: a temp file in the same directory, fsync, rename over the old snapshot,
fsync of the directory. A torn or corrupt file fails its checksum and is ignored (the
receiver then starts empty and says so), never half-loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

from blocklist.index import PrefixIndex

MAGIC = b"FGBL1\n"
_GROUP = struct.Struct("<BBI")
_MAX_HEADER = 4096
_SWAP = sys.byteorder != "little"


class SnapshotError(ValueError):
    """The file is missing, torn, corrupt or of another format."""


@dataclass(frozen=True)
class SnapshotInfo:
    written_at: float
    synced_at: float
    entries: int


def _le(values: array) -> bytes:  # type: ignore[type-arg]
    if _SWAP:
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def _from_le(typecode: str, data: bytes | memoryview) -> array:  # type: ignore[type-arg]
    values = array(typecode)
    values.frombytes(data)
    if _SWAP:
        values.byteswap()
    return values


def encode(index: PrefixIndex) -> bytes:
    """The snapshot body for `index` (no header)."""
    parts: list[bytes] = []
    for version, length, table in index.tables():
        parts.append(_GROUP.pack(version, length, len(table)))
        keys = list(table)
        if version == 4:
            parts.append(_le(array("I", keys)))
        else:
            mask = (1 << 64) - 1
            parts.append(_le(array("Q", [k >> 64 for k in keys])))
            parts.append(_le(array("Q", [k & mask for k in keys])))
        parts.append(_le(array("d", table.values())))
    return b"".join(parts)


def decode(body: bytes) -> PrefixIndex:
    index = PrefixIndex()
    view = memoryview(body)
    offset = 0
    while offset < len(view):
        if offset + _GROUP.size > len(view):
            raise SnapshotError("truncated group header")
        version, length, count = _GROUP.unpack_from(view, offset)
        offset += _GROUP.size
        if version not in (4, 6) or length > (32 if version == 4 else 128):
            raise SnapshotError(f"bad group: IPv{version} /{length}")
        key_size = 4 if version == 4 else 16
        end = offset + count * (key_size + 8)
        if end > len(view):
            raise SnapshotError("truncated group")
        if version == 4:
            keys: object = _from_le("I", view[offset : offset + 4 * count])
            offset += 4 * count
        else:
            high = _from_le("Q", view[offset : offset + 8 * count])
            low = _from_le("Q", view[offset + 8 * count : offset + 16 * count])
            keys = [(h << 64) | lo for h, lo in zip(high, low, strict=True)]
            offset += 16 * count
        expiries = _from_le("d", view[offset : offset + 8 * count])
        offset += 8 * count
        index.add_table(version, length, dict(zip(keys, expiries, strict=True)))  # type: ignore[call-overload]
    return index


def write(path: Path, index: PrefixIndex, synced_at: float) -> int:
    """Atomically replace `path` with a snapshot of `index`; return the bytes written."""
    body = encode(index)
    header = {
        "written_at": time.time(),
        "synced_at": synced_at,
        "entries": len(index),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    data = MAGIC + json.dumps(header).encode() + b"\n" + body
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return len(data)


def read(path: Path) -> tuple[PrefixIndex, SnapshotInfo]:
    """Load a snapshot; raise `SnapshotError` (or `OSError`) rather than return a partial one."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise SnapshotError(f"{path}: not a blocklist snapshot")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
    if end < 0:
        raise SnapshotError(f"{path}: header missing")
    try:
        header = json.loads(data[len(MAGIC) : end])
        body = data[end + 1 :]
        if hashlib.sha256(body).hexdigest() != header["sha256"]:
            raise SnapshotError(f"{path}: checksum mismatch (torn or corrupt file)")
        info = SnapshotInfo(
            float(header["written_at"]), float(header["synced_at"]), int(header["entries"])
        )
    except (KeyError, TypeError, ValueError) as error:
        if isinstance(error, SnapshotError):
            raise
        raise SnapshotError(f"{path}: bad header: {error}") from None
    index = decode(body)
    if len(index) != info.entries:
        raise SnapshotError(f"{path}: {len(index)} entries where the header says {info.entries}")
    return index, info
