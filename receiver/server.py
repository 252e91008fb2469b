"""The receiver process: the admission gate, shared state, and the serve/shutdown lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

from mailstore.message import IncomingMessage
from receiver import dnsbl, replies
from receiver.admission import Admission, Refusal
from receiver.authcheck import AuthChecker, AuthConfig
from receiver.delivery import Delivery
from receiver.events import (
    CLOSE_REASONS,
    CONNECTION_OUTCOMES,
    MESSAGE_OUTCOMES,
    RECIPIENT_OUTCOMES,
    REPLAY_OUTCOMES,
    TLS_VERSIONS,
    Metrics,
    SummaryLog,
    emit,
)
from receiver.health import HealthServer
from receiver.housekeeping import Housekeeping, Job
from receiver.limits import Limits
from receiver.mailboxes import MailboxKeeper
from receiver.replay import Replay, ReplayConfig
from receiver.resolver import Resolver
from receiver.screen import REVERSE_DNS, Screen, ScreenConfig, ScreenMetrics
from receiver.smtp import BareNewline, MemoryBudget, Session, SessionContext, Wire
from receiver.spool import Spool
from receiver.stats import LiveStats, snapshot
from receiver.store_health import StoreHealth
from receiver.tls import Certificates, Handshakes, TlsSettings

log = logging.getLogger("floodgate.receiver")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SHUTDOWN_REFUSAL = Refusal(replies.SHUTTING_DOWN, "shutting_down")
HEALTH_INTERVAL = 2.0
STATS_INTERVAL = 5.0  # live statistics published this often (receiver.stats)
SWEEP_INTERVAL = 30.0  # expired mail leaves the store within about this long
SWEEP_LEASE = 3 * SWEEP_INTERVAL  # a dead sweeper's lease passes to another receiver
TLS_RELOAD_INTERVAL = 2.0  # certificate files are checked this often
SUMMARY_TICK = 1.0  # the summary log looks this often (it logs once per its own interval)


class MessageSink(Protocol):
    """Where accepted messages go; `insert` returns only once the message is durable."""

    @property
    def pending(self) -> int: ...

    async def insert(self, message: IncomingMessage) -> str: ...

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
    auth: AuthConfig | None = None  # authentication verdicts (receiver.authcheck) when set


@dataclass(frozen=True)
class SpoolSettings:
    """The local spool (receiver.spool): where, how big, how fast it drains."""

    directory: Path
    max_bytes: int = 1 << 30
    min_free: int = 256 << 20  # bytes of the disk the spool never eats into
    replay_rate: float = 500.0  # messages per second into a recovering store


class ReceiverState:
    """The gate and the receiver's shared state: admission, health, events, drain.

    Sessions see none of this directly: they read the immutable `SessionContext` built
    here, and report through its `Events` (implemented by this class).
    """

    def __init__(
        self,
        config: ReceiverConfig,
        store: MessageSink,
        blocklist: BlocklistView,
        loop: asyncio.AbstractEventLoop,
        allowlist: AllowlistView | None = None,
    ) -> None:
        self.config = config
        self.loop = loop
        self.store = store
        self.blocklist = blocklist
        self.allowlist = allowlist or _NoAllowlist()
        self.metrics = Metrics()
        self.summary = SummaryLog(config.log_summary_interval)
        self.live = LiveStats()
        self.accepted_total = 0
        self.sessions: set[Session] = set()
        self.draining = False
        self.store_health = StoreHealth(self._on_store_health)
        self._indexes_ensured = False
        self.admission = Admission(
            config.limits,
            is_blocked=blocklist.is_blocked,
            is_allowed=self.allowlist.is_allowed,
            generation=blocklist.generation,
            on_ban=self._on_ban,
            on_stress=self._on_stress,
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
            self,
            loop,
            spool=self.spool,
            mailboxes=MailboxKeeper(
                config.limits.mailbox_max_messages, store.trim_mailbox, loop.create_task
            ),
        )
        self.certificates = Certificates(config.tls) if config.tls is not None else None
        self.screen = self._build_screen()
        self.auth = self._build_auth()
        handshakes = None
        if self.certificates is not None:
            limits = config.limits
            handshakes = Handshakes(
                self.certificates,
                max_total=limits.tls_max_handshakes,
                max_per_client=limits.tls_max_handshakes_per_ip,
                max_per_network=limits.tls_max_handshakes_per_network,
                timeout=limits.tls_handshake_timeout,
                hello_timeout=limits.tls_hello_timeout,
                take_rate=self.admission.handshake,
            )
        self.context = SessionContext(
            hostname=config.hostname,
            domains=config.domains,
            admission=self.admission,
            delivery=self.delivery,
            events=self,
            budget=self.data_budget,
            clock=loop,
            bare_newline=config.bare_newline,
            proxy_timeout=config.proxy_timeout,
            screen=self.screen,
            sessions=self.sessions,
            tls=handshakes,
            auth=self.auth,
        )
        self.wire = Wire(self.context)
        self._outcomes = {o: self.metrics.connections.labels(o) for o in CONNECTION_OUTCOMES}
        self._accepted = self.metrics.connections.labels("accepted")
        self._closed = {r: self.metrics.closed.labels(r) for r in CLOSE_REASONS}
        self._messages = {o: self.metrics.messages.labels(o) for o in MESSAGE_OUTCOMES}
        self._recipients = {o: self.metrics.recipients.labels(o) for o in RECIPIENT_OUTCOMES}
        self._wire_gauges()

    def _wire_gauges(self) -> None:
        m = self.metrics
        m.open.set_function(lambda: self.admission.counts.total)
        m.stress.set_function(lambda: 1 if self.admission.stressed else 0)
        m.store_up.set_function(lambda: 1 if self.store_health.up else 0)
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

    # --- the gate -------------------------------------------------------------------

    def admit(self, transport: asyncio.Transport) -> None:
        """Admit or refuse a new connection before any banner, handler or store work."""
        peer = transport.get_extra_info("peername")
        if not peer:
            transport.abort()
            return
        ip: str = peer[0]
        key: str | None
        refusal: Refusal | None
        if self.draining:
            key, refusal = ip, SHUTDOWN_REFUSAL
        elif self._from_trusted_proxy(ip):
            key, refusal = None, self.admission.connect_unkeyed()
        else:
            key, refusal = self.admission.connect(ip)
        if refusal is not None:
            self.refuse(transport, key or ip, refusal)
            return
        self._accepted.inc()
        self.accepted_total += 1
        if key is not None:  # behind a trusted proxy the client is known only later
            self.live.record_connection(key)
        session = Session(self.context, self.wire, key, ip)
        transport.set_protocol(session)
        session.connection_made(transport)

    def refuse(self, transport: asyncio.Transport, key: str, refusal: Refusal) -> None:
        """Send the refusal and close; counted and summarised, never logged one by one."""
        transport.write(refusal.reply.line())
        transport.close()
        self.on_refused(key, refusal.reason)

    def on_refused(self, key: str, reason: str) -> None:
        outcome = self._outcomes.get(reason)
        if outcome is not None:
            outcome.inc()
        self.summary.record(reason, key)
        self.live.record_refusal(key, reason)

    def _from_trusted_proxy(self, ip: str) -> bool:
        if not self.config.proxy_protocol:
            return False
        address = ipaddress.ip_address(ip)
        return any(address in network for network in self.config.trusted_proxies)

    # --- events ---------------------------------------------------------------------

    def on_identified(self, key: str) -> None:
        """A proxied connection's client, named by its PROXY header: counted as a
        connection of that client, as a direct one is at the gate."""
        self.live.record_connection(key)

    def on_session_closed(self, reason: str, key: str) -> None:
        self._closed[reason].inc()
        if reason not in ("quit", "client_closed", "shutdown"):
            self.summary.record(reason, key)

    def on_message(self, outcome: str) -> None:
        self._messages[outcome].inc()

    def on_recipient(self, outcome: str) -> None:
        self._recipients[outcome].inc()

    def on_store_attempt(self, ok: bool, seconds: float, reason: str) -> None:
        if ok:
            self.metrics.store_seconds.observe(seconds)
        self.store_health.record(ok, reason)

    def store_down(self) -> bool:
        return self.store_health.up is False

    def on_stored(self, key: str, size: int) -> None:
        self.live.record_stored(key, size)

    def on_tls(self, outcome: str, version: str) -> None:
        self.metrics.tls.labels(outcome, version if version in TLS_VERSIONS else "other").inc()

    def _on_store_health(self, up: bool, reason: str) -> None:
        # Logged on a change of state only, never per failed write.
        if up:
            emit("store_up")
        else:
            emit("store_down", reason=reason)

    def _on_ban(self, key: str, reason: str, ttl: float) -> None:
        self.metrics.autobans.inc()
        emit("autoban", key=key, reason=reason, ttl=int(ttl))
        self.blocklist.ban(key, reason, ttl)

    def _on_stress(self, stressed: bool, connections: int) -> None:
        self.metrics.stress_transitions.labels("on" if stressed else "off").inc()
        emit("stress_on" if stressed else "stress_off", connections=connections)
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
        state = "ready"
        if self.store_health.up is not True:
            store = f"store not taking writes: {self.store_health.reason}"
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
        if spool is not None and (spool.messages or self.store_health.up is not True):
            age = spool.oldest_age()
            state += f"; spooling: {spool.messages} messages, oldest {age:.0f}s"
        return True, state

    async def check_store(self) -> None:
        """Probe the store with one durable write, under the insert deadline; once it
        answers, make sure its indexes (inbox listing, TTL retention) exist."""
        reason = await self.store.probe(self._probe_name, self.config.store_timeout)
        self.store_health.record(reason is None, reason or "")
        if reason is None and not self._indexes_ensured:
            try:
                await self.store.ensure_indexes()
            except Exception as error:  # retried at the next probe
                emit("indexes_not_ensured", error=type(error).__name__)
            else:
                self._indexes_ensured = True

    @property
    def _probe_name(self) -> str:
        return f"receiver {self.name}"

    def jobs(self) -> list[Job]:
        """The periodic jobs, each on its own clock (receiver.housekeeping)."""

        def up() -> bool:
            return self.store_health.up is True

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

    async def _flush_summary(self) -> None:
        self.summary.flush()  # logs only once its own interval has passed

    async def _reload_tls(self) -> None:
        if self.certificates is not None and self.certificates.reload_if_changed():
            emit("tls_reloaded", cert=str(self.certificates.settings.cert))

    @property
    def name(self) -> str:
        """This receiver among the others (its live-statistics snapshot's id)."""
        return f"{self.config.hostname} {self.config.smtp_host}:{self.config.smtp_port}"

    def stats_snapshot(self) -> dict[str, object]:
        return snapshot(
            self.live,
            receiver=self.name,
            open_counts=self.admission.counts.per_key,
            open_total=self.admission.counts.total,
            stressed=self.admission.stressed,
            store_up=self.store_health.up,
            store_reason=self.store_health.reason,
            accepted_total=self.accepted_total,
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

    async def publish_stats(self) -> None:
        """One small document, replaced every few seconds; never per connection."""
        try:
            await self.store.publish_stats(self.stats_snapshot(), self.config.store_timeout)
        except Exception as error:  # the next round tries again; health has the outage
            emit("stats_not_published", error=type(error).__name__)

    async def sweep(self) -> None:
        try:
            deleted = await self.store.sweep_expired(self._probe_name, SWEEP_LEASE)
        except Exception as error:  # the next sweep tries again
            emit("retention_sweep_failed", error=type(error).__name__)
            return
        if deleted:
            self.metrics.expired.inc(deleted)
            emit("retention_swept", deleted=deleted)

    # --- the spool ------------------------------------------------------------------

    async def replay(self, stop: asyncio.Event) -> None:
        """Drain the spool into the store whenever the store takes writes again."""
        assert self.spool is not None and self.config.spool is not None
        replayed = {o: self.metrics.replayed.labels(o) for o in REPLAY_OUTCOMES}
        replay = Replay(
            self.spool,
            self.store,
            ReplayConfig(rate=self.config.spool.replay_rate),
            on_outcome=lambda outcome, n: replayed[outcome].inc(n),
            on_stored=self.delivery.stored,
        )
        await replay.run(lambda: self.store_health.up is True, stop)

    # --- shutdown -------------------------------------------------------------------

    async def drain(self, grace: float) -> None:
        """Close idle sessions now; let sessions in a DATA transaction finish (bounded)."""
        self.draining = True
        deadline = time.monotonic() + grace
        while self.sessions and time.monotonic() < deadline:
            for session in list(self.sessions):
                if not session.in_transaction:
                    session.close_with(replies.SHUTTING_DOWN, "shutdown")
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            session.close_with(replies.SHUTTING_DOWN, "shutdown")
        await asyncio.sleep(0)


class Gate(asyncio.Protocol):
    """The first protocol of every connection: hands it to admission, nothing else.

    Refusals are written by the gate itself and never build a session.
    """

    __slots__ = ("_state",)

    def __init__(self, state: ReceiverState) -> None:
        self._state = state

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports are full transports without subclassing asyncio's ABCs.
        self._state.admit(cast(asyncio.Transport, transport))


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
    replayer: asyncio.Task[None] | None = None
    if state.spool is not None:
        state.spool.open()  # what an earlier run (or crash) left: replay takes it
        state.spool.start()
        replayer = loop.create_task(state.replay(stop), name="spool-replay")
    if state.auth is not None:
        await state.auth.open()  # workers started before the first message, not during it
    server = await loop.create_server(
        lambda: Gate(state), config.smtp_host, config.smtp_port, backlog=4096, reuse_address=True
    )
    await health.start(config.http_host, config.http_port)
    housekeeping = Housekeeping(state.jobs())
    housekeeping.start(stop)
    reporter = None
    if state.screen is not None:
        await state.screen.resolver.open()
        reporter = loop.create_task(state.screen.report(config.log_summary_interval, stop))
    emit(
        "receiver_listening",
        smtp=f"{config.smtp_host}:{config.smtp_port}",
        http=f"{config.http_host}:{config.http_port}",
        hostname=config.hostname,
        starttls=_tls_summary(config.tls),
    )
    await stop.wait()
    emit("receiver_stopping", sessions=len(state.sessions))
    # The listener stays open through the grace: newcomers hear 421 4.3.2 and retry
    # elsewhere at once, instead of "connection refused" or a timeout.
    await state.drain(config.shutdown_grace)
    server.close()
    with contextlib.suppress(Exception):  # gone from the operators' view at once
        await store.withdraw_stats(state.name, 1.0)
    await housekeeping.close()
    if replayer is not None and state.spool is not None:
        replayer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await replayer
        await state.spool.close()  # what is left waits on disk for the next start
    if state.screen is not None and reporter is not None:
        await reporter  # ends with `stop`, after its last summary line
        state.screen.resolver.close()
    if state.auth is not None:
        await state.auth.close()
    state.summary.flush(force=True)
    await health.close()


def _tls_summary(tls: TlsSettings | None) -> str:
    if tls is None:
        return "off"
    return f"self-signed:{tls.cert}" if tls.self_signed else str(tls.cert)


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
