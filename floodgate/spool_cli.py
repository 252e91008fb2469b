"""`floodgate spool`: look at a host's spools, and push them into the store.

A host keeps one spool per worker: `<data_dir>/spool` with one worker, `spool-w<i>` with
several (and, after a change of the count, both until worker 1 has replayed the old ones).
Without `--dir` both commands take every one of them. `replay` is for spools copied off an
MX host that will not come back (its disk survived): the records go to the store exactly
as the receiver's own replay sends them, idempotently (ids fixed at DATA time, fingerprints
unique), so running it twice, or on a spool the receiver was already replaying, stores
nothing twice. Run it against spools no receiver is using.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the receiver's modules load only for this command, not for every one
    from floodgate.settings import Settings
    from receiver.delivery.spool import Spool

HELP = "a receiver's local spool: status, or replay a copied spool into the store"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("spool", help=HELP, description=HELP)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    every = "default: every spool under <data_dir> (spool, spool-w<i>)"
    status = actions.add_parser("status", help="messages and bytes waiting in the spools")
    status.add_argument("--dir", type=Path, help=f"one spool directory ({every})")
    replay = actions.add_parser(
        "replay", help="store every spooled message (idempotent), then remove the segments"
    )
    replay.add_argument("--dir", type=Path, help=f"one spool directory ({every})")
    replay.add_argument(
        "--rate", type=float, default=500.0, help="messages per second at most (default 500)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from receiver.delivery.spool import Spool, segment_paths
    from receiver.runtime.config import spool_directories

    directories = [args.dir] if args.dir else spool_directories(settings.data_dir)
    missing = [d for d in directories if not d.is_dir()]
    if missing or not directories:
        where = missing[0] if missing else f"{settings.data_dir}/spool*"
        print(f"floodgate spool: no spool directory at {where}", file=sys.stderr)
        return 2
    spools = []
    for directory in directories:
        spool = Spool(directory, max_bytes=1 << 50, min_free=0)
        # A copied spool is read with the key it came with; status changes nothing.
        spool.open(create=False, tidy=args.action != "status")
        if spool.key is None and any(segment_paths(directory)):
            print(
                f"floodgate spool: {directory} has no key file: its records cannot be proven "
                "and are kept in quarantine (copy the spool's `key` with it)",
                file=sys.stderr,
            )
        spools.append(spool)
    if args.action == "status":
        for spool in spools:
            print(f"{spool.directory}: {_held(spool.messages, spool.bytes, spool.oldest_age())}")
        if len(spools) > 1:
            held = _held(
                sum(s.messages for s in spools),
                sum(s.bytes for s in spools),
                max(s.oldest_age() for s in spools),
            )
            print(f"in all: {held}")
        return 0
    if not settings.mongodb_uri:
        print("floodgate spool replay: set FLOODGATE_MONGODB_URI", file=sys.stderr)
        return 2
    worst = 0
    for spool in spools:
        worst = max(worst, asyncio.run(_replay(spool, settings, args.rate)))
    return worst


def _held(messages: int, size: int, oldest: float) -> str:
    return f"{messages} messages, {size} bytes, oldest {oldest:.0f}s"


async def _replay(spool: Spool, settings: Settings, rate: float) -> int:
    from mailstore import MessageStore, StoreError
    from receiver.delivery.replay import Replay, ReplayConfig

    assert settings.mongodb_uri is not None
    store = await MessageStore.open(settings.store_config(settings.mongodb_uri))
    counts: dict[str, int] = {}

    def count(outcome: str, n: int) -> None:
        counts[outcome] = counts.get(outcome, 0) + n

    try:
        await store.ensure_indexes()
        replay = Replay(spool, store, ReplayConfig(rate=rate), on_outcome=count)
        await replay.drain()
    except StoreError as error:
        print(f"floodgate spool replay: the store failed ({error}); run it again", file=sys.stderr)
        return 1
    finally:
        await store.close()
    left = spool.messages
    # A record stored before (a replay cut short, a copy replayed twice) counts as stored:
    # the store cannot tell that apart from a new one, and it needs no telling.
    stored = counts.get("stored", 0) + counts.get("duplicate", 0)
    print(
        f"{spool.directory}: {stored} in the store (new or already there), "
        f"{counts.get('quarantined', 0)} quarantined; {left} left"
    )
    return 0 if left == 0 else 1
