"""A receiver host in the test's own process and event loop, over real sockets: the real door,
the real channel hand-over (SEQPACKET, SCM_RIGHTS) and real workers, whose "processes" are
`Worker`s on the same loop behind the same `ChannelLink` a worker process uses.

    host = await start_host(workers=2, max_connections_per_ip=3)
    reader, writer = await host.client("127.0.60.1")
    ...
    await host.close()
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from receiver.limits import DEFAULTS
from receiver.runtime.config import ReceiverConfig
from receiver.runtime.host import Host
from receiver.runtime.worker_process import run_worker
from tests.support.engine import FakeLists, FakeStore


class HeldLists(FakeLists):
    """The worker's blocklist cache: the host's lists, holding a ban at once."""

    def hold(self, key: str, ttl: float) -> None:
        self.blocked.add(key)
        self.changes += 1


class LoopProcess:
    """What `WorkerProcesses` sees of a worker process that runs on the test's loop: the
    same `run_worker` a worker process runs, on its own end of the channel."""

    def __init__(self, index: int, run: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
        self.pid = 100_000 + index
        self.stop = stop
        self.returncode: int | None = None
        self.task = asyncio.get_running_loop().create_task(run)
        self.task.add_done_callback(self._exited)

    def _exited(self, task: asyncio.Task[None]) -> None:
        self.returncode = 0 if not task.cancelled() and task.exception() is None else 1

    def poll(self) -> int | None:
        return self.returncode

    def kill(self) -> None:
        self.task.cancel()

    def send_signal(self, signal: int) -> None:
        self.stop.set()

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode if self.returncode is not None else 0


@dataclass
class InProcessHost:
    host: Host
    server: asyncio.Server
    port: int
    stop: asyncio.Event
    store: FakeStore
    lists: FakeLists
    processes: dict[int, LoopProcess] = field(default_factory=dict)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def client(self, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=(source, 0)
        )
        self.writers.append(writer)
        return reader, writer

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        self.stop.set()
        self.host.door.drain()
        if self.host.worker is not None:
            await self.host.worker.drain(0.5)
        if self.host.processes is not None:
            await self.host.processes.stop(3.0)
        self.server.close()


async def start_host(workers: int = 1, **limits: Any) -> InProcessHost:
    loop = asyncio.get_running_loop()
    config = ReceiverConfig(
        hostname="mx.test",
        domains=frozenset({"mx.test"}),
        limits=dataclasses.replace(DEFAULTS, **limits),
        workers=workers,
        proxy_protocol=True,
        trusted_proxies=(ipaddress.ip_network("127.0.99.0/24"),),
    )
    store, lists = FakeStore(), HeldLists()
    stop = asyncio.Event()
    processes: dict[int, LoopProcess] = {}

    def spawn(index: int, end: socket.socket) -> Any:
        own = end.dup()  # its caller closes `end`, as after a fork
        stopped = asyncio.Event()
        processes[index] = LoopProcess(
            index, _worker(config, index, store, lists, stopped, own), stopped
        )
        return processes[index]

    host = Host(config, store, lists, lists, spawn if workers > 1 else None)
    if host.worker is not None:
        host.worker.delivery.health.record(True)
    if host.processes is not None:
        host.processes.start(stop)
    server = await loop.create_server(host.door.gate, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return InProcessHost(host, server, port, stop, store, lists, processes)


async def _worker(
    config: ReceiverConfig,
    index: int,
    store: FakeStore,
    lists: HeldLists,
    stop: asyncio.Event,
    end: socket.socket,
) -> None:
    try:
        await run_worker(config, index, store, lists, stop, end)
    finally:
        end.close()  # what a process's exit does to its end of the channel


async def reply(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """One whole reply (its last line), or b"" if the server closed first."""
    async with asyncio.timeout(timeout):
        while True:
            line = await reader.readline()
            if not line or line[3:4] != b"-":
                return line
