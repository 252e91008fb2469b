"""DATA beside the session: the body as it arrives, the end of the message, and the wait for
its reply (RFC 5321 4.1.1.4, RFC 2920 3.1).

The bounded body reader (receiver.smtp.body) takes the bytes; at the final dot the session's
envelope and the body go to the intake, whose reply the session says once it comes. Until
then pipelined input is held, bounded: past `MAX_BUFFERED` the transport stops reading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from receiver import replies
from receiver.replies import Reply
from receiver.smtp.body import Body, Outcome
from receiver.smtp.context import Transaction
from receiver.smtp.envelope import Envelope
from receiver.smtp.phase import Phase
from receiver.vocabulary import Closed, MessageOutcome, Refused, Violation

if TYPE_CHECKING:
    from receiver.smtp.session import Session

MAX_BUFFERED = 64 * 1024  # pipelined input held while a message waits for its reply


def received(session: Session, data: bytes) -> bool:
    """Bytes of DATA in; True when commands sent after the final dot are to be read now."""
    body = session.body
    assert body is not None
    used = body.feed(data)
    if body.refused:  # a bare CR/LF: refused at once, before more is read
        session.body = None
        session.ctx.events.message(MessageOutcome.BARE_NEWLINE)
        session.refuse(
            Refused.BARE_NEWLINE,
            replies.BARE_NEWLINE,
            violation=Violation.BARE_NEWLINE,
            close=Closed.BARE_NEWLINE,
        )
        return False
    if used < 0:
        return False
    session.body = None
    _end(session, body.finish())
    session.schedule()  # the DATA deadline may be far later than the idle one
    if session.phase is Phase.CLOSED:
        return False
    session.buffer += data[used:]
    if session.phase is Phase.COMMAND:
        return True
    if len(session.buffer) > MAX_BUFFERED:
        session.pause(1)
    return False


def _end(session: Session, body: Body) -> None:
    session.phase = Phase.COMMAND
    # A whole message was received: that is activity, whatever the reply.
    session.idle_at = session.ctx.clock.time() + session.ctx.policy.limits.idle_timeout
    refusal = _refusal(body)
    if refusal is not None:
        reply, outcome = refusal
        session.ctx.events.message(outcome)
        session.reply(reply)
        session.reset_transaction()
        return
    transaction = session.transaction
    assert transaction is not None and session.sender is not None
    envelope = Envelope(
        session.client,
        session.helo or "",
        session.esmtp,
        session.sender,
        tuple(session.recipients),
        session.utf8,
        session.tls,
    )
    session.phase = Phase.STORING
    session.reserved = body.reserved
    session.transaction = None  # it finishes in _deliver; the next MAIL opens another
    session.reset_transaction()
    session.ctx.clock.create_task(_deliver(session, transaction, envelope, body.content))


async def _deliver(
    session: Session, transaction: Transaction, envelope: Envelope, content: bytes
) -> None:
    try:
        reply = await transaction.finish(envelope, content)
    finally:
        session.ctx.budget.give(session.reserved)  # stored, spooled or refused: memory back
        session.reserved = 0
    session.stored(reply)


def _refusal(body: Body) -> tuple[Reply, MessageOutcome] | None:
    if body.outcome is Outcome.TOO_BIG:
        return replies.MESSAGE_TOO_BIG, MessageOutcome.TOO_BIG
    if body.outcome is Outcome.NO_MEMORY:
        return replies.NO_MEMORY, MessageOutcome.NO_MEMORY
    return None
