"""What a session reads: one immutable context built by the runtime at start-up.

Data flows one way: the runtime builds this, sessions read it, policy functions take plain
values. Nothing here imports the runtime, the intake, delivery or the store's driver: the
session speaks SMTP and reaches the rest only through these protocols.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from receiver.door.client import Client, HostSide
from receiver.replies import Reply
from receiver.smtp.body import BareNewline, MemoryBudget
from receiver.smtp.envelope import Envelope
from receiver.smtp.policy import Policy
from receiver.smtp.tls import Handshakes
from receiver.vocabulary import Closed, MessageOutcome, RecipientOutcome, Refused, TlsOutcome


class Transaction(Protocol):
    """One message from MAIL FROM to its reply (receiver.intake): checks that need only
    the client and sender start at once; the rest, and delivery, at the final dot."""

    def cancel(self) -> None:
        """The transaction was abandoned (RSET, a new HELO, the client left)."""

    async def finish(self, envelope: Envelope, content: bytes) -> Reply:
        """The reply to the final dot: once the message is durable, or known not to be."""
        ...


class Intake(Protocol):
    """Where a transaction's message is built and sent on (receiver.intake)."""

    def begin(self, client: Client, helo: str, sender: str) -> Transaction: ...


class Events(Protocol):
    """The session's outcomes, in the receiver's one vocabulary (receiver.vocabulary)."""

    def refused(self, client: Client, reason: Refused) -> None: ...

    def closed(self, client: Client, reason: Closed) -> None: ...

    def message(self, outcome: MessageOutcome) -> None: ...

    def recipient(self, outcome: RecipientOutcome) -> None: ...

    def tls(self, outcome: TlsOutcome, version: str) -> None: ...


class Clock(Protocol):
    """The event loop's clock and timers (a fake one in unit tests)."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle: ...

    def create_task(self, coro: Any) -> asyncio.Task[Any]: ...


@dataclass(frozen=True)
class SessionContext:
    """Everything a session needs, shared by every session of one worker."""

    hostname: str
    domains: frozenset[str]
    policy: Policy  # rates, violations, the limits in force
    intake: Intake  # end of DATA to a reply: the session only speaks SMTP
    events: Events
    host: HostSide  # the door counts the connection: its slot goes back through here
    budget: MemoryBudget
    clock: Clock
    bare_newline: BareNewline = BareNewline.REJECT
    sessions: set[Any] = field(default_factory=set)  # open sessions, for drain and stress
    tls: Handshakes | None = None  # STARTTLS offered when set

    @property
    def postmaster(self) -> str:
        """Where `RCPT TO:<postmaster>` goes (RFC 5321 4.5.1): our first domain's."""
        return "postmaster@" + min(self.domains)
