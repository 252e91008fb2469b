"""One worker process of a receiver host: `python -m floodgate.worker_app INDEX FD`, started by
its host (receiver.runtime.children) with its end of the channel as descriptor FD.

It reads the same settings as its host and serves what the door hands over: no listening
socket, no health port, no snapshot files (the host keeps them); its own store connection,
its own blocklist cache (synced from the store, for bans made while a session is open),
spool directory (`<data_dir>/spool-w<INDEX>`) and worker id (`<host id>/w<INDEX>`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sys

import uvloop

from blocklist import LocalBlocklist
from floodgate import settings as settings_module
from floodgate.errors import fail
from floodgate.logs import configure
from floodgate.receiver_app import blocklist_config, raise_fd_limit, receiver_config
from floodgate.settings import Settings
from mailstore import MessageStore
from receiver.runtime.config import ReceiverConfig
from receiver.runtime.host import install_signal_handlers
from receiver.runtime.worker_process import run_worker
from receiver.telemetry.events import emit


async def serve(settings: Settings, config: ReceiverConfig, index: int, end: socket.socket) -> None:
    assert settings.mongodb_uri is not None
    stop = asyncio.Event()
    install_signal_handlers(stop)
    store = await MessageStore.open(
        settings.store_config(settings.mongodb_uri), ensure_indexes=False, report=emit
    )
    lists = dataclasses.replace(blocklist_config(settings), snapshot_path=None)
    blocklist = LocalBlocklist(store.db, lists)
    await blocklist.start()
    try:
        await run_worker(config, index, store, blocklist, stop, end)
    finally:
        await blocklist.stop()
        await store.close()


def main(argv: list[str]) -> None:
    index, fd = int(argv[0]), int(argv[1])
    try:
        settings = settings_module.load()
    except settings_module.SettingsError as error:
        fail(f"floodgate worker: {error}")
    configure(
        settings.log_level, settings.log_summary_interval, settings.log_format, worker=f"w{index}"
    )
    if not settings.mongodb_uri:
        fail("floodgate worker needs FLOODGATE_MONGODB_URI")
    raise_fd_limit(settings.max_connections + 1024)
    end = socket.socket(fileno=fd)
    uvloop.run(serve(settings, receiver_config(settings), index, end))


if __name__ == "__main__":
    main(sys.argv[1:])
