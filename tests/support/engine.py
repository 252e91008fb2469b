"""Drive a real receiver host without sockets: its door, admission, worker, sessions, intake,
delivery and telemetry as production wires them (receiver.runtime.host), over a fake clock,
fake transports and a fake store.

harness = Harness()                      # default limits, domain mx.test
client = harness.connect("192.0.2.1")    # judged by the real door, handed to a real session
client.feed(b"EHLO c.test\\r\\n")
assert client.replies()[-1].startswith(b"250 ")
harness.clock.advance(61)                # timers fire in order on the fake clock
assert harness.events.closed["idle_timeout"] == 1   # read from the real metrics
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import heapq
import ipaddress
import itertools
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from prometheus_client import CollectorRegistry

from mailstore.errors import StoreError
from mailstore.message import MessageDocument
from receiver.door.gate import Gate, Screener
from receiver.limits import DEFAULTS, Limits
from receiver.runtime.config import ReceiverConfig
from receiver.runtime.host import Host
from receiver.smtp import BareNewline, Session
from receiver.vocabulary import Closed, MessageOutcome, RecipientOutcome, Refused, TlsOutcome


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time moves only when a test says so; `create_task` uses the running event loop."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Any:
        timer = FakeTimer(when, functools.partial(callback, *args))
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any) -> Any:
        return self.call_at(self.now + delay, callback, *args)

    def create_task(self, coro: Any) -> asyncio.Task[Any]:
        return asyncio.get_running_loop().create_task(coro)

    def advance(self, seconds: float) -> None:
        """Move time forward, firing every timer that falls due, in order."""
        target = self.now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, when)
            timer.callback()
        self.now = target

    @property
    def pending(self) -> int:
        return sum(1 for _, _, t in self._timers if not t.cancelled)


class FakeTransport:
    """Records what is written and how it closes; hands its input to its protocol."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.protocol: Any = None
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 40000) if name == "peername" else default

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def write(self, data: bytes) -> None:
        assert not (self.closed or self.aborted), "write after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class FakeStore:
    """Stores in a list; `fail` makes inserts raise, `gate` holds them until set."""

    def __init__(self) -> None:
        self.messages: list[MessageDocument] = []
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.pending = 0
        self.published: list[dict[str, object]] = []

    async def insert(self, message: MessageDocument) -> str:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        for stored in self.messages:  # the store's unique fingerprint index
            if message.fp and stored.fp == message.fp:
                return stored.id
        self.messages.append(message)
        return message.id

    async def probe(self, name: str, within: float) -> str | None:
        return None if self.fail is None else str(self.fail)

    async def ensure_indexes(self) -> None:
        return None

    async def sweep_expired(self, holder: str, lease: float) -> int | None:
        return 0

    async def trim_mailbox(self, address: str, keep: int) -> int:
        return 0

    async def publish_stats(self, snapshot: dict[str, object], within: float) -> None:
        self.published.append(snapshot)

    async def withdraw_stats(self, receiver: str, within: float) -> None:
        return None


class FakeLists:
    """The host's blocklist and allowlist: sets a test changes, bans recorded."""

    def __init__(self) -> None:
        self.blocked: set[str] = set()
        self.allowed: set[str] = set()
        self.changes = 0
        self.bans: list[tuple[str, str, float]] = []

    def is_blocked(self, ip: str) -> bool:
        return ip in self.blocked

    def is_allowed(self, ip: str) -> bool:
        return ip in self.allowed

    def generation(self) -> int:
        return self.changes

    def staleness(self) -> float:
        return 0.0

    def entries(self) -> int:
        return len(self.blocked)

    def ban(self, key: str, reason: str, ttl: float) -> None:
        self.bans.append((key, reason, ttl))
        self.blocked.add(key)
        self.changes += 1


def _counts(registries: list[CollectorRegistry], name: str, label: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for registry in registries:
        for family in registry.collect():
            for sample in family.samples:
                if sample.name == name and label in sample.labels:
                    found[sample.labels[label]] += int(sample.value)
    return found


class Events:
    """What the host counted, read from its real metrics (door and worker) by the names of
    the vocabulary: a count under any other name is a test error, never a silent zero."""

    def __init__(self, host: Host) -> None:
        assert host.worker is not None
        self._registries = [host.telemetry.metrics.registry, host.worker.telemetry.metrics.registry]

    def _read(self, name: str, label: str, vocabulary: Any) -> Counter[str]:
        counts = _counts(self._registries, name, label)
        allowed = {str(v) for v in vocabulary} | {"accepted"}
        assert set(counts) <= allowed, set(counts) - allowed
        return _Strict(Counter({k: n for k, n in counts.items() if n}), allowed)

    @property
    def refused(self) -> Counter[str]:
        return self._read("floodgate_refusals_total", "reason", Refused)

    @property
    def connections(self) -> Counter[str]:
        return self._read("floodgate_connections_total", "outcome", Refused)

    @property
    def closed(self) -> Counter[str]:
        return self._read("floodgate_sessions_closed_total", "reason", Closed)

    @property
    def messages(self) -> Counter[str]:
        return self._read("floodgate_messages_total", "outcome", MessageOutcome)

    @property
    def recipients(self) -> Counter[str]:
        return self._read("floodgate_recipients_total", "outcome", RecipientOutcome)

    @property
    def tls(self) -> Counter[str]:
        return self._read("floodgate_tls_handshakes_total", "outcome", TlsOutcome)


class _Strict(Counter[str]):
    """A Counter that refuses to be asked for a name outside its vocabulary."""

    def __init__(self, counts: Counter[str], allowed: set[str]) -> None:
        super().__init__(counts)
        self._allowed = allowed

    def __missing__(self, key: str) -> int:
        assert key in self._allowed, f"{key!r} is not in the vocabulary"
        return 0


class Client:
    """One fake connection: feed bytes, read what the door and the session wrote."""

    def __init__(self, harness: Harness, transport: FakeTransport) -> None:
        self.harness = harness
        self.transport = transport
        self._read = 0
        self._lost = False

    @property
    def session(self) -> Session:
        assert isinstance(self.transport.protocol, Session), "not handed over to a session"
        return cast(Session, self.transport.protocol)

    @property
    def handed(self) -> bool:
        return isinstance(self.transport.protocol, Session)

    def feed(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.protocol.data_received(data)

    def lose(self) -> None:
        """The peer went away (or the transport finished closing)."""
        if not self._lost:
            self._lost = True
            self.transport.protocol.connection_lost(None)

    def output(self) -> bytes:
        return b"".join(self.transport.writes)

    def replies(self) -> list[bytes]:
        """Every reply line written so far, CRLF stripped."""
        return [line for line in self.output().split(b"\r\n") if line]

    def new(self) -> list[bytes]:
        """Reply lines written since the last call."""
        lines = self.replies()
        fresh, self._read = lines[self._read :], len(lines)
        return fresh

    def codes(self) -> list[int]:
        return [int(line[:3]) for line in self.new() if line[3:4] == b" "]

    def send(self, line: bytes | str) -> list[int]:
        self.feed((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.codes()

    @property
    def closed(self) -> bool:
        return self.transport.is_closing()


class Harness:
    """A host of one worker, wired as in production, with fakes at its edges."""

    def __init__(
        self,
        limits: Limits = DEFAULTS,
        *,
        domains: frozenset[str] = frozenset({"mx.test"}),
        bare_newline: BareNewline = BareNewline.REJECT,
        proxy_timeout: float = 5.0,
        trusted: tuple[str, ...] = ("127.0.0.0/8", "10.0.0.0/8"),
        screen: Screener | None = None,
        **changes: Any,
    ) -> None:
        if changes:
            limits = dataclasses.replace(limits, **changes)
        self.clock = FakeClock()
        self.store = self.sink = FakeStore()
        self.lists = FakeLists()
        self.blocked = self.lists.blocked
        config = ReceiverConfig(
            hostname="mx.test",
            domains=domains,
            limits=limits,
            proxy_protocol=bool(trusted),
            trusted_proxies=tuple(ipaddress.ip_network(t) for t in trusted),
            proxy_timeout=proxy_timeout,
            bare_newline=bare_newline,
        )
        self.host = Host(
            config,
            self.store,
            self.lists,
            self.lists,
            loop=self.clock,
            screen=screen,  # type: ignore[arg-type]
        )
        assert self.host.worker is not None
        self.worker = self.host.worker
        self.door = self.host.door
        self.admission = self.host.admission
        self.policy = self.worker.policy
        self.budget = self.worker.budget
        self.context = self.worker.context
        self.events = Events(self.host)
        self.worker.delivery.health.record(True)  # its store answered a first probe

    def connect(self, ip: str = "192.0.2.1", *, proxied: bool = False) -> Client:
        """A new connection from `ip` (a trusted proxy's when `proxied`), as the
        listener would make it: the door's protocol gets it first."""
        transport = FakeTransport(ip)
        gate: Gate = self.door.gate()
        transport.set_protocol(gate)
        gate.connection_made(transport)  # type: ignore[arg-type]
        return Client(self, transport)

    def block(self, ip: str) -> None:
        """An entry reaching the receiver's blocklist (from any receiver or the API)."""
        self.lists.blocked.add(ip)
        self.lists.changes += 1

    def store_down(self) -> None:
        """The store failed enough writes to be judged down."""
        health = self.worker.delivery.health
        while health.up is not False:
            health.record(False, "refused")

    @property
    def open_connections(self) -> int:
        return self.admission.counts.total


async def settle() -> None:
    """Let store tasks run to completion (the fake store answers at once)."""
    for _ in range(5):
        await asyncio.sleep(0)


__all__ = ["Client", "FakeClock", "Harness", "StoreError", "settle"]
