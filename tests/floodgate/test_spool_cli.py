"""`floodgate spool replay --dir`: a spool copied off a lost MX host, pushed into the store
once, however often it is run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from receiver.delivery.records import KEY_FILE
from receiver.delivery.spool import Spool, segment_paths
from tests.receiver.test_spool import message
from tests.support.processes import clean_environ


async def _spool_of(directory: Path, count: int, first: int = 0) -> list[str]:
    spool = Spool(directory, max_bytes=1 << 30, min_free=0)
    spool.open()
    spool.start()
    # Each its own message: the same n is the same envelope and bytes, one fingerprint.
    messages = [message(n) for n in range(first, first + count)]
    try:
        for m in messages:
            await spool.append(m)
    finally:
        await spool.close()
    return [m.id for m in messages]


def _floodgate(store_env: dict[str, str], tmp_path: Path, *args: str) -> Any:
    env = {**clean_environ(), **store_env, "FLOODGATE_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run(
        [sys.executable, "-m", "floodgate", "spool", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_copied_spool_is_replayed_once_however_often_it_is_run(
    store_env: dict[str, str],
    mongo: MongoClient[dict[str, Any]],
    db_name: str,
    tmp_path: Path,
) -> None:
    copied = tmp_path / "mx3-spool"
    ids = await _spool_of(copied, 30)
    status = _floodgate(store_env, tmp_path, "status", "--dir", str(copied))
    assert status.returncode == 0 and status.stdout.startswith(f"{copied}: 30 messages"), status
    # A second copy of the same spool (say, restored twice): still one document each.
    twin = tmp_path / "mx3-spool-again"
    twin.mkdir()
    for path in [*segment_paths(copied), copied / KEY_FILE]:  # the key travels with it
        (twin / path.name).write_bytes(path.read_bytes())

    first = _floodgate(store_env, tmp_path, "replay", "--dir", str(copied))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"{copied}: 30 in the store"), first
    assert "0 left" in first.stdout, first
    again = _floodgate(store_env, tmp_path, "replay", "--dir", str(twin))
    assert again.returncode == 0 and again.stdout.startswith(f"{twin}: 30 in the store"), again
    messages = mongo[db_name]["messages"]
    assert sorted(d["_id"] for d in messages.find({}, {"_id": 1})) == sorted(ids)
    assert segment_paths(copied) == [] and segment_paths(twin) == []


def test_replay_without_a_spool_says_so(store_env: dict[str, str], tmp_path: Path) -> None:
    done = _floodgate(store_env, tmp_path, "replay", "--dir", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "no spool directory" in done.stderr


async def test_without_a_directory_every_spool_of_the_host_is_found_and_replayed(
    store_env: dict[str, str],
    mongo: MongoClient[dict[str, Any]],
    db_name: str,
    tmp_path: Path,
) -> None:
    # One worker wrote `spool`, then two workers `spool-w1` and `spool-w2`: the runbook's
    # "save every spool of the host" and status must see all three.
    data = tmp_path / "data"
    ids = await _spool_of(data / "spool", 3)
    ids += await _spool_of(data / "spool-w1", 4, first=3)
    ids += await _spool_of(data / "spool-w2", 5, first=7)
    status = _floodgate(store_env, tmp_path, "status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == [
        str(data / "spool"),
        str(data / "spool-w1"),
        str(data / "spool-w2"),
    ]
    assert lines[3].startswith("in all: 12 messages")
    replayed = _floodgate(store_env, tmp_path, "replay")
    assert replayed.returncode == 0, replayed.stderr
    messages = mongo[db_name]["messages"]
    assert sorted(d["_id"] for d in messages.find({}, {"_id": 1})) == sorted(ids)


async def test_status_only_reads_so_a_running_receivers_spool_is_safe(
    store_env: dict[str, str], tmp_path: Path
) -> None:
    """A receiver's active segment may hold no whole record yet (just made, or a record
    half written): status must count it as nothing and leave it, not delete it under the
    receiver, which would then append its next messages to a file no one can find."""
    data = tmp_path / "data"
    await _spool_of(data / "spool", 2)
    [written] = segment_paths(data / "spool")
    active = data / "spool" / ("9" * len(written.stem) + written.suffix)
    active.write_bytes(written.read_bytes()[:7])  # a torn, unanswered record
    status = _floodgate(store_env, tmp_path, "status")
    assert status.returncode == 0 and status.stdout.startswith(f"{data / 'spool'}: 2 messages")
    assert active.exists() and segment_paths(data / "spool") == [written, active]
