"""The dialogue: one admitted connection's SMTP session as a state machine on
`asyncio.Protocol`, bounded in memory, time and CPU per message; runs in every worker and
reaches the intake, delivery and the door only through its context's protocols."""

from receiver.smtp.body import BareNewline, Body, BodyReader, MemoryBudget, Outcome
from receiver.smtp.context import Clock, Events, Intake, SessionContext, Transaction
from receiver.smtp.envelope import Envelope
from receiver.smtp.phase import Phase
from receiver.smtp.policy import Policy
from receiver.smtp.session import Session
from receiver.smtp.wire import Wire

__all__ = [
    "BareNewline",
    "Body",
    "BodyReader",
    "Clock",
    "Envelope",
    "Events",
    "Intake",
    "MemoryBudget",
    "Outcome",
    "Phase",
    "Policy",
    "Session",
    "SessionContext",
    "Transaction",
    "Wire",
]
