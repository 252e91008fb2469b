"""Delivery: where an accepted message goes, and the one reply that says so.

The session hands over a message and gets a reply back; this module alone decides between
the store, the local spool and `451`, and counts the outcome:

* the store answers: `250` with the id it is stored under (the first copy's id when the
  message was stored before, see `fingerprint`);
* the store is known down, or the insert fails or times out: the message goes to the
  spool, synced to disk, and the sender hears `250` with its id all the same (Postfix's
  guarantee: on this host's disk, delivered on later);
* the spool is off, full or failing, or the store is merely too busy: `451`, and the sender
  retries;
* the store can never hold the message as sent: `554`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from mailstore.errors import StoreBusy, StoreError, StoreRejected
from mailstore.message import MessageDocument
from receiver import replies
from receiver.delivery.mailboxes import MailboxKeeper
from receiver.delivery.spool import Spool, SpoolFailed, SpoolFull
from receiver.replies import Reply
from receiver.telemetry.events import emit

if TYPE_CHECKING:
    from receiver.smtp.context import Clock, Events, Sink

log = logging.getLogger("floodgate.receiver")


def fingerprint(sender: str, recipients: Iterable[str], raw: bytes) -> str:
    """The same bytes from the same sender to the same recipients: one message.

    A sender that did not hear our `250` (it left after its final dot, we restarted, it got
    `451` while the write landed after all) sends the message again, to this receiver or
    another; the store keeps one document per fingerprint and answers the retry with the
    first copy's id.
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update("\0".join([sender, *recipients]).encode("utf-8", "surrogatepass"))
    digest.update(b"\0")
    digest.update(raw)
    return digest.hexdigest()


class Delivery:
    """Store, spool or 451 (see the module docstring)."""

    def __init__(
        self,
        sink: Sink,
        events: Events,
        clock: Clock,
        *,
        spool: Spool | None = None,
        mailboxes: MailboxKeeper | None = None,
    ) -> None:
        self.sink = sink
        self.events = events
        self.clock = clock
        self.spool = spool
        self.mailboxes = mailboxes
        self._spooling = False

    async def deliver(self, message: MessageDocument, client_key: str) -> Reply:
        """The reply for `message`, once it is durable somewhere (or known not to be)."""
        events = self.events
        if events.store_down():
            # Known down: straight to the spool rather than hold the sender (and a
            # pending-insert slot) for the whole store deadline.
            return await self._spool(message, client_key, "store_failed")
        started = self.clock.time()
        try:
            stored = await self.sink.insert(message)
        except StoreRejected:
            events.on_message("unstorable")
            return replies.UNSTORABLE
        except StoreBusy:
            # Busy is not down: back-pressure to the senders, not a queue on disk.
            events.on_message("store_busy")
            return replies.STORE_BUSY
        except Exception as error:  # never a 250 for mail we cannot vouch for
            if not isinstance(error, StoreError):
                emit("store_exception", error=type(error).__name__)
            events.on_store_attempt(False, 0.0, str(error) or type(error).__name__)
            # The write may still land: the spooled copy keeps its id, so its replay is
            # then a duplicate `_id`, counted as stored.
            return await self._spool(message, client_key, "store_failed")
        self.stored(message)
        events.on_store_attempt(True, self.clock.time() - started, "")
        events.on_message("stored")
        events.on_stored(client_key, len(message.raw))
        return replies.STORED.with_text(f"Ok: queued as {stored}")

    def stored(self, message: MessageDocument) -> None:
        """A message reached the store (live or replayed): the mailbox cap sees it."""
        if self.mailboxes is not None:
            self.mailboxes.stored(message.rcpt)

    async def _spool(self, message: MessageDocument, client_key: str, why: str) -> Reply:
        spool = self.spool
        if spool is None:
            self.events.on_message(why)
            return replies.NOT_STORED
        was_failing = spool.failing
        if spool.messages == 0:
            self._spooling = False  # drained since: the next spooled message starts anew
        try:
            await spool.append(message)
        except SpoolFull:
            self.events.on_message("spool_full")
            return replies.NOT_STORED
        except SpoolFailed as error:
            if not was_failing:  # once per failure, not once per message
                emit("spool_failed", error=str(error)[:160])
            self.events.on_message("spool_full")
            return replies.NOT_STORED
        if not self._spooling:  # a state change: logged once, never deduplicated away
            self._spooling = True
            emit("spool_on", reason=why)
        self.events.on_message("spooled")
        self.events.on_stored(client_key, len(message.raw))
        return replies.STORED.with_text(f"Ok: queued as {message.id}")
