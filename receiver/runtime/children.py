"""A host's worker processes: started with their end of a channel, watched, restarted when
they die (their slots were given back the moment their channel closed), stopped with the
host. A worker that keeps dying stops the host: restarting it for ever would hide the fault
from the host's own supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
from collections.abc import Callable

import processes
from receiver.door import channel
from receiver.door.handover import Channels, WorkerEnd
from receiver.runtime.config import ReceiverConfig
from receiver.telemetry.events import emit

Spawn = Callable[[int, socket.socket], subprocess.Popen[bytes]]
WATCH_INTERVAL = 0.5


class WorkersFailed(RuntimeError):
    """A worker of the host kept dying: restarting it again would hide the fault."""


class WorkerProcesses:
    """The worker processes behind one door's `Channels`."""

    def __init__(self, config: ReceiverConfig, spawn: Spawn, channels: Channels) -> None:
        self.config = config
        self.spawn = spawn
        self.channels = channels
        channels.on_gone = self._gone
        self.loop = asyncio.get_running_loop()
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.failed = False
        self.failure = ""
        self._stop: asyncio.Event | None = None
        policy = processes.RestartPolicy(delay=config.intervals.worker_restart_delay)
        self._budgets = {end.index: processes.RestartBudget(policy) for end in channels.ends}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, stop: asyncio.Event) -> None:
        self._stop = stop
        for end in self.channels.ends:
            self._start(end)
        self._keep(self.loop.create_task(self._watch(), name="workers-watch"))

    def _start(self, end: WorkerEnd) -> None:
        door_end, worker_end = channel.pair()
        try:
            process = self.spawn(end.index, worker_end)
        finally:
            worker_end.close()  # the worker has its own copy
        self.processes[end.index] = process
        self.channels.attach(end, door_end)
        emit("worker_spawned", worker=end.name, pid=process.pid)

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _gone(self, end: WorkerEnd) -> None:
        process = self.processes.pop(end.index, None)
        if process is not None and process.poll() is None:
            process.kill()  # a channel closed under a live process: it cannot serve
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(1.0)
        if self.stopping:
            return
        budget = self._budgets[end.index]
        if budget.died():
            self._keep(self.loop.create_task(self._restart(end, budget.policy.delay)))
            return
        emit("worker_keeps_dying", worker=end.name, deaths=budget.deaths)
        self.failed = True
        policy = budget.policy
        self.failure = f"a worker died {budget.deaths} times within {policy.window:.0f}s"
        if self._stop is not None:
            self._stop.set()

    async def _restart(self, end: WorkerEnd, delay: float) -> None:
        await asyncio.sleep(delay)
        if not self.stopping and not end.up:
            self._start(end)

    async def _watch(self) -> None:
        """A worker that exited is gone even if its channel has not said so yet."""
        while not self.stopping:
            for end in self.channels.ends:
                process = self.processes.get(end.index)
                if end.up and process is not None and process.poll() is not None:
                    self.channels.gone(end)
            await asyncio.sleep(WATCH_INTERVAL)

    async def stop(self, within: float) -> None:
        """SIGTERM every worker (each drains its sessions), then SIGKILL at the deadline."""
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        await processes.stop_all(list(self.processes.values()), within)
        self.channels.close()
