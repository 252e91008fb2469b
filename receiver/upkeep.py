"""The receiver's periodic work: store probe and indexes, retention sweep, live statistics,
certificate reload and the summary log, each a `Job` of receiver.housekeeping.

Everything published here is keyed by the receiver's id (`receiver`): its statistics
document, its probe's name and its sweep lease, so that the workers of one host never
share (or delete) one another's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from receiver.runtime.jobs import Job
from receiver.smtp.tls import Certificates
from receiver.telemetry.events import emit
from receiver.telemetry.recorder import Telemetry

HEALTH_INTERVAL = 2.0
STATS_INTERVAL = 5.0  # live statistics published this often (receiver.telemetry.stats)
SWEEP_INTERVAL = 30.0  # expired mail leaves the store within about this long
SWEEP_LEASE = 3 * SWEEP_INTERVAL  # a dead sweeper's lease passes to another receiver
TLS_RELOAD_INTERVAL = 2.0  # certificate files are checked this often
SUMMARY_TICK = 1.0  # the summary log looks this often (it logs once per its own interval)


class UpkeepStore(Protocol):
    """What the periodic jobs ask of the store."""

    async def probe(self, name: str, within: float) -> str | None: ...

    async def ensure_indexes(self) -> None: ...

    async def sweep_expired(self, holder: str, lease: float) -> int | None: ...

    async def publish_stats(self, snapshot: dict[str, object], within: float) -> None: ...


class Upkeep:
    """The periodic jobs of one receiver (worker), named by its id."""

    def __init__(
        self,
        receiver: str,
        store: UpkeepStore,
        telemetry: Telemetry,
        stats: Callable[[], dict[str, object]],
        *,
        store_timeout: float,
        certificates: Certificates | None = None,
    ) -> None:
        self.receiver = receiver
        self.store = store
        self.telemetry = telemetry
        self.stats = stats
        self.store_timeout = store_timeout
        self.certificates = certificates
        self._indexes_ensured = False

    @property
    def holder(self) -> str:
        """The name its probe document and sweep lease are held under."""
        return f"receiver {self.receiver}"

    def jobs(self) -> list[Job]:
        """The periodic jobs, each on its own clock (receiver.runtime.jobs)."""

        def up() -> bool:
            return self.telemetry.store_health.up is True

        jobs = [
            # The store is judged by writes before mail hits it; indexes once it answers.
            Job("store-probe", HEALTH_INTERVAL, self.check_store),
            # Retention on every store, one receiver at a time (a lease in the store).
            Job("retention-sweep", SWEEP_INTERVAL, self.sweep, up, first_delay=HEALTH_INTERVAL),
            Job("live-stats", STATS_INTERVAL, self.publish_stats, up),
            Job("log-summary", SUMMARY_TICK, self._flush_summary),
        ]
        if self.certificates is not None:
            jobs.append(Job("tls-reload", TLS_RELOAD_INTERVAL, self._reload_tls))
        return jobs

    async def check_store(self) -> None:
        """Probe the store with one durable write, under the insert deadline; once it
        answers, make sure its indexes (inbox listing, TTL retention) exist."""
        health = self.telemetry.store_health
        reason = await self.store.probe(self.holder, self.store_timeout)
        health.record(reason is None, reason or "")
        if reason is None and not self._indexes_ensured:
            try:
                await self.store.ensure_indexes()
            except Exception as error:  # retried at the next probe
                emit("indexes_not_ensured", error=type(error).__name__)
            else:
                self._indexes_ensured = True

    async def publish_stats(self) -> None:
        """One small document, replaced every few seconds; never per connection."""
        try:
            await self.store.publish_stats(self.stats(), self.store_timeout)
        except Exception as error:  # the next round tries again; health has the outage
            emit("stats_not_published", error=type(error).__name__)

    async def sweep(self) -> None:
        try:
            deleted = await self.store.sweep_expired(self.holder, SWEEP_LEASE)
        except Exception as error:  # the next sweep tries again
            emit("retention_sweep_failed", error=type(error).__name__)
            return
        if deleted:
            self.telemetry.metrics.expired.inc(deleted)
            emit("retention_swept", deleted=deleted)

    async def _flush_summary(self) -> None:
        self.telemetry.summary.flush()  # logs only once its own interval has passed

    async def _reload_tls(self) -> None:
        if self.certificates is not None and self.certificates.reload_if_changed():
            emit("tls_reloaded", cert=str(self.certificates.settings.cert))
