"""Drive the SMTP session engine without sockets: a fake clock, transport, sink and events.

harness = Harness()                      # default limits, domain mx.test
client = harness.connect("192.0.2.1")    # admitted through the real Admission
client.feed(b"EHLO c.test\\r\\n")
assert client.replies()[-1].startswith(b"250 ")
harness.clock.advance(61)                # timers fire in order on the fake clock
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
from collections import Counter
from collections.abc import Callable
from typing import Any

from mailstore.errors import StoreError
from mailstore.message import MessageDocument
from receiver.delivery.deliver import Delivery
from receiver.door.admission import Admission
from receiver.limits import DEFAULTS, Limits
from receiver.smtp import BareNewline, MemoryBudget, Session, SessionContext, Wire


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

    def call_at(self, when: float, callback: Callable[[], None]) -> Any:
        timer = FakeTimer(when, callback)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

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
    """Records what the session writes and how it closes."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 40000) if name == "peername" else default

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


class FakeSink:
    """Stores in a list; `fail` makes inserts raise, `gate` holds them until set."""

    def __init__(self) -> None:
        self.messages: list[MessageDocument] = []
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None

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


class FakeEvents:
    """Counts every event the engine reports, by name."""

    def __init__(self) -> None:
        self.refused: Counter[str] = Counter()
        self.closed: Counter[str] = Counter()
        self.identified: list[str] = []
        self.messages: Counter[str] = Counter()
        self.recipients: Counter[str] = Counter()
        self.down = False
        self.attempts: list[tuple[bool, str]] = []
        self.stored_by: Counter[str] = Counter()

    def on_refused(self, key: str, reason: str) -> None:
        self.refused[reason] += 1

    def on_identified(self, key: str) -> None:
        self.identified.append(key)

    def on_session_closed(self, reason: str, key: str) -> None:
        self.closed[reason] += 1

    def on_message(self, outcome: str) -> None:
        self.messages[outcome] += 1

    def on_recipient(self, outcome: str) -> None:
        self.recipients[outcome] += 1

    def on_store_attempt(self, ok: bool, seconds: float, reason: str) -> None:
        self.attempts.append((ok, reason))

    def store_down(self) -> bool:
        return self.down

    def on_stored(self, key: str, size: int) -> None:
        self.stored_by[key] += size

    def on_tls(self, outcome: str, version: str) -> None:
        self.refused["tls_" + outcome] += 1


class Client:
    """One fake connection: feed bytes, read what the session wrote."""

    def __init__(self, harness: Harness, session: Session, transport: FakeTransport) -> None:
        self.harness = harness
        self.session = session
        self.transport = transport
        self._read = 0

    def feed(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.session.data_received(data)

    def lose(self) -> None:
        """The peer went away (or the transport finished closing)."""
        if self.session.transport is not None:
            self.session.connection_lost(None)

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
    """A receiver's context with fakes: the real Admission, budget and reply table."""

    def __init__(
        self,
        limits: Limits = DEFAULTS,
        *,
        domains: frozenset[str] = frozenset({"mx.test"}),
        bare_newline: BareNewline = BareNewline.REJECT,
        proxy_timeout: float = 5.0,
        **changes: Any,
    ) -> None:
        if changes:
            limits = dataclasses.replace(limits, **changes)
        self.clock = FakeClock()
        self.sink = FakeSink()
        self.events = FakeEvents()
        self.blocked: set[str] = set()  # the blocklist: change it through block()
        self.blocklist_changes = 0
        self.admission = Admission(
            limits,
            is_blocked=self.blocked.__contains__,
            generation=lambda: self.blocklist_changes,
            clock=self.clock.time,
        )
        self.budget = MemoryBudget(limits.max_data_memory)
        self.context = SessionContext(
            hostname="mx.test",
            domains=domains,
            admission=self.admission,
            delivery=Delivery(self.sink, self.events, self.clock),  # type: ignore[arg-type]
            events=self.events,
            budget=self.budget,
            clock=self.clock,  # type: ignore[arg-type]
            bare_newline=bare_newline,
            proxy_timeout=proxy_timeout,
        )
        self.wire = Wire(self.context)

    def connect(self, ip: str = "192.0.2.1", *, proxied: bool = False) -> Client:
        """Admit a connection as the gate does, and start its session."""
        if proxied:
            refusal = self.admission.connect_unkeyed()
            key = None
        else:
            key, refusal = self.admission.connect(ip)
        assert refusal is None, refusal
        transport = FakeTransport(ip)
        session = Session(self.context, self.wire, key, ip)
        session.connection_made(transport)  # type: ignore[arg-type]
        return Client(self, session, transport)

    def block(self, ip: str) -> None:
        """An entry reaching the receiver's blocklist (from any receiver or the API)."""
        self.blocked.add(ip)
        self.blocklist_changes += 1

    @property
    def open_connections(self) -> int:
        return self.admission.counts.total


async def settle() -> None:
    """Let store tasks run to completion (the fake sink answers at once)."""
    for _ in range(5):
        await asyncio.sleep(0)


__all__ = ["Client", "FakeClock", "Harness", "StoreError", "settle"]
