"""One receiver: its composition root (`ReceiverState`) and its serve/shutdown lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mailstore.message import MessageDocument
from receiver import replies
from receiver.delivery.deliver import Delivery
from receiver.delivery.mailboxes import MailboxKeeper
from receiver.delivery.replay import Replay, ReplayConfig
from receiver.delivery.spool import Spool, segment_paths
from receiver.door import dnsbl
from receiver.door.accountant import Accountant
from receiver.door.admission import Admission
from receiver.door.screen import REVERSE_DNS, Screen, ScreenConfig, ScreenMetrics
from receiver.gate import ConnectionGate, Gate, Network
from receiver.intake.authcheck import AuthChecker, AuthConfig
from receiver.limits import Limits
from receiver.resolver import Resolver
from receiver.runtime.health import HealthServer
from receiver.runtime.jobs import Housekeeping
from receiver.smtp import BareNewline, MemoryBudget, Session, SessionContext
from receiver.smtp.tls import Certificates, Handshakes, TlsSettings
from receiver.telemetry.events import REPLAY_OUTCOMES, emit
from receiver.telemetry.recorder import Telemetry
from receiver.telemetry.stats import snapshot
from receiver.upkeep import Upkeep

log = logging.getLogger("floodgate.receiver")


class MessageSink(Protocol):
    """Where accepted messages go; `insert` returns only once the message is durable."""

    @property
    def pending(self) -> int: ...

    async def insert(self, message: MessageDocument) -> str: ...

    async def probe(self, name: str, within: float) -> str | None: ...

    async def ensure_indexes(self) -> None: ...

    async def sweep_expired(self, holder: str, lease: float) -> int | None: ...

    async def trim_mailbox(self, address: str, keep: int) -> int: ...

    async def publish_stats(self, snapshot: dict[str, object], within: float) -> None: ...

    async def withdraw_stats(self, receiver: str, within: float) -> None: ...


class BlocklistView(Protocol):
    """What the receiver needs from the blocklist: memory-only checks and freshness."""

    def is_blocked(self, ip: str) -> bool: ...

    def staleness(self) -> float: ...

    def entries(self) -> int: ...

    def ban(self, key: str, reason: str, ttl: float) -> None: ...

    def generation(self) -> int: ...


class AllowlistView(Protocol):
    """What the receiver needs from the allowlist: memory-only checks and freshness."""

    def is_allowed(self, ip: str) -> bool: ...

    def staleness(self) -> float: ...

    def entries(self) -> int: ...


class _NoAllowlist:
    def is_allowed(self, ip: str) -> bool:
        return False

    def staleness(self) -> float:
        return 0.0

    def entries(self) -> int:
        return 0


@dataclass(frozen=True)
class ReceiverConfig:
    """Everything the receiver needs, resolved from settings at start-up."""

    hostname: str
    domains: frozenset[str]
    limits: Limits
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    http_host: str = "127.0.0.1"
    http_port: int = 8026
    proxy_protocol: bool = False
    trusted_proxies: tuple[Network, ...] = ()
    proxy_timeout: float = 5.0
    screen: ScreenConfig = field(default_factory=ScreenConfig)  # off unless configured
    dns_servers: tuple[tuple[str, int], ...] = ()  # the screen's resolvers
    shutdown_grace: float = 30.0
    store_timeout: float = 5.0  # the insert deadline; write probes get the same
    log_summary_interval: float = 10.0
    blocklist_max_staleness: float = 120.0
    bare_newline: BareNewline = BareNewline.REJECT
    data_dir: Path = field(default_factory=lambda: Path("var"))
    tls: TlsSettings | None = None  # STARTTLS offered when set
    spool: SpoolSettings | None = None  # None: the store away means 451
    receiver_id: str = ""  # empty: hostname and listen address (default_receiver_id)
    auth: AuthConfig | None = None  # authentication verdicts (receiver.intake.authcheck) when set


@dataclass(frozen=True)
class SpoolSettings:
    """The local spool (receiver.delivery.spool): where, how big, how fast it drains."""

    directory: Path
    max_bytes: int = 1 << 30
    min_free: int = 256 << 20  # bytes of the disk the spool never eats into
    replay_rate: float = 500.0  # messages per second into a recovering store
    # Spools no running receiver writes any more (another worker count before this start):
    # this receiver replays them beside its own, so what they hold is stored all the same.
    adopt: tuple[Path, ...] = ()


class ReceiverState:
    """The composition root of one receiver: wires the gate (receiver.gate), telemetry
    (receiver.telemetry), the periodic jobs (receiver.upkeep) and the session engine, and
    holds what spans them: readiness, the spool's replay and the drain at shutdown.

    Sessions see none of this directly: they read the immutable `SessionContext` built
    here, and report through its `Events` (the telemetry).
    """

    def __init__(
        self,
        config: ReceiverConfig,
        store: MessageSink,
        blocklist: BlocklistView,
        loop: asyncio.AbstractEventLoop,
        allowlist: AllowlistView | None = None,
        accountant: Accountant | None = None,
        local_stress: bool = True,
    ) -> None:
        self.config = config
        self.loop = loop
        self.store = store
        self.blocklist = blocklist
        self.allowlist = allowlist or _NoAllowlist()
        self.telemetry = Telemetry(config.log_summary_interval)
        self.metrics = self.telemetry.metrics
        self.sessions: set[Session] = set()
        self.admission = Admission(
            config.limits,
            is_blocked=blocklist.is_blocked,
            is_allowed=self.allowlist.is_allowed,
            generation=blocklist.generation,
            on_ban=self._on_ban,
            on_stress=self._on_stress,
            accountant=accountant,
            local_stress=local_stress,
        )
        self.data_budget = MemoryBudget(config.limits.max_data_memory)
        self.spool: Spool | None = None
        if config.spool is not None:
            self.spool = Spool(
                config.spool.directory,
                max_bytes=config.spool.max_bytes,
                min_free=config.spool.min_free,
            )
        self.delivery = Delivery(
            store,
            self.telemetry,
            loop,
            spool=self.spool,
            mailboxes=MailboxKeeper(
                config.limits.mailbox_max_messages, store.trim_mailbox, loop.create_task
            ),
        )
        self.certificates = Certificates(config.tls) if config.tls is not None else None
        self.screen = self._build_screen()
        self.auth = self._build_auth()
        self.context = SessionContext(
            hostname=config.hostname,
            domains=config.domains,
            admission=self.admission,
            delivery=self.delivery,
            events=self.telemetry,
            budget=self.data_budget,
            clock=loop,
            bare_newline=config.bare_newline,
            proxy_timeout=config.proxy_timeout,
            screen=self.screen,
            sessions=self.sessions,
            tls=self._handshakes(),
            auth=self.auth,
        )
        trusted = config.trusted_proxies if config.proxy_protocol else ()
        self.gate = ConnectionGate(self.admission, self.telemetry, self.context, trusted)
        self.upkeep = Upkeep(
            self.name,
            store,
            self.telemetry,
            self.stats_snapshot,
            store_timeout=config.store_timeout,
            certificates=self.certificates,
        )
        self._wire_gauges()

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
            take_rate=self.admission.handshake,
        )

    def _wire_gauges(self) -> None:
        m = self.metrics
        m.open.set_function(lambda: self.admission.counts.total)
        m.stress.set_function(lambda: 1 if self.admission.stressed else 0)
        m.store_up.set_function(lambda: 1 if self.telemetry.store_health.up else 0)
        m.store_pending.set_function(lambda: self.store.pending)
        m.data_memory.set_function(lambda: self.data_budget.used)
        m.blocklist_staleness.set_function(self.blocklist.staleness)
        m.blocklist_entries.set_function(self.blocklist.entries)
        m.allowlist_staleness.set_function(self.allowlist.staleness)
        m.allowlist_entries.set_function(self.allowlist.entries)
        spool = self.spool
        if spool is not None:
            m.spool_messages.set_function(lambda: spool.messages)
            m.spool_bytes.set_function(lambda: spool.bytes)
            m.spool_oldest.set_function(spool.oldest_age)

    @property
    def draining(self) -> bool:
        return self.gate.draining

    def _on_ban(self, key: str, reason: str, ttl: float) -> None:
        self.telemetry.on_ban(key, reason, ttl)
        self.blocklist.ban(key, reason, ttl)

    def _on_stress(self, stressed: bool, connections: int) -> None:
        self.telemetry.on_stress(stressed, connections)
        if stressed:
            for session in list(self.sessions):
                session.rearm_for_stress()

    def _build_screen(self) -> Screen | None:
        """The checks before the banner: None (no DNS at all) unless configured."""
        config = self.config.screen
        if not config.active:
            return None
        limits = self.config.limits
        resolver = Resolver(
            self.config.dns_servers, max_in_flight=limits.dns_max_in_flight, rate=limits.dns_rate
        )
        metrics = ScreenMetrics(self.metrics.registry, (*dnsbl.domains(config.sites), REVERSE_DNS))
        return Screen(config, resolver, metrics, self.loop.time)

    def _build_auth(self) -> AuthChecker | None:
        """The authentication checks, on a resolver of their own (same servers and
        bounds as the screen's): None, and no DNS at all, unless configured."""
        if self.config.auth is None:
            return None
        limits = self.config.limits
        resolver = Resolver(
            self.config.dns_servers, max_in_flight=limits.dns_max_in_flight, rate=limits.dns_rate
        )
        return AuthChecker(self.config.auth, resolver, self.metrics.registry)

    # --- health ---------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """Whether mail can be taken: the store writes, or the spool takes it meanwhile."""
        if self.draining:
            return False, "shutting down"
        spool = self.spool
        health = self.telemetry.store_health
        state = "ready"
        if health.up is not True:
            store = f"store not taking writes: {health.reason}"
            if spool is None:
                return False, store
            if spool.failing:
                return False, f"{store}; spool failing"
            if not spool.room(64 * 1024):
                return False, f"{store}; spool full ({spool.bytes} bytes)"
            state = f"ready, {store}"
        for name, access in (("blocklist", self.blocklist), ("allowlist", self.allowlist)):
            staleness = access.staleness()
            if staleness > self.config.blocklist_max_staleness:
                return False, f"{name} stale for {staleness:.0f}s"
        if spool is not None and (spool.messages or health.up is not True):
            age = spool.oldest_age()
            state += f"; spooling: {spool.messages} messages, oldest {age:.0f}s"
        return True, state

    @property
    def name(self) -> str:
        """This receiver among the others: its id, keying its statistics snapshot, its
        probe and its sweep lease (a worker's is its host's name plus `/w<i>`)."""
        return self.config.receiver_id or default_receiver_id(self.config)

    def stats_snapshot(self) -> dict[str, object]:
        telemetry = self.telemetry
        return snapshot(
            telemetry.live,
            receiver=self.name,
            open_counts=self.admission.counts.per_key,
            open_total=self.admission.counts.total,
            stressed=self.admission.stressed,
            store_up=telemetry.store_health.up,
            store_reason=telemetry.store_health.reason,
            accepted_total=telemetry.accepted_total,
            spool=self._spool_state(),
        )

    def _spool_state(self) -> dict[str, float] | None:
        spool = self.spool
        if spool is None:
            return None
        return {
            "messages": spool.messages,
            "bytes": spool.bytes,
            "oldest_s": round(spool.oldest_age(), 1),
        }

    # --- the spool ------------------------------------------------------------------

    async def replay(self, stop: asyncio.Event) -> None:
        """Drain the spool into the store whenever the store takes writes again, and any
        spool left by another worker count until it is empty."""
        assert self.spool is not None and self.config.spool is not None
        replayed = {o: self.metrics.replayed.labels(o) for o in REPLAY_OUTCOMES}

        def replay_of(spool: Spool) -> Replay:
            assert self.config.spool is not None
            return Replay(
                spool,
                self.store,
                ReplayConfig(rate=self.config.spool.replay_rate),
                on_outcome=lambda outcome, n: replayed[outcome].inc(n),
                on_stored=self.delivery.stored,
            )

        def store_up() -> bool:
            return self.telemetry.store_health.up is True

        async def adopted(directory: Path) -> None:
            orphan = Spool(directory, max_bytes=1 << 50, min_free=0)
            await asyncio.to_thread(orphan.open)  # never started: nothing appends to it
            emit("spool_adopted", directory=str(directory), messages=orphan.messages)
            await replay_of(orphan).run(store_up, stop, until_empty=True)

        await asyncio.gather(
            replay_of(self.spool).run(store_up, stop),
            *(
                adopted(directory)
                for directory in self.config.spool.adopt
                if directory != self.spool.directory and segment_paths(directory)
            ),
        )

    # --- shutdown -------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Close idle sessions now; let sessions in a DATA transaction finish (bounded)."""
        self.gate.draining = True
        deadline = time.monotonic() + grace
        while self.sessions and time.monotonic() < deadline:
            for session in list(self.sessions):
                if not session.in_transaction:
                    session.close_with(replies.SHUTTING_DOWN, "shutdown")
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.close_with(replies.SHUTTING_DOWN, "shutdown")
        await asyncio.sleep(0)


def default_receiver_id(config: ReceiverConfig) -> str:
    """A single-process receiver's id: its hostname and listen address."""
    return f"{config.hostname} {config.smtp_host}:{config.smtp_port}"


class Background:
    """What runs beside the sessions of one receiver: the spool's replay, the periodic
    jobs and the screen's reporter; started before serving, closed after the drain."""

    def __init__(self, state: ReceiverState, stop: asyncio.Event) -> None:
        self.state = state
        self.stop = stop
        self.housekeeping = Housekeeping(state.upkeep.jobs())
        self._replayer: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None

    async def start(self) -> None:
        state, loop = self.state, asyncio.get_running_loop()
        if state.spool is not None:
            state.spool.open()  # what an earlier run (or crash) left: replay takes it
            state.spool.start()
            self._replayer = loop.create_task(state.replay(self.stop), name="spool-replay")
        self.housekeeping.start(self.stop)
        if state.screen is not None:
            await state.screen.resolver.open()
            interval = state.config.log_summary_interval
            self._reporter = loop.create_task(state.screen.report(interval, self.stop))
        if state.auth is not None:
            await state.auth.open()  # workers started before the first message, not during it

    async def close(self) -> None:
        state = self.state
        with contextlib.suppress(Exception):  # gone from the operators' view at once
            await state.store.withdraw_stats(state.name, 1.0)
        await self.housekeeping.close()
        if self._replayer is not None and state.spool is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
            await state.spool.close()  # what is left waits on disk for the next start
        if state.screen is not None and self._reporter is not None:
            await self._reporter  # ends with `stop`, after its last summary line
            state.screen.resolver.close()
        if state.auth is not None:
            await state.auth.close()
        state.telemetry.summary.flush(force=True)


async def run_receiver(
    config: ReceiverConfig,
    store: MessageSink,
    blocklist: BlocklistView,
    stop: asyncio.Event,
    allowlist: AllowlistView | None = None,
) -> None:
    """Serve SMTP until `stop` is set, then drain and return."""
    loop = asyncio.get_running_loop()
    state = ReceiverState(config, store, blocklist, loop, allowlist)
    health = HealthServer(state.metrics.registry, state.ready)
    background = Background(state, stop)
    await background.start()
    server = await loop.create_server(
        lambda: Gate(state.gate),
        config.smtp_host,
        config.smtp_port,
        backlog=4096,
        reuse_address=True,
    )
    await health.start(config.http_host, config.http_port)
    emit(
        "receiver_listening",
        smtp=f"{config.smtp_host}:{config.smtp_port}",
        http=f"{config.http_host}:{config.http_port}",
        hostname=config.hostname,
        starttls=tls_summary(config.tls),
    )
    await stop.wait()
    emit("receiver_stopping", sessions=len(state.sessions))
    # The listener stays open through the grace: newcomers hear 421 4.3.2 and retry
    # elsewhere at once, instead of "connection refused" or a timeout.
    await state.drain(config.shutdown_grace)
    server.close()
    await background.close()
    await health.close()


def tls_summary(tls: TlsSettings | None) -> str:
    if tls is None:
        return "off"
    return f"self-signed:{tls.cert}" if tls.self_signed else str(tls.cert)


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
