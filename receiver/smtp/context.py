"""What a session reads: one immutable context built by the server at start-up.

Data flows one way: the server builds this, sessions read it, policy functions take plain
values. Nothing here imports the server or the store driver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from mailstore.message import MessageDocument
from receiver.door.admission import Admission
from receiver.door.screen import Verdict
from receiver.smtp.body import BareNewline, MemoryBudget
from receiver.smtp.tls import Handshakes

if TYPE_CHECKING:
    from receiver.delivery.deliver import Delivery
    from receiver.intake.authcheck import AuthChecker


class Screener(Protocol):
    """The checks run before the banner (receiver.door.screen); never raises."""

    async def screen(self, ip: str, allowed: bool, deadline: float) -> Verdict: ...


class Sink(Protocol):
    """Where accepted messages go; `insert` returns the id the message is stored under,
    only once it is durable."""

    async def insert(self, message: MessageDocument) -> str: ...


class Events(Protocol):
    """The session's outcomes, in the receiver's one vocabulary (receiver.telemetry)."""

    def on_refused(self, key: str, reason: str) -> None: ...

    def on_session_closed(self, reason: str, key: str) -> None: ...

    def on_identified(self, key: str) -> None: ...

    def on_message(self, outcome: str) -> None: ...

    def on_recipient(self, outcome: str) -> None: ...

    def on_store_attempt(self, ok: bool, seconds: float, reason: str) -> None: ...

    def store_down(self) -> bool: ...

    def on_tls(self, outcome: str, version: str) -> None: ...

    def on_stored(self, key: str, size: int) -> None: ...


class Clock(Protocol):
    """The event loop's clock and timers (a fake one in unit tests)."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle: ...

    def create_task(self, coro: Any) -> asyncio.Task[Any]: ...


@dataclass(frozen=True)
class SessionContext:
    """Everything a session needs, shared by every session of one receiver."""

    hostname: str
    domains: frozenset[str]
    admission: Admission
    delivery: Delivery  # store, spool or 451: the session only speaks SMTP
    events: Events
    budget: MemoryBudget
    clock: Clock
    bare_newline: BareNewline = BareNewline.REJECT
    proxy_timeout: float = 5.0
    screen: Screener | None = None  # before the banner: DNS lists, reverse DNS
    sessions: set[Any] = field(default_factory=set)  # open sessions, for drain and stress
    tls: Handshakes | None = None  # STARTTLS offered when set
    auth: AuthChecker | None = None  # SPF, DKIM, DMARC, ARC verdicts when set

    @property
    def postmaster(self) -> str:
        """Where `RCPT TO:<postmaster>` goes (RFC 5321 4.5.1): our first domain's."""
        return "postmaster@" + min(self.domains)
