"""STARTTLS beside the session (RFC 3207): from our `220` to a secured session, or a close.

Reading stops before anything else can be read in cleartext: bytes the client sent after
STARTTLS in the same read were refused before the verb ran (an injection, CVE-2011-0411);
anything later is read by the TLS layer as handshake data, where it fails the handshake. A
handshake slot is taken only once the ClientHello is complete (`Handshakes.hello`). A failed
handshake is a client error, as in Postfix: a violation toward an auto-ban.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from receiver import replies
from receiver.smtp.phase import Phase
from receiver.smtp.tls import GONE, NO_HELLO, Handshakes, describe
from receiver.vocabulary import Closed, Refused, TlsOutcome, Violation

if TYPE_CHECKING:
    from receiver.smtp.session import Session

EARLY = 0.001  # timers may fire this much early (uvloop rounds to milliseconds)


def start(session: Session) -> None:
    """Say 220 and hand the connection to the handshake."""
    tls = session.ctx.tls
    transport = session.transport
    assert tls is not None and transport is not None
    session.out.append(replies.READY_FOR_TLS.wire)
    session.flush()
    transport.pause_reading()
    session.phase = Phase.HANDSHAKE
    # The hello wait, then the loop's own handshake deadline, which fires first.
    session.deadline_in(tls.hello_timeout + tls.timeout + 1.0)
    session.ctx.clock.create_task(_handshake(session, tls, transport))


async def _handshake(session: Session, tls: Handshakes, raw: asyncio.Transport) -> None:
    client = session.client
    waiting = await tls.hello(
        raw, client.key, client.unlimited, lambda: session.phase is Phase.HANDSHAKE
    )
    if waiting is not None:
        _no_handshake(session, waiting)
        return
    events = session.ctx.events
    clock = session.ctx.clock
    started = clock.time()
    try:
        secure = await tls.upgrade(raw, session)
    except Exception as error:
        tls.end(client.key)
        # The loop's handshake deadline aborts the connection (ConnectionAbortedError).
        late = clock.time() - started >= tls.timeout - EARLY
        timeout = late or isinstance(error, TimeoutError)
        events.tls(TlsOutcome.TIMEOUT if timeout else TlsOutcome.FAILED, "none")
        if session.phase is Phase.HANDSHAKE:  # not already closed by us (drain, deadline)
            session.refuse(
                Refused.TLS_FAILED,
                None,
                violation=Violation.TLS_FAILED,
                close=Closed.TLS_TIMEOUT if timeout else Closed.TLS_FAILED,
            )
        raw.abort()
        session.connection_lost(None)  # the TLS layer never calls it for a failed start
        return
    tls.end(client.key)
    if session.phase is not Phase.HANDSHAKE:  # closed while the handshake ran
        secure.abort()
        session.connection_lost(None)  # idempotent: the slot goes back exactly once
        return
    info = describe(secure)
    events.tls(TlsOutcome.OK, info.version)
    session.secured(secure, info)


def _no_handshake(session: Session, why: str) -> None:
    """No handshake ran: no ClientHello in time (a client error: a compliant client
    sends it at once), no slot in time (ours), or the session is gone already."""
    if why == GONE or session.phase is not Phase.HANDSHAKE:
        if session.phase is Phase.HANDSHAKE:
            session.abort(Closed.CLIENT_CLOSED)
        return
    if why == NO_HELLO:
        session.ctx.events.tls(TlsOutcome.NO_HELLO, "none")
        session.refuse(
            Refused.TLS_FAILED, None, violation=Violation.TLS_FAILED, close=Closed.TLS_NO_HELLO
        )
    else:
        session.ctx.events.tls(TlsOutcome.BUSY, "none")
        session.abort(Closed.TLS_BUSY)
