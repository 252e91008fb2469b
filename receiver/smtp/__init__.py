"""The SMTP session engine: one connection's dialogue as a state machine on
`asyncio.Protocol`, bounded in memory, time and CPU per message."""

from receiver.smtp.body import BareNewline, Body, BodyReader, MemoryBudget, Outcome
from receiver.smtp.context import Clock, Events, SessionContext, Sink
from receiver.smtp.session import Phase, Session, Wire

__all__ = [
    "BareNewline",
    "Body",
    "BodyReader",
    "Clock",
    "Events",
    "MemoryBudget",
    "Outcome",
    "Phase",
    "Session",
    "SessionContext",
    "Sink",
    "Wire",
]
