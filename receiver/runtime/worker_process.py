"""A worker process of a host: the same `Worker` as in a host of one process, fed by its
channel instead of a call.

The door (in the host's gate process) accepted, judged and counted the connection; this
adopts the socket it receives (SCM_RIGHTS) and gives it to the worker. What the worker
tells its host goes back over the channel (`ChannelLink`): each close at once (so the door's
count is exact, and a client reconnecting after `221` finds its slot), the live-statistics
events batched per loop turn, the auto-bans it decides (written by the host, the one
blocklist writer; held in this worker's own cache meanwhile), and its status every
interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Any, Protocol, cast

from receiver.door import channel
from receiver.door.client import Client
from receiver.runtime.config import ReceiverConfig
from receiver.runtime.worker import BlocklistView, Worker, WorkerStore
from receiver.telemetry.events import emit
from receiver.vocabulary import BanReason, Refused

MAX_RECEIVED = 64  # hand-overs taken per wakeup before the loop serves sessions again


class HeldBlocklist(BlocklistView, Protocol):
    """The worker's own blocklist cache, which can hold a ban before the store has it."""

    def hold(self, key: str, ttl: float) -> None: ...


class ChannelLink:
    """The worker's end of its channel: what it tells its host (`HostSide`), and the
    hand-overs and stress changes it receives."""

    def __init__(self, end: socket.socket, blocklist: HeldBlocklist) -> None:
        self.end = end
        self.blocklist = blocklist
        self.loop = asyncio.get_running_loop()
        self._events: list[list[Any]] = []
        end.setblocking(False)

    # --- HostSide -------------------------------------------------------------------

    def released(self, key: str) -> None:
        self._send(channel.closed(key))  # now: before the session's last reply goes out

    def refused(self, key: str, reason: Refused) -> None:
        self._event(["r", key, str(reason)])

    def stored(self, key: str, size: int) -> None:
        self._event(["s", key, size])

    def vouched(self, key: str) -> None:
        self._event(["v", key])

    def violated(self, key: str) -> None:
        self._event(["x", key])

    def ban(self, key: str, reason: BanReason, ttl: float) -> None:
        self.blocklist.hold(key, ttl)  # this worker's sessions see it at once
        self._send(channel.ban(key, str(reason), ttl))

    def _event(self, event: list[Any]) -> None:
        if not self._events:
            self.loop.call_soon(self.flush)  # every event of this loop turn, one message
        self._events.append(event)

    def flush(self) -> None:
        events, self._events = self._events, []
        for start in range(0, len(events), channel.MAX_EVENTS):
            self._send(channel.events(events[start : start + channel.MAX_EVENTS]))

    def _send(self, message: bytes) -> None:
        try:
            self.end.send(message)
        except BlockingIOError:
            # The door reads its channels first thing: a full buffer means it is gone or
            # stuck, and a restarted host starts its counts anew anyway.
            emit("worker_channel_full", kind=message[:1].decode())
        except OSError:
            pass

    # --- from the door --------------------------------------------------------------

    def listen(self, worker: Worker, stop: asyncio.Event) -> None:
        self.loop.add_reader(self.end.fileno(), self._readable, worker, stop)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.end.fileno())
        self.flush()

    def _readable(self, worker: Worker, stop: asyncio.Event) -> None:
        for _ in range(MAX_RECEIVED):
            try:
                message, fds, _flags, _addr = socket.recv_fds(self.end, channel.MAX_HANDOFF, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message, fds = b"", []
            if not message:  # the door is gone: a worker never outlives its host
                emit("worker_orphaned")
                self.loop.remove_reader(self.end.fileno())
                stop.set()
                return
            kind = message[:1]
            if kind == channel.HANDOFF and len(fds) == 1:
                self._adopt(worker, message, fds[0])
            else:
                for fd in fds:
                    os.close(fd)
                if kind == channel.STRESS:
                    worker.stress(message[1:2] == b"1")

    def _adopt(self, worker: Worker, message: bytes, fd: int) -> None:
        sock = socket.socket(fileno=fd)
        try:
            client, early = channel.read_handoff(message)
        except (ValueError, TypeError):
            sock.close()
            return
        adopted = self.loop.create_task(
            self.loop.connect_accepted_socket(lambda: _Adopted(worker, client, early), sock)
        )
        adopted.add_done_callback(lambda task: self._adopted(task, client, sock))

    def _adopted(self, task: asyncio.Task[Any], client: Client, sock: socket.socket) -> None:
        if task.cancelled() or task.exception() is not None:
            sock.close()  # never became a session: the slot goes back all the same
            self.released(client.key)

    async def report(self, worker: Worker, interval: float) -> None:
        """The worker's status every interval (a millisecond or so of exposition)."""
        while True:
            self._send(channel.status(worker.status(metrics=True)))
            await asyncio.sleep(interval)


class _Adopted(asyncio.Protocol):
    """The protocol a handed-over socket starts with: becomes its session at once."""

    def __init__(self, worker: Worker, client: Client, early: bytes) -> None:
        self.worker = worker
        self.client = client
        self.early = early

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.worker.hand(cast(asyncio.Transport, transport), self.client, self.early)


async def run_worker(
    config: ReceiverConfig,
    index: int,
    store: WorkerStore,
    blocklist: HeldBlocklist,
    stop: asyncio.Event,
    end: socket.socket,
) -> None:
    """Serve the connections handed over on `end` until `stop` is set, then drain."""
    loop = asyncio.get_running_loop()
    link = ChannelLink(end, blocklist)
    worker = Worker(config, index, store, blocklist, link, loop)
    await worker.start(stop)
    link.listen(worker, stop)
    reporter = loop.create_task(
        link.report(worker, config.intervals.worker_status_interval), name="worker-status"
    )
    emit("worker_started", receiver=worker.id, pid=os.getpid())
    await stop.wait()
    emit("receiver_stopping", sessions=len(worker.sessions))
    await worker.drain(config.shutdown_grace)
    reporter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reporter
    await worker.close()
    link.close()
