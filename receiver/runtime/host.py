"""A receiver host: its one door, its workers, one health endpoint, one statistics document.

The one composition root of the receiver. Whatever the number of workers it is the same
host: one door (receiver.door.gate) judges every connection and hands it over; with one
worker the worker runs in this process and the hand-over is a call, with N the workers are
processes (receiver.runtime.children) and the hand-over goes over their channels. Every
operator view is built here, once, from the door's counts and the workers' statuses:
readiness, metrics, the live-statistics document and the listening log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Protocol

from receiver.door.admission import Admission
from receiver.door.channel import WorkerStatus
from receiver.door.dnsbl import domains
from receiver.door.gate import Door, DoorConfig, Screener
from receiver.door.handover import Channels, Handover, WorkerEnd
from receiver.door.screen import REVERSE_DNS, Screen, ScreenMetrics
from receiver.resolver import Resolver
from receiver.runtime.children import Spawn, WorkerProcesses, WorkersFailed
from receiver.runtime.config import ReceiverConfig
from receiver.runtime.health import HealthServer
from receiver.runtime.jobs import SUMMARY_TICK, Job, Jobs
from receiver.runtime.worker import Worker, WorkerStore
from receiver.smtp.tls import TlsSettings
from receiver.telemetry.door import DoorTelemetry
from receiver.telemetry.events import emit
from receiver.telemetry.host_metrics import WorkerSources, host_registry
from receiver.telemetry.stats import snapshot
from receiver.vocabulary import BanReason, Refused


class HostStore(WorkerStore, Protocol):
    """What a host asks of the store: its workers' needs and the statistics document."""

    async def publish_stats(self, snapshot: dict[str, object], within: float) -> None: ...

    async def withdraw_stats(self, receiver: str, within: float) -> None: ...


class Blocklist(Protocol):
    """The host's blocklist: memory-only checks, freshness, and the one writer of bans."""

    def is_blocked(self, ip: str) -> bool: ...

    def staleness(self) -> float: ...

    def entries(self) -> int: ...

    def ban(self, key: str, reason: str, ttl: float) -> None: ...

    def generation(self) -> int: ...


class Allowlist(Protocol):
    def is_allowed(self, ip: str) -> bool: ...

    def staleness(self) -> float: ...

    def entries(self) -> int: ...


class Host:
    """See the module docstring; also the `HostSide` every worker reports to."""

    def __init__(
        self,
        config: ReceiverConfig,
        store: HostStore,
        blocklist: Blocklist,
        allowlist: Allowlist,
        spawn: Spawn | None = None,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        screen: Screener | None = None,
    ) -> None:
        """`loop` and `screen` default to the running loop and the configured screen;
        tests hand in a fake clock and a fake screen."""
        self.config = config
        self.store = store
        self.blocklist = blocklist
        self.allowlist = allowlist
        self.loop = loop or asyncio.get_running_loop()
        self.telemetry = DoorTelemetry(config.log_summary_interval)
        self.admission = Admission(
            config.limits,
            is_blocked=blocklist.is_blocked,
            is_allowed=allowlist.is_allowed,
            clock=self.loop.time,
            on_ban=self.ban,
            on_stress=self._stress,
        )
        self.screen = self._screen()
        screener: Screener | None = screen or self.screen
        self.worker: Worker | None = None
        self.processes: WorkerProcesses | None = None
        handover: Handover
        if config.workers == 1:
            self.worker = Worker(config, 1, store, blocklist, self, self.loop)
            handover = self.worker
        else:
            assert spawn is not None, "worker processes need a way to start them"
            ends = [WorkerEnd(i) for i in range(1, config.workers + 1)]
            channels = Channels(ends, self)
            self.processes = WorkerProcesses(config, spawn, channels)
            handover = channels
        self.handover = handover
        door = DoorConfig(
            config.hostname,
            config.trusted_proxies if config.proxy_protocol else (),
            config.proxy_timeout,
        )
        self.door = Door(door, self.admission, self.telemetry, handover, self.loop, screener)
        self._gauges()
        self.health = HealthServer(
            host_registry(self.telemetry.metrics.registry, self._metric_sources), self.ready
        )

    def _screen(self) -> Screen | None:
        """The checks before the banner: None (no DNS at all) unless configured."""
        config = self.config.screen
        if not config.active:
            return None
        limits = self.config.limits
        resolver = Resolver(
            self.config.dns_servers,
            max_in_flight=limits.dns_max_in_flight,
            rate=limits.dns_rate,
            case_randomised=self.config.dns_0x20,
        )
        registry = self.telemetry.metrics.registry
        metrics = ScreenMetrics(registry, (*domains(config.sites), REVERSE_DNS))
        return Screen(config, resolver, metrics, self.loop.time)

    def _gauges(self) -> None:
        m = self.telemetry.metrics
        m.open.set_function(lambda: self.admission.counts.total)
        m.stress.set_function(lambda: 1 if self.admission.stressed else 0)
        m.blocklist_staleness.set_function(self.blocklist.staleness)
        m.blocklist_entries.set_function(self.blocklist.entries)
        m.allowlist_staleness.set_function(self.allowlist.staleness)
        m.allowlist_entries.set_function(self.allowlist.entries)

    # --- what the workers say (HostSide) --------------------------------------------

    def released(self, key: str) -> None:
        self.admission.release(key)

    def refused(self, key: str, reason: Refused) -> None:
        self.telemetry.dialogue_refused(key, reason)

    def stored(self, key: str, size: int) -> None:
        self.telemetry.stored(key, size)

    def vouched(self, key: str) -> None:
        self.admission.vouch(key)

    def violated(self, key: str) -> None:
        self.admission.forfeit(key)

    def ban(self, key: str, reason: BanReason, ttl: float) -> None:
        """One writer per host: its blocklist (its cache at once, then the store)."""
        self.telemetry.ban(key, reason, ttl)
        self.blocklist.ban(key, str(reason), ttl)

    def _stress(self, stressed: bool, connections: int) -> None:
        self.telemetry.stress(stressed, connections)
        self.handover.stress(stressed)

    # --- the operator's views -------------------------------------------------------

    def statuses(self) -> list[tuple[str, WorkerStatus, bool, float]]:
        """Each worker: its name, last status, whether it is up, and the status's age."""
        if self.worker is not None:
            return [(self.worker.name, self.worker.status(), True, 0.0)]
        assert self.processes is not None
        now = self.loop.time()
        return [
            (end.name, end.status, end.up, now - end.status_at)
            for end in self.processes.channels.ends
        ]

    def _metric_sources(self) -> WorkerSources:
        if self.worker is not None:
            return [(self.worker.name, self.worker.telemetry.metrics.registry)]
        assert self.processes is not None
        return [(end.name, end.status.metrics) for end in self.processes.channels.ends]

    def ready(self) -> tuple[bool, str]:
        """Ready when the host's lists are fresh and every worker can take mail; the
        reason says why not, or what the workers hold on disk meanwhile."""
        if self.door.draining:
            return False, "shutting down"
        silent = self.config.intervals.worker_silent_after
        reasons: list[str] = []
        # The workers first: a store that cannot be reached is the cause, and lists that
        # cannot sync from it only a consequence.
        for name, status, up, age in self.statuses():
            if not up:
                return False, f"{name}: {status.reason}"
            if age > silent:
                return False, f"{name}: no status for {age:.0f}s"
            if not status.ready:
                return False, _named(name, status.reason, self.config.workers)
            reasons.append(status.reason)
        for name, access in (("blocklist", self.blocklist), ("allowlist", self.allowlist)):
            staleness = access.staleness()
            if staleness > self.config.blocklist_max_staleness:
                return False, self._stale_because(f"{name} {_stale(staleness)}")
        reason = reasons[0] if len(set(reasons)) == 1 else "; ".join(sorted(set(reasons)))
        spool = self._spool()
        # Whenever the store is not taking writes, say what waits for it, even none.
        if spool is not None and (spool["messages"] or self._store()[0] is not True):
            reason += (
                f"; spooling: {spool['messages']:.0f} messages, oldest {spool['oldest_s']:.0f}s"
            )
        return True, reason

    def _stale_because(self, stale: str) -> str:
        """A list too stale to trust, after its cause when the workers know it: with the
        spool on, a worker whose store takes no writes is still ready, and the lists that
        cannot sync from that store would otherwise be named alone (a wrong URI read as
        "blocklist never synced")."""
        up, reason = self._store()
        if up is False:
            return f"store not taking writes: {reason}; {stale}"
        return stale

    def _spool(self) -> dict[str, float] | None:
        """What every worker's spool holds, summed (None: the spool is off)."""
        held = [status.spool for _, status, _, _ in self.statuses() if status.spool is not None]
        if not held and self.config.spool is None:
            return None
        return {
            "messages": sum(s.get("messages", 0) for s in held),
            "bytes": sum(s.get("bytes", 0) for s in held),
            "oldest_s": max((s.get("oldest_s", 0) for s in held), default=0.0),
        }

    def _store(self) -> tuple[bool | None, str]:
        """The store as every worker sees it: down if one says so, up if all do."""
        states = [(status.store_up, status.store_reason) for _, status, _, _ in self.statuses()]
        for up, reason in states:
            if up is False:
                return False, reason
        if states and all(up is True for up, _ in states):
            return True, "ready"
        return None, next((r for up, r in states if up is None and r), "no answer yet")

    def stats_snapshot(self) -> dict[str, object]:
        """The host's one live-statistics document (receiver.telemetry.stats)."""
        store_up, store_reason = self._store()
        return snapshot(
            self.telemetry.live,
            receiver=self.config.host_id,
            open_counts=self.admission.counts.per_key,
            open_total=self.admission.counts.total,
            stressed=self.admission.stressed,
            store_up=store_up,
            store_reason=store_reason,
            accepted_total=self.telemetry.accepted_total,
            spool=self._spool(),
        )

    async def _publish(self) -> None:
        """One small document, replaced every few seconds; never per connection."""
        try:
            await self.store.publish_stats(self.stats_snapshot(), self.config.store_timeout)
        except Exception as error:  # the next round tries again; health has the outage
            emit("stats_not_published", error=type(error).__name__)

    async def _summary(self) -> None:
        self.telemetry.summary.flush()

    # --- lifecycle ------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Serve SMTP until `stop` is set, then drain and return; raise `WorkersFailed`
        if a worker process kept dying (the process then exits non-zero)."""
        config = self.config
        if self.worker is not None:
            await self.worker.start(stop)
        if self.processes is not None:
            self.processes.start(stop)
        if self.screen is not None:
            await self.screen.resolver.open()
        server = await self.loop.create_server(
            self.door.gate, config.smtp_host, config.smtp_port, backlog=4096, reuse_address=True
        )
        await self.health.start(config.http_host, config.http_port)
        jobs = Jobs(self._jobs())
        jobs.start(stop)
        emit(
            "receiver_listening",
            smtp=f"{config.smtp_host}:{config.smtp_port}",
            http=f"{config.http_host}:{config.http_port}",
            hostname=config.hostname,
            starttls=tls_summary(config.tls),
            workers=config.workers,
        )
        await stop.wait()
        emit("receiver_stopping", connections=self.admission.counts.total)
        # The listener stays open through the grace: newcomers hear 421 4.3.2 and retry
        # elsewhere at once, instead of "connection refused" or a timeout.
        self.door.drain()
        if self.worker is not None:
            await self.worker.drain(config.shutdown_grace)
        if self.processes is not None:
            await self.processes.stop(config.shutdown_grace + 5.0)
        server.close()
        with contextlib.suppress(Exception):  # gone from the operators' view at once
            await self.store.withdraw_stats(config.host_id, 1.0)
        await jobs.close()
        if self.worker is not None:
            await self.worker.close()
        if self.screen is not None:
            self.screen.resolver.close()
        self.telemetry.summary.flush(force=True)
        await self.health.close()
        if self.processes is not None and self.processes.failed:
            raise WorkersFailed(self.processes.failure)

    def _jobs(self) -> list[Job]:
        jobs = [
            Job("live-stats", self.config.intervals.stats_interval, self._publish),
            Job("log-summary", SUMMARY_TICK, self._summary),
        ]
        if self.screen is not None:
            screen = self.screen
            interval = self.config.log_summary_interval

            async def report() -> None:
                fields = screen.summary()
                if fields is not None:
                    emit("screen_summary", **fields)

            jobs.append(Job("screen-summary", interval, report, first_delay=interval))
        return jobs


def _stale(seconds: float) -> str:
    """How stale a list is, never `inf`: a list never synced says so."""
    if seconds == float("inf"):
        return "never synced from the store"
    return f"stale for {seconds:.0f}s"


def _named(name: str, reason: str, workers: int) -> str:
    return f"{name}: {reason}" if workers > 1 else reason


def tls_summary(tls: TlsSettings | None) -> str:
    if tls is None:
        return "off"
    return f"self-signed:{tls.cert}" if tls.self_signed else str(tls.cert)


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_host(
    config: ReceiverConfig,
    store: HostStore,
    blocklist: Blocklist,
    allowlist: Allowlist,
    stop: asyncio.Event,
    spawn: Spawn | None = None,
) -> None:
    """Build the host and serve until `stop` is set."""
    await Host(config, store, blocklist, allowlist, spawn).serve(stop)


__all__ = ["Host", "HostStore", "install_signal_handlers", "run_host"]
