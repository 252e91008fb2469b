"""Hand-over: how the door gives an admitted connection to the worker that runs its session.

One process is a host with one worker in the same process: its hand-over is a call (the
runtime's `Worker.hand`). With N worker processes it is `Channels`: the admitted socket goes
over the worker's channel (receiver.door.channel, SCM_RIGHTS) to the worker its client key
hashes to, so every connection of one client meets the same worker and the rates and
violation counts held there are exact for the host. Either way the door counts the
connection, and the worker tells it when the session ends (`HostSide.released`).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from receiver.door import channel
from receiver.door.channel import WorkerStatus
from receiver.door.client import Client, HostSide
from receiver.telemetry.events import emit
from receiver.vocabulary import BanReason, Refused, Violation

READS_PER_WAKEUP = 256  # messages taken from one channel before the loop serves others


class Handover(Protocol):
    """Where the door's admitted connections go."""

    def hand(self, transport: asyncio.Transport, client: Client, early: bytes) -> bool:
        """Give `transport` to a worker; False if none took it (the door refuses it)."""

    def settle(self) -> None:
        """Take in the closes workers reported and the door has not read yet."""

    def stress(self, stressed: bool) -> None:
        """The host entered or left stress mode: every worker's limits follow."""


class WorkerEnd:
    """The door's side of one worker process: its channel and the connections it holds."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.name = f"w{index}"
        self.channel: socket.socket | None = None
        self.held: Counter[str] = Counter()  # client key -> connections handed to it
        self.status = WorkerStatus()
        self.status_at = 0.0

    @property
    def up(self) -> bool:
        return self.channel is not None


class Channels:
    """The door's hand-over to worker processes, and what they report back."""

    def __init__(
        self,
        ends: list[WorkerEnd],
        host: HostSide,
        on_gone: Callable[[WorkerEnd], None] = lambda _end: None,
    ) -> None:
        self.ends = ends
        self.host = host
        self.on_gone = on_gone  # the supervisor restarts it
        self.loop = asyncio.get_running_loop()
        self.stressed = False

    # --- to the workers -------------------------------------------------------------

    def worker_for(self, key: str) -> WorkerEnd | None:
        """The worker every connection of `key` goes to; the next one up while it is
        being restarted (its rate tables died with it anyway)."""
        count = len(self.ends)
        first = zlib.crc32(key.encode()) % count
        for step in range(count):
            end = self.ends[(first + step) % count]
            if end.up:
                return end
        return None

    def hand(self, transport: asyncio.Transport, client: Client, early: bytes) -> bool:
        end = self.worker_for(client.key)
        sock = transport.get_extra_info("socket")
        if end is None or end.channel is None or sock is None:
            return False
        try:
            socket.send_fds(end.channel, [channel.handoff(client, early)], [sock.fileno()])
        except OSError:  # full (the worker is not reading) or gone
            return False
        end.held[client.key] += 1
        transport.abort()  # the worker holds its own descriptor now; no FIN is sent
        return True

    def stress(self, stressed: bool) -> None:
        self.stressed = stressed
        for end in self.ends:
            self._send(end, channel.stress(stressed))

    def _send(self, end: WorkerEnd, message: bytes) -> None:
        if end.channel is not None:
            with contextlib.suppress(OSError):
                end.channel.send(message)

    # --- from the workers -----------------------------------------------------------

    def attach(self, end: WorkerEnd, door_end: socket.socket) -> None:
        end.channel = door_end
        end.status, end.status_at = WorkerStatus(), self.loop.time()
        self.loop.add_reader(door_end.fileno(), self._readable, end)
        if self.stressed:
            self._send(end, channel.stress(True))

    def settle(self) -> None:
        for end in self.ends:
            self._readable(end)

    def _readable(self, end: WorkerEnd) -> None:
        for _ in range(READS_PER_WAKEUP):
            door_end = end.channel
            if door_end is None:
                return
            try:
                message = door_end.recv(channel.MAX_STATUS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            if not message:
                self.gone(end)
                return
            self._on_message(end, message)

    def _on_message(self, end: WorkerEnd, message: bytes) -> None:
        kind = message[:1]
        if kind == channel.CLOSED:
            key = message[1:].decode(errors="replace")
            if end.held[key] > 0:  # never below what it was given
                end.held[key] -= 1
                if not end.held[key]:
                    del end.held[key]
                self.host.released(key)
        elif kind == channel.EVENTS:
            self._events(channel.payload(message))
        elif kind == channel.BAN:
            self._ban(channel.payload(message))
        elif kind == channel.STATUS:
            status = channel.read_status(message)
            if status is not None:
                end.status, end.status_at = status, self.loop.time()

    def _events(self, batch: object) -> None:
        if not isinstance(batch, list):
            return
        for event in batch[: channel.MAX_EVENTS]:
            match event:
                case ["r", str(key), str(reason)] if reason in Refused.__members__.values():
                    self.host.refused(key, Refused(reason))
                case ["s", str(key), int(size)]:
                    self.host.stored(key, size)
                case ["v", str(key)]:
                    self.host.vouched(key)
                case ["x", str(key)]:
                    self.host.violated(key)

    def _ban(self, ban: object) -> None:
        if not isinstance(ban, dict):
            return
        key, why, ttl = ban.get("key"), ban.get("reason"), ban.get("ttl")
        if isinstance(key, str) and isinstance(ttl, int | float) and isinstance(why, str):
            reason: BanReason | None = None
            if why in Violation.__members__.values():
                reason = Violation(why)
            elif why in Refused.__members__.values():
                reason = Refused(why)
            if reason is not None:
                self.host.ban(key, reason, float(ttl))

    def gone(self, end: WorkerEnd) -> None:
        """Its connections died with it: every slot it held is given back at once."""
        if end.channel is not None:
            self.loop.remove_reader(end.channel.fileno())
            end.channel.close()
            end.channel = None
        given = sum(end.held.values())
        for key, count in end.held.items():
            for _ in range(count):
                self.host.released(key)
        end.held.clear()
        end.status = WorkerStatus(reason="restarting")
        emit("worker_gone", worker=end.name, slots=given)
        self.on_gone(end)

    def close(self) -> None:
        for end in self.ends:
            if end.channel is not None:
                self.loop.remove_reader(end.channel.fileno())
                end.channel.close()
                end.channel = None
