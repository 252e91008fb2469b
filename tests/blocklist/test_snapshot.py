"""The on-disk snapshot: exact round trip, atomic replacement, corruption detected."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from blocklist import PrefixIndex, parse_network, snapshot


def sample_index() -> PrefixIndex:
    index = PrefixIndex()
    for text, expires in [
        ("203.0.113.7", math.inf),
        ("198.51.100.0/24", 2_000_000_000.5),
        ("0.0.0.0/0", math.inf),
        ("2001:db8::/48", math.inf),
        ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 1_900_000_000.0),
        ("::/0", 1.0),
    ]:
        index.add(parse_network(text), expires)
    return index


def test_round_trip_is_exact(tmp_path: Path) -> None:
    index = sample_index()
    path = tmp_path / "bl.snapshot"
    snapshot.write(path, index, synced_at=1234.5)
    loaded, info = snapshot.read(path)
    assert sorted(loaded.networks()) == sorted(index.networks())
    assert info.entries == 6 and info.synced_at == 1234.5
    assert loaded.covers("2001:db8:0:1::1", 0.0) and loaded.covers("198.51.100.1", 0.0)


def test_rewrite_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "bl.snapshot"
    snapshot.write(path, sample_index(), synced_at=1.0)
    smaller = PrefixIndex()
    smaller.add(parse_network("192.0.2.1"))
    snapshot.write(path, smaller, synced_at=2.0)
    loaded, info = snapshot.read(path)
    assert len(loaded) == 1 and info.synced_at == 2.0
    assert os.listdir(tmp_path) == ["bl.snapshot"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_snapshot_is_refused_whole(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "bl.snapshot"
    snapshot.write(path, sample_index(), synced_at=1.0)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:-5]
    elif damage == "flip":
        data[-3] ^= 0xFF
    else:
        data = bytearray(b"not a snapshot at all")
    path.write_bytes(bytes(data))
    with pytest.raises(snapshot.SnapshotError):
        snapshot.read(path)
