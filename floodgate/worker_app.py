"""One worker of a receiver host: `python -m floodgate.worker_app INDEX FD`, started by its
host's gate (receiver.workers) with its end of the channel as descriptor FD.

It reads the same settings as its gate and serves what the gate hands over: no listening
socket, no health port, no snapshot files (the gate keeps the host's); its own store
connection, spool directory (`<data_dir>/spool-w<INDEX>`) and receiver id (`.../w<INDEX>`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sys

import uvloop

from blocklist import LocalAllowlist, LocalBlocklist
from floodgate import settings as settings_module
from floodgate.errors import fail
from floodgate.logs import configure
from floodgate.receiver_app import (
    blocklist_config,
    leftover_spools,
    raise_fd_limit,
    receiver_config,
    store_config,
)
from floodgate.settings import Settings
from mailstore import MessageStore
from receiver.server import ReceiverConfig, SpoolSettings, install_signal_handlers
from receiver.telemetry.events import emit
from receiver.worker import RelayedBlocklist, run_worker
from receiver.workers import worker_id


def worker_config(settings: Settings, index: int) -> ReceiverConfig:
    config = receiver_config(settings)
    spool: SpoolSettings | None = config.spool
    if spool is not None:  # one writer per spool directory
        spool = dataclasses.replace(
            spool,
            directory=settings.data_dir / f"spool-w{index}",
            adopt=leftover_spools(settings.data_dir, settings.workers) if index == 1 else (),
        )
    return dataclasses.replace(config, receiver_id=worker_id(config, index), spool=spool)


async def serve(settings: Settings, config: ReceiverConfig, end: socket.socket) -> None:
    assert settings.mongodb_uri is not None
    stop = asyncio.Event()
    install_signal_handlers(stop)
    store = await MessageStore.open(
        store_config(settings, settings.mongodb_uri), ensure_indexes=False, report=emit
    )
    # The worker's copies of the lists: synced from the store, no snapshot (the gate
    # writes the host's), bans relayed to the gate.
    lists = dataclasses.replace(blocklist_config(settings), snapshot_path=None)
    blocklist = LocalBlocklist(store.db, lists)
    allowlist = LocalAllowlist(store.db, lists, static=settings.allowlist_networks)
    await blocklist.start()
    await allowlist.start()
    try:
        relayed = RelayedBlocklist(blocklist, blocklist.hold)
        await run_worker(config, store, relayed, stop, end, allowlist)
    finally:
        await allowlist.stop()
        await blocklist.stop()
        await store.close()


def main(argv: list[str]) -> None:
    index, fd = int(argv[0]), int(argv[1])
    try:
        settings = settings_module.load()
    except settings_module.SettingsError as error:
        fail(f"floodgate worker: {error}")
    configure(settings.log_level, settings.log_summary_interval, settings.log_format)
    if not settings.mongodb_uri:
        fail("floodgate worker needs FLOODGATE_MONGODB_URI")
    raise_fd_limit(settings.max_connections + 1024)
    end = socket.socket(fileno=fd)
    uvloop.run(serve(settings, worker_config(settings, index), end))


if __name__ == "__main__":
    main(sys.argv[1:])
