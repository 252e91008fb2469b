"""Delivery: where an accepted message goes, and the one reply that says so.

The intake hands over a message and gets a reply back; this module alone decides between
the store, the local spool and `451`, counts the outcome, and judges the store's health
from the writes it makes (receiver.delivery.store_health):

* the store answers: `250` with the id it is stored under (the first copy's id when the
  message was stored before: receiver.intake.message's fingerprint);
* the store is known down, or the insert fails or times out: the message goes to the
  spool, synced to disk, and the sender hears `250` with its id all the same (Postfix's
  guarantee: on this host's disk, delivered on later);
* the spool is off, full or failing, or the store is merely too busy: `451`, and the sender
  retries;
* the store can never hold the message as sent: `554`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from mailstore.errors import StoreBusy, StoreError, StoreRejected
from mailstore.message import MessageDocument
from receiver import replies
from receiver.delivery.mailboxes import MailboxKeeper
from receiver.delivery.spool import Spool, SpoolFailed, SpoolFull
from receiver.delivery.store_health import StoreHealth
from receiver.replies import Reply
from receiver.telemetry.events import emit
from receiver.vocabulary import MessageOutcome


class Sink(Protocol):
    """Where accepted messages go; `insert` returns the id the message is stored under,
    only once it is durable."""

    async def insert(self, message: MessageDocument) -> str: ...


class DeliveryEvents(Protocol):
    """What delivery reports (receiver.telemetry.dialogue)."""

    def message(self, outcome: MessageOutcome) -> None: ...

    def store_answered(self, seconds: float) -> None: ...

    def stored(self, key: str, size: int) -> None: ...


class Delivery:
    """Store, spool or 451 (see the module docstring)."""

    def __init__(
        self,
        sink: Sink,
        events: DeliveryEvents,
        clock: Callable[[], float],
        *,
        spool: Spool | None = None,
        mailboxes: MailboxKeeper | None = None,
    ) -> None:
        self.sink = sink
        self.events = events
        self.clock = clock
        self.spool = spool
        self.mailboxes = mailboxes
        self.health = StoreHealth(_logged)
        self._spooling = False

    async def deliver(self, message: MessageDocument, client_key: str) -> Reply:
        """The reply for `message`, once it is durable somewhere (or known not to be)."""
        events = self.events
        if self.health.up is False:
            # Known down: straight to the spool rather than hold the sender (and a
            # pending-insert slot) for the whole store deadline.
            return await self._spool(message, client_key)
        started = self.clock()
        try:
            stored = await self.sink.insert(message)
        except StoreRejected:
            events.message(MessageOutcome.UNSTORABLE)
            return replies.UNSTORABLE
        except StoreBusy:
            # Busy is not down: back-pressure to the senders, not a queue on disk.
            events.message(MessageOutcome.STORE_BUSY)
            return replies.STORE_BUSY
        except Exception as error:  # never a 250 for mail we cannot vouch for
            if not isinstance(error, StoreError):
                emit("store_exception", error=type(error).__name__)
            self.health.record(False, str(error) or type(error).__name__)
            # The write may still land: the spooled copy keeps its id, so its replay is
            # then a duplicate `_id`, counted as stored.
            return await self._spool(message, client_key)
        self.health.record(True)
        self.stored(message)
        events.store_answered(self.clock() - started)
        events.message(MessageOutcome.STORED)
        events.stored(client_key, message.size)
        return replies.STORED.with_text(f"Ok: queued as {stored}")

    def stored(self, message: MessageDocument) -> None:
        """A message reached the store (live or replayed): the mailbox cap sees it."""
        if self.mailboxes is not None:
            self.mailboxes.stored(message.rcpt)

    async def _spool(self, message: MessageDocument, client_key: str) -> Reply:
        spool = self.spool
        if spool is None:
            self.events.message(MessageOutcome.STORE_FAILED)
            return replies.NOT_STORED
        was_failing = spool.failing
        if spool.messages == 0:
            self._spooling = False  # drained since: the next spooled message starts anew
        try:
            await spool.append(message)
        except SpoolFull:
            self.events.message(MessageOutcome.SPOOL_FULL)
            return replies.NOT_STORED
        except SpoolFailed as error:
            if not was_failing:  # once per failure, not once per message
                emit("spool_failed", error=str(error)[:160])
            self.events.message(MessageOutcome.SPOOL_FAILED)
            return replies.NOT_STORED
        if not self._spooling:  # a state change: logged once, never deduplicated away
            self._spooling = True
            emit("spool_on", reason=self.health.reason)
        self.events.message(MessageOutcome.SPOOLED)
        self.events.stored(client_key, message.size)
        return replies.STORED.with_text(f"Ok: queued as {message.id}")


def _logged(up: bool, reason: str) -> None:
    # A change of state is logged, never a failed write.
    if up:
        emit("store_up")
    else:
        emit("store_down", reason=reason)
