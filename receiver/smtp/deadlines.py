"""A session's deadlines: which one is next in each phase, and what happens when it passes.

One timer per session carries them all (the session arms it for the nearest): the idle
deadline (re-armed only by successful replies), the whole-session deadline, the DATA
allowance that grows with the bytes received (Postfix's smtpd_min_data_rate) up to the
DATA deadline, and the TLS handshake's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from receiver import replies
from receiver.smtp.phase import Phase
from receiver.vocabulary import Closed

if TYPE_CHECKING:
    from receiver.smtp.session import Session

EARLY = 0.001  # timers may fire this much early (uvloop rounds to milliseconds)


def next_deadline(session: Session) -> float:
    phase = session.phase
    if phase is Phase.COMMAND:
        due = session.idle_at
    elif phase is Phase.DATA:
        due = session.data_start + data_allowance(session)
    elif phase is Phase.STORING:
        due = session.session_at  # the store has its own deadline
    else:
        due = session.phase_deadline
    return min(due, session.session_at)


def data_allowance(session: Session) -> float:
    """Seconds DATA may take so far: idle time plus what the bytes sent have earned.

    Postfix's smtpd_min_data_rate: each byte received buys 1/min_data_rate seconds, so a
    trickling client runs out of time while a fast one never notices.
    """
    limits = session.ctx.policy.limits
    received = session.body.received if session.body is not None else 0
    earned = received / limits.min_data_rate if limits.min_data_rate else 1e9
    return min(limits.idle_timeout + earned, session.ctx.policy.normal.data_timeout)


def fire(session: Session) -> None:
    """The timer went off: close the session if a deadline has passed."""
    now = session.ctx.clock.time() + EARLY
    if now >= session.session_at:
        session.close_with(replies.SESSION_TIMEOUT, Closed.SESSION_TIMEOUT)
    elif now >= next_deadline(session):
        _expired(session)


def _expired(session: Session) -> None:
    phase = session.phase
    if phase is Phase.COMMAND:
        session.close_with(replies.IDLE_TIMEOUT, Closed.IDLE_TIMEOUT)
    elif phase is Phase.DATA:
        if data_allowance(session) >= session.ctx.policy.normal.data_timeout:
            session.close_with(replies.DATA_TIMEOUT, Closed.DATA_TIMEOUT)
        else:
            session.close_with(replies.DATA_TOO_SLOW, Closed.DATA_TOO_SLOW)
    elif phase is Phase.HANDSHAKE:
        session.abort(Closed.TLS_TIMEOUT)
