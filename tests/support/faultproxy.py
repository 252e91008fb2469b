"""A fault-injecting TCP proxy for tests: put it between a receiver and the store and break
the connection the way networks and elections do.

Modes (switchable at any moment from the test's thread):
- `pass`: forward both ways;
- `reset`: reset every open connection (RST, not FIN) and every new one at once;
- `stall`: accept and read, forward nothing, until the mode changes (a hung primary);
- `reset_after`: forward, but reset a connection once it has carried `after_bytes` towards
  the server since the mode was set (a write cut off mid-flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

SETTLE_TURNS = 10  # loop turns a stopping proxy gives accepted connections to become links


@dataclass(eq=False)  # identity: links live in a set
class _Link:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    upstream_bytes: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def reset(self) -> None:
        for writer in (self.client, self.server):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()


class _Tracked(asyncio.StreamReaderProtocol):
    """A stream protocol that keeps its transport in `transports` while it is open."""

    def __init__(
        self,
        transports: set[asyncio.BaseTransport],
        reader: asyncio.StreamReader,
        handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ) -> None:
        super().__init__(reader, handle)
        self._open = transports
        self._mine: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._mine = transport
        self._open.add(transport)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._mine is not None:
            self._open.discard(self._mine)
        super().connection_lost(exc)


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.mode = "pass"
        self.after_bytes = 0
        self.connections = 0
        self.resets = 0
        self._links: set[_Link] = set()
        self._transports: set[asyncio.BaseTransport] = set()  # every accepted one still open
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._changed: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)

    # -- control, from the test's thread -------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def set_mode(self, mode: str, after_bytes: int = 0) -> None:
        if mode not in ("pass", "reset", "stall", "reset_after"):
            raise ValueError(mode)
        done = threading.Event()

        def apply() -> None:
            self.mode, self.after_bytes = mode, after_bytes
            for link in list(self._links):
                link.upstream_bytes = 0
                if mode == "reset":
                    self._reset(link)
            assert self._changed is not None
            self._changed.set()
            self._changed = asyncio.Event()
            done.set()

        self._loop.call_soon_threadsafe(apply)
        done.wait(5)

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    # -- the proxy, on its own loop ------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._changed = asyncio.Event()

        def tracked() -> _Tracked:
            return _Tracked(self._transports, asyncio.StreamReader(), self._handle)

        server = self._loop.run_until_complete(self._loop.create_server(tracked, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._shut(server)

    def _shut(self, server: asyncio.AbstractServer) -> None:
        """Close every socket the proxy accepted or opened, whatever its handler's state:
        one left to the collector is a ResourceWarning in whichever test runs then."""
        server.close()
        self._loop.set_exception_handler(lambda loop, context: None)  # cancelled handlers
        # A connection accepted just before the stop becomes a transport a few loop turns
        # later (an accept task cancelled before its first turn never closes its socket):
        # abort what is there, turn, again, before any task is cancelled.
        for _ in range(SETTLE_TURNS):
            self._abort_all()
            self._loop.run_until_complete(asyncio.sleep(0))
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        for _ in range(SETTLE_TURNS):
            self._abort_all()
            self._loop.run_until_complete(asyncio.sleep(0))
        self._loop.close()

    def _abort_all(self) -> None:
        for link in list(self._links):
            link.reset()
        for transport in list(self._transports):
            transport.abort()

    def _reset(self, link: _Link) -> None:
        self.resets += 1
        link.reset()
        self._links.discard(link)

    async def _until_not_stalled(self) -> None:
        while self.mode == "stall":
            assert self._changed is not None
            await self._changed.wait()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        link = _Link(writer)
        self._links.add(link)
        if self.mode == "reset":
            self._reset(link)
            return
        await self._until_not_stalled()
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self._reset(link)
            return
        link.server = server_writer
        link.tasks = [
            asyncio.create_task(self._pump(link, reader, server_writer, upstream=True)),
            asyncio.create_task(self._pump(link, server_reader, writer, upstream=False)),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        self._links.discard(link)

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: bool,
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self._until_not_stalled()
                if link not in self._links:
                    return
                if upstream and self.mode == "reset_after":
                    link.upstream_bytes += len(data)
                    if link.upstream_bytes > self.after_bytes:
                        self._reset(link)
                        return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if link in self._links:
                self._reset(link)


def fronting(store_uri: str) -> FaultProxy:
    """A started proxy in front of the test store (skips the test for a replica set)."""
    import pytest

    host_port = store_uri.split("//", 1)[1].split("/", 1)[0]
    if "," in host_port or "@" in host_port:
        pytest.skip("the fault proxy fronts a single store address (embedded store)")
    host, port = host_port.rsplit(":", 1)
    return FaultProxy(host, int(port)).start()
