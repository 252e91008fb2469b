"""A worker of a host: sessions on connections its host's gate admitted and handed over.

The gate (receiver.host) accepted, judged and counted the connection; the worker adopts
the socket it receives over its channel (SCM_RIGHTS), runs the session, and reports the
close back, so the gate's per-client counts stay exact for the host. Message, recipient
and TLS-handshake rates and protocol-violation counts are held here: the gate sends every
connection of one client to the same worker, so they are exact for the host too. A ban
this worker decides is written by the gate (the host's one blocklist writer); the worker
holds it in its own cache meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from typing import cast

from prometheus_client import generate_latest

from receiver.door import channel
from receiver.door.accountant import Accountant, ConnectionCounts, HitCounter, RateTable
from receiver.door.channel import Handoff
from receiver.limits import Limits
from receiver.server import (
    AllowlistView,
    Background,
    BlocklistView,
    MessageSink,
    ReceiverConfig,
    ReceiverState,
)
from receiver.telemetry.events import emit

STATUS_INTERVAL = 1.0  # the gate's /readyz and /metrics are at most this far behind
MAX_RECEIVED = 64  # hand-overs taken per wakeup before the loop serves sessions again


class ReportingCounts(ConnectionCounts):
    """This worker's open connections; each release is reported to the gate."""

    __slots__ = ("on_release",)

    def __init__(self) -> None:
        super().__init__()
        self.on_release: Callable[[str | None], None] = lambda _key: None

    def release(self, key: str | None) -> None:
        super().release(key)
        self.on_release(key)


def worker_accountant(limits: Limits, clock: Callable[[], float]) -> Accountant:
    """Connections counted for statistics and reported; rates and hits held here."""
    capacity = limits.rate_clients
    return Accountant(
        ReportingCounts(),
        RateTable(capacity, clock),
        HitCounter(limits.autoban_window, capacity, clock),
        HitCounter(limits.autoban_window, capacity, clock),
    )


class RelayedBlocklist:
    """The worker's view of the blocklist: its own cache (synced from the store, no
    snapshot), with bans relayed to the gate, which writes them for the host."""

    def __init__(self, inner: BlocklistView, hold: Callable[[str, float], None]) -> None:
        self.inner = inner
        self.hold = hold
        self.relay: Callable[[str, str, float], None] = lambda _k, _r, _t: None

    def is_blocked(self, ip: str) -> bool:
        return self.inner.is_blocked(ip)

    def staleness(self) -> float:
        return self.inner.staleness()

    def entries(self) -> int:
        return self.inner.entries()

    def generation(self) -> int:
        return self.inner.generation()

    def ban(self, key: str, reason: str, ttl: float) -> None:
        self.hold(key, ttl)
        self.relay(key, reason, ttl)


class WorkerLink:
    """The worker's end of its channel: adopts hand-overs, reports closes and status."""

    def __init__(self, end: socket.socket, state: ReceiverState, stop: asyncio.Event) -> None:
        self.end = end
        self.state = state
        self.stop = stop
        self.loop = state.loop
        self._closed: list[str] = []
        counts = state.admission.counts
        assert isinstance(counts, ReportingCounts)
        counts.on_release = self._on_release
        end.setblocking(False)
        self._status: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.loop.add_reader(self.end.fileno(), self._readable)
        self._status = self.loop.create_task(self._report(), name="worker-status")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.remove_reader(self.end.fileno())
        if self._status is not None:
            self._status.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status
        self._flush()

    def ban(self, key: str, reason: str, ttl: float) -> None:
        self._send(channel.ban(key, reason, ttl))

    # --- from the gate --------------------------------------------------------------

    def _readable(self) -> None:
        for _ in range(MAX_RECEIVED):
            try:
                message, fds, _flags, _addr = socket.recv_fds(self.end, channel.MAX_HANDOFF, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message, fds = b"", []
            if not message:  # the gate is gone: a host never outlives it
                emit("worker_orphaned")
                self.loop.remove_reader(self.end.fileno())
                self.stop.set()
                return
            kind = message[:1]
            if kind == channel.HANDOFF and len(fds) == 1:
                self._adopt(Handoff.decode(message), fds[0])
            elif kind == channel.STRESS:
                self.state.admission.set_stressed(message[1:2] == b"1")
            else:
                for fd in fds:
                    os.close(fd)

    def _adopt(self, handoff: Handoff, fd: int) -> None:
        sock = socket.socket(fileno=fd)
        state = self.state
        state.admission.counts.acquire(handoff.key)  # the gate counted it for the host
        state.telemetry.on_accepted(handoff.key)
        adopted = self.loop.create_task(
            self.loop.connect_accepted_socket(lambda: _Adopted(state, handoff), sock)
        )
        adopted.add_done_callback(lambda task: self._adopted(task, handoff.key, sock))

    def _adopted(self, task: asyncio.Task[object], key: str, sock: socket.socket) -> None:
        if task.cancelled() or task.exception() is not None:
            sock.close()  # never became a session: the slot goes back all the same
            self.state.admission.release(key)

    # --- to the gate ----------------------------------------------------------------

    def _on_release(self, key: str | None) -> None:
        if key is None:
            return
        if not self._closed:
            self.loop.call_soon(self._flush)  # every close of this loop turn, one message
        self._closed.append(key)

    def _flush(self) -> None:
        keys, self._closed = self._closed, []
        while keys:  # bounded messages: a burst of closes goes in a few datagrams
            batch, keys = keys[:256], keys[256:]
            self._send(channel.closed(batch))

    def _send(self, message: bytes) -> None:
        try:
            self.end.send(message)
        except BlockingIOError:
            # The gate reads its channels first thing: a full buffer means it is gone or
            # stuck, and a restarted gate starts its counts anew anyway.
            emit("worker_channel_full", kind=message[:1].decode())
        except OSError:
            pass

    async def _report(self) -> None:
        registry = self.state.metrics.registry
        while True:
            ready, reason = self.state.ready()
            metrics = generate_latest(registry)  # a millisecond or so, once a second
            self._send(channel.status(ready, reason, metrics.decode()))
            await asyncio.sleep(STATUS_INTERVAL)


class _Adopted(asyncio.Protocol):
    """The protocol a handed-over socket starts with: becomes its session at once."""

    def __init__(self, state: ReceiverState, handoff: Handoff) -> None:
        self.state = state
        self.handoff = handoff

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        handoff = self.handoff
        session = self.state.gate.start_session(
            cast(asyncio.Transport, transport), handoff.key, handoff.ip
        )
        if handoff.early:  # what the client sent right after its PROXY header
            session.data_received(handoff.early)


async def run_worker(
    config: ReceiverConfig,
    store: MessageSink,
    blocklist: RelayedBlocklist,
    stop: asyncio.Event,
    end: socket.socket,
    allowlist: AllowlistView | None = None,
) -> None:
    """Serve the connections handed over on `end` until `stop` is set, then drain."""
    loop = asyncio.get_running_loop()
    accountant = worker_accountant(config.limits, loop.time)
    state = ReceiverState(
        config, store, blocklist, loop, allowlist, accountant=accountant, local_stress=False
    )
    link = WorkerLink(end, state, stop)
    blocklist.relay = link.ban
    background = Background(state, stop)
    await background.start()
    link.start()
    emit("worker_started", receiver=state.name, pid=os.getpid())
    await stop.wait()
    emit("receiver_stopping", sessions=len(state.sessions))
    await state.drain(config.shutdown_grace)
    await background.close()
    await link.close()
