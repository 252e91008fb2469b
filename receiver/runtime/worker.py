"""A worker: the sessions of the connections its door hands over, their intake and delivery
(store, spool, replay), and its periodic jobs.

The same object whether it runs in its host's process (a host of one worker: the door's
hand-over is `Worker.hand`) or in a worker process of its own (receiver.runtime.worker_process
adopts each socket the door sends and calls `hand`). It tells its host what the door counts
through a `HostSide`: in one process the host itself, across a channel a link that
forwards. It never judges a connection: the door did.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Protocol

from prometheus_client import generate_latest

from mailstore.message import MessageDocument
from receiver import replies
from receiver.delivery.deliver import Delivery
from receiver.delivery.mailboxes import MailboxKeeper
from receiver.delivery.replay import Replay, ReplayConfig
from receiver.delivery.spool import Spool, segment_paths
from receiver.door.channel import WorkerStatus
from receiver.door.client import Client, HostSide
from receiver.intake.authcheck import AuthChecker
from receiver.intake.message import Intake
from receiver.resolver import Resolver
from receiver.runtime.config import ReceiverConfig, SpoolSettings
from receiver.runtime.jobs import Jobs, WorkerJobs
from receiver.smtp import MemoryBudget, Policy, Session, SessionContext, Wire
from receiver.smtp.tls import Certificates, Handshakes
from receiver.telemetry.dialogue import WorkerTelemetry
from receiver.telemetry.events import emit
from receiver.vocabulary import Closed, ReplayOutcome

SPOOL_ROOM = 64 * 1024  # bytes a spool must still take to call the worker ready


class WorkerStore(Protocol):
    """What a worker asks of the store."""

    @property
    def pending(self) -> int: ...

    async def insert(self, message: MessageDocument) -> str: ...

    async def probe(self, name: str, within: float) -> str | None: ...

    async def ensure_indexes(self) -> None: ...

    async def sweep_expired(self, holder: str, lease: float) -> int | None: ...

    async def trim_mailbox(self, address: str, keep: int) -> int: ...


class BlocklistView(Protocol):
    """What the sessions need from the blocklist: memory-only checks."""

    def is_blocked(self, ip: str) -> bool: ...

    def generation(self) -> int: ...


class Worker:
    """See the module docstring."""

    def __init__(
        self,
        config: ReceiverConfig,
        index: int,
        store: WorkerStore,
        blocklist: BlocklistView,
        host: HostSide,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.config = config
        self.index = index
        self.name = f"w{index}"
        self.id = config.worker_id(index)
        self.store = store
        self.loop = loop
        self.draining = False
        limits = config.limits
        self.telemetry = WorkerTelemetry(config.log_summary_interval, host)
        self.policy = Policy(
            limits,
            is_blocked=blocklist.is_blocked,
            generation=blocklist.generation,
            clock=loop.time,
            on_ban=host.ban,
            on_violation=host.violated,
        )
        self.budget = MemoryBudget(limits.max_data_memory)
        self.spool_settings = config.spool_for(index)
        self.spool = _spool(self.spool_settings)
        mailboxes = MailboxKeeper(limits.mailbox_max_messages, store.trim_mailbox, loop.create_task)
        self.delivery = Delivery(
            store, self.telemetry, loop.time, spool=self.spool, mailboxes=mailboxes
        )
        self.auth = self._auth()
        self.intake = Intake(config.hostname, self.delivery, self.telemetry, loop, self.auth)
        self.certificates = Certificates(config.tls) if config.tls is not None else None
        self.sessions: set[Session] = set()
        self.context = SessionContext(
            hostname=config.hostname,
            domains=config.domains,
            policy=self.policy,
            intake=self.intake,
            events=self.telemetry,
            host=host,
            budget=self.budget,
            clock=loop,
            bare_newline=config.bare_newline,
            sessions=self.sessions,
            tls=self._handshakes(),
        )
        self.wire = Wire(self.context)
        self.jobs = Jobs(
            WorkerJobs(
                self.id,
                store,
                self.delivery.health,
                self.telemetry.summary,
                config.intervals,
                store_timeout=config.store_timeout,
                on_expired=self.telemetry.metrics.expired.inc,
                certificates=self.certificates,
            ).jobs()
        )
        self._replayer: asyncio.Task[None] | None = None
        self._gauges()

    def _auth(self) -> AuthChecker | None:
        """The authentication checks, on a resolver of their own: None, and no DNS at
        all, unless configured."""
        if self.config.auth is None:
            return None
        limits = self.config.limits
        resolver = Resolver(
            self.config.dns_servers,
            max_in_flight=limits.dns_max_in_flight,
            rate=limits.dns_rate,
            case_randomised=self.config.dns_0x20,
        )
        return AuthChecker(self.config.auth, resolver, self.telemetry.metrics.registry)

    def _handshakes(self) -> Handshakes | None:
        if self.certificates is None:
            return None
        limits = self.config.limits
        return Handshakes(
            self.certificates,
            max_total=limits.tls_max_handshakes,
            max_per_client=limits.tls_max_handshakes_per_ip,
            max_per_network=limits.tls_max_handshakes_per_network,
            timeout=limits.tls_handshake_timeout,
            hello_timeout=limits.tls_hello_timeout,
            take_rate=self.policy.handshake,
        )

    def _gauges(self) -> None:
        m = self.telemetry.metrics
        health = self.delivery.health
        m.sessions.set_function(lambda: len(self.sessions))
        m.store_up.set_function(lambda: 1 if health.up else 0)
        m.store_pending.set_function(lambda: self.store.pending)
        m.data_memory.set_function(lambda: self.budget.used)
        spool = self.spool
        if spool is not None:
            m.spool_messages.set_function(lambda: spool.messages)
            m.spool_bytes.set_function(lambda: spool.bytes)
            m.spool_oldest.set_function(spool.oldest_age)

    # --- from the door --------------------------------------------------------------

    def hand(self, transport: asyncio.Transport, client: Client, early: bytes) -> bool:
        """An admitted connection becomes a session; it writes the banner at once."""
        session = Session(self.context, self.wire, client)
        transport.set_protocol(session)
        session.connection_made(transport)
        if early:  # what the client sent before its banner (with its PROXY header)
            session.data_received(early)
        return True

    def settle(self) -> None:
        """Nothing to take in: in one process every close reaches the door at once."""

    def stress(self, stressed: bool) -> None:
        """Stress as the door decided it from every connection of the host."""
        if stressed == self.policy.stressed:
            return
        self.policy.stressed = stressed
        if stressed:
            for session in list(self.sessions):
                session.rearm_for_stress()

    # --- what it says about itself --------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """Whether mail can be taken: the store writes, or the spool takes it meanwhile."""
        if self.draining:
            return False, "shutting down"
        health = self.delivery.health
        if health.up is True:
            return True, "ready"
        store = f"store not taking writes: {health.reason}"
        spool = self.spool
        if spool is None:
            return False, store
        if spool.failing:
            return False, f"{store}; spool failing: {spool.failure}"
        full = spool.full_reason(SPOOL_ROOM)
        if full is not None:
            return False, f"{store}; spool {full}"
        return True, f"ready, {store}"

    def status(self, metrics: bool = False) -> WorkerStatus:
        ready, reason = self.ready()
        health = self.delivery.health
        spool = self.spool
        held = None
        if spool is not None:
            held = {
                "messages": spool.messages,
                "bytes": spool.bytes,
                "oldest_s": round(spool.oldest_age(), 1),
            }
        exposition = generate_latest(self.telemetry.metrics.registry).decode() if metrics else ""
        return WorkerStatus(
            ready, reason, health.up, health.reason, held, self.store.pending, exposition
        )

    # --- lifecycle ------------------------------------------------------------------

    async def start(self, stop: asyncio.Event) -> None:
        """Before the first hand-over: the spool's leftovers counted and replayed, the
        periodic jobs, and the verification workers (never started during a message)."""
        if self.spool is not None:
            self.spool.open()  # what an earlier run (or crash) left: replay takes it
            self.spool.start()
            self._replayer = self.loop.create_task(self._replay(stop), name="spool-replay")
        self.jobs.start(stop)
        if self.auth is not None:
            await self.auth.open()

    async def _replay(self, stop: asyncio.Event) -> None:
        """Drain the spool into the store whenever the store takes writes again, and any
        spool left by another worker count until it is empty."""
        settings = self.spool_settings
        assert self.spool is not None and settings is not None
        replayed = {o: self.telemetry.metrics.replayed.labels(o) for o in ReplayOutcome}
        intervals = self.config.intervals
        config = ReplayConfig(
            rate=settings.replay_rate, idle=intervals.replay_idle, backoff=intervals.replay_backoff
        )

        def replay_of(spool: Spool) -> Replay:
            return Replay(
                spool,
                self.store,
                config,
                on_outcome=lambda outcome, n: replayed[outcome].inc(n),
                on_stored=self.delivery.stored,
                on_damaged=self.telemetry.metrics.spool_damaged.inc,
            )

        def store_up() -> bool:
            return self.delivery.health.up is True

        async def adopted(directory: Path) -> None:
            orphan = Spool(directory, max_bytes=1 << 50, min_free=0)
            await asyncio.to_thread(orphan.open)  # never started: nothing appends to it
            emit("spool_adopted", directory=str(directory), messages=orphan.messages)
            await replay_of(orphan).run(store_up, stop, until_empty=True)

        await asyncio.gather(
            replay_of(self.spool).run(store_up, stop),
            *(
                adopted(directory)
                for directory in settings.adopt
                if directory != self.spool.directory and segment_paths(directory)
            ),
        )

    async def drain(self, grace: float) -> None:
        """Close idle sessions now; let sessions in a DATA transaction finish (bounded)."""
        self.draining = True
        deadline = time.monotonic() + grace
        while self.sessions and time.monotonic() < deadline:
            for session in list(self.sessions):
                if not session.in_transaction:
                    session.close_with(replies.SHUTTING_DOWN, Closed.SHUTDOWN)
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.close_with(replies.SHUTTING_DOWN, Closed.SHUTDOWN)
        await asyncio.sleep(0)

    async def close(self) -> None:
        """After the drain: what is left in the spool waits on disk for the next start."""
        await self.jobs.close()
        if self._replayer is not None and self.spool is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
            await self.spool.close()
        if self.auth is not None:
            await self.auth.close()
        self.telemetry.summary.flush(force=True)


def _spool(settings: SpoolSettings | None) -> Spool | None:
    if settings is None:
        return None
    return Spool(settings.directory, max_bytes=settings.max_bytes, min_free=settings.min_free)
