"""A host of N workers: the gate (receiver.host), its workers' processes, one health
endpoint and one statistics document for the gate.

The gate process owns what exists once per host: the SMTP socket, the accountant that
counts connections for every worker, the blocklist's and allowlist's snapshot files (the
only writer), the auto-bans (written once, whichever worker decided them), /healthz,
/readyz and /metrics. Workers are started by `spawn` (the caller's command line), each
with its end of a channel; one that exits or stops answering is restarted after
`RESTART_DELAY`, and its slots were given back the moment its channel closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
from collections.abc import Callable

from receiver.door import channel
from receiver.door.accountant import Accountant
from receiver.door.admission import Admission
from receiver.host import HostGate, WorkerEnd
from receiver.runtime.health import HealthServer
from receiver.runtime.jobs import Housekeeping, Job
from receiver.server import (
    AllowlistView,
    BlocklistView,
    MessageSink,
    ReceiverConfig,
    default_receiver_id,
    tls_summary,
)
from receiver.telemetry.events import emit
from receiver.telemetry.host_metrics import host_registry
from receiver.telemetry.recorder import Telemetry
from receiver.telemetry.stats import snapshot
from receiver.upkeep import STATS_INTERVAL, SUMMARY_TICK
from receiver.worker import STATUS_INTERVAL

Spawn = Callable[[int, socket.socket], subprocess.Popen[bytes]]
RESTART_DELAY = 0.5  # seconds before a dead worker's successor starts
MAX_RESTARTS = 5  # deaths of one worker within RESTART_WINDOW, then the host stops:
RESTART_WINDOW = 60.0  # a worker that cannot live is a fault for its supervisor to see
SILENT_AFTER = 5 * STATUS_INTERVAL  # a worker this long without a status is not ready
WATCH_INTERVAL = 0.5


def worker_id(config: ReceiverConfig, index: int) -> str:
    """Worker `index`'s receiver id: its host's id plus `/w<index>`."""
    return f"{default_receiver_id(config)}/w{index}"


class Host:
    """The gate process of a host with `workers` workers."""

    def __init__(
        self,
        config: ReceiverConfig,
        workers: int,
        spawn: Spawn,
        store: MessageSink,
        blocklist: BlocklistView,
        allowlist: AllowlistView,
    ) -> None:
        self.config = config
        self.spawn = spawn
        self.store = store
        self.blocklist = blocklist
        self.allowlist = allowlist
        self.loop = asyncio.get_running_loop()
        self.telemetry = Telemetry(config.log_summary_interval)
        self.name = f"{default_receiver_id(config)}/gate"
        limits = config.limits
        self.admission = Admission(
            limits,
            is_blocked=blocklist.is_blocked,
            is_allowed=allowlist.is_allowed,
            generation=blocklist.generation,
            on_ban=self._ban,
            on_stress=self._stress,
            accountant=Accountant.local(limits.autoban_window, limits.rate_clients, self.loop.time),
        )
        self.ends = [WorkerEnd(i + 1) for i in range(workers)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        trusted = config.trusted_proxies if config.proxy_protocol else ()
        self.gate = HostGate(
            self.admission,
            self.telemetry,
            self.ends,
            trusted_proxies=trusted,
            proxy_timeout=config.proxy_timeout,
            on_ban=self._ban,
            on_worker_gone=self._gone,
        )
        self.stopping = False
        self.failed = False  # a worker kept dying: the host stopped for its supervisor
        self._stop: asyncio.Event | None = None
        self._deaths: dict[int, list[float]] = {}
        self._restarts: set[asyncio.Task[None]] = set()
        m = self.telemetry.metrics
        m.open.set_function(lambda: self.admission.counts.total)
        m.stress.set_function(lambda: 1 if self.admission.stressed else 0)
        m.blocklist_staleness.set_function(blocklist.staleness)
        m.blocklist_entries.set_function(blocklist.entries)
        m.allowlist_staleness.set_function(allowlist.staleness)
        m.allowlist_entries.set_function(allowlist.entries)
        registry = host_registry(m.registry, self._worker_metrics)
        self.health = HealthServer(registry, self.ready)

    # --- workers --------------------------------------------------------------------

    def start_worker(self, end: WorkerEnd) -> None:
        gate_end, worker_end = channel.pair()
        try:
            process = self.spawn(end.index, worker_end)
        finally:
            worker_end.close()  # the worker has its own copy
        self.processes[end.index] = process
        self.gate.attach(end, gate_end)
        emit("worker_spawned", worker=end.name, pid=process.pid)

    def _gone(self, end: WorkerEnd) -> None:
        process = self.processes.pop(end.index, None)
        if process is not None and process.poll() is None:
            process.kill()  # a channel closed under a live process: it cannot serve
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(1.0)
        if self.stopping:
            return
        now = self.loop.time()
        deaths = [t for t in self._deaths.get(end.index, []) if now - t < RESTART_WINDOW]
        self._deaths[end.index] = [*deaths, now]
        if len(deaths) >= MAX_RESTARTS:
            emit("worker_keeps_dying", worker=end.name, deaths=len(deaths) + 1)
            self.failed = True
            if self._stop is not None:
                self._stop.set()
        else:
            task = self.loop.create_task(self._restart(end))
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)

    async def _restart(self, end: WorkerEnd) -> None:
        await asyncio.sleep(RESTART_DELAY)
        if not self.stopping and not end.up:
            self.start_worker(end)

    async def _watch(self) -> None:
        """A worker that exited is gone even if its channel has not said so yet."""
        while not self.stopping:
            for end in self.ends:
                process = self.processes.get(end.index)
                if end.up and process is not None and process.poll() is not None:
                    self.gate.worker_gone(end)
            await asyncio.sleep(WATCH_INTERVAL)

    def _worker_metrics(self) -> list[tuple[str, str]]:
        return [(end.name, end.metrics) for end in self.ends]

    # --- the host's decisions -------------------------------------------------------

    def _ban(self, key: str, reason: str, ttl: float) -> None:
        """One writer per host: the gate's blocklist (its cache at once, then the store)."""
        self.telemetry.on_ban(key, reason, ttl)
        self.blocklist.ban(key, reason, ttl)

    def _stress(self, stressed: bool, connections: int) -> None:
        self.telemetry.on_stress(stressed, connections)
        self.gate.broadcast_stress(stressed)

    def ready(self) -> tuple[bool, str]:
        """Ready when the host's lists are fresh and every worker says it is ready."""
        if self.gate.draining:
            return False, "shutting down"
        for name, access in (("blocklist", self.blocklist), ("allowlist", self.allowlist)):
            staleness = access.staleness()
            if staleness > self.config.blocklist_max_staleness:
                return False, f"{name} stale for {staleness:.0f}s"
        now = self.loop.time()
        for end in self.ends:
            if not end.up:
                return False, f"{end.name}: {end.reason}"
            if now - end.status_at > SILENT_AFTER:
                return False, f"{end.name}: no status for {now - end.status_at:.0f}s"
            if not end.ready:
                return False, f"{end.name}: {end.reason}"
        return True, f"{self.ends[0].reason}; {len(self.ends)} workers"

    def stats_snapshot(self) -> dict[str, object]:
        """The gate's document: its refusals (the workers publish what they serve)."""
        return snapshot(
            self.telemetry.live,
            receiver=self.name,
            open_counts={},
            open_total=0,
            stressed=self.admission.stressed,
            store_up=None,
            store_reason="",
            accepted_total=0,
        )

    async def _publish(self) -> None:
        await self.store.publish_stats(self.stats_snapshot(), self.config.store_timeout)

    async def _summary(self) -> None:
        self.telemetry.summary.flush()

    # --- lifecycle ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        config = self.config
        self._stop = stop
        for end in self.ends:
            self.start_worker(end)
        self.gate.listen(config.smtp_host, config.smtp_port)
        await self.health.start(config.http_host, config.http_port)
        housekeeping = Housekeeping(
            [
                Job("live-stats", STATS_INTERVAL, self._publish),
                Job("log-summary", SUMMARY_TICK, self._summary),
            ]
        )
        housekeeping.start(stop)
        watcher = self.loop.create_task(self._watch(), name="workers-watch")
        emit(
            "receiver_listening",
            smtp=f"{config.smtp_host}:{config.smtp_port}",
            http=f"{config.http_host}:{config.http_port}",
            hostname=config.hostname,
            starttls=tls_summary(config.tls),
            workers=len(self.ends),
        )
        await stop.wait()
        emit("receiver_stopping", connections=self.admission.counts.total)
        # Newcomers hear 421 4.3.2 from the gate through the grace, as with one process.
        self.gate.draining = True
        self.stopping = True
        watcher.cancel()
        await self._stop_workers(config.shutdown_grace + 5.0)
        self.gate.close()
        with contextlib.suppress(Exception):
            await self.store.withdraw_stats(self.name, 1.0)
        await housekeeping.close()
        self.telemetry.summary.flush(force=True)
        await self.health.close()

    async def _stop_workers(self, within: float) -> None:
        for task in list(self._restarts):
            task.cancel()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = self.loop.time() + within
        while self.loop.time() < deadline:
            if all(p.poll() is not None for p in self.processes.values()):
                break
            await asyncio.sleep(0.05)
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(5.0)


async def run_host(
    config: ReceiverConfig,
    workers: int,
    spawn: Spawn,
    store: MessageSink,
    blocklist: BlocklistView,
    allowlist: AllowlistView,
    stop: asyncio.Event,
) -> None:
    """Serve SMTP on every worker until `stop` is set, then drain them and return;
    raise `WorkersFailed` if a worker kept dying (the process exits non-zero)."""
    host = Host(config, workers, spawn, store, blocklist, allowlist)
    await host.run(stop)
    if host.failed:
        raise WorkersFailed(f"a worker died {MAX_RESTARTS + 1} times within {RESTART_WINDOW:.0f}s")


class WorkersFailed(RuntimeError):
    """A worker of the host kept dying: restarting it again would hide the fault."""
