"""The intake: from the final dot to one `MessageDocument`, built in one place, with its
verdicts, then handed to delivery for the reply.

At MAIL FROM a transaction begins: the authentication checks that need only the client and
the sender (SPF) start while the client sends its recipients and its bytes. At the final dot
the header section is scanned (a bounded linear scan, never a MIME parse: refused here when
it cannot be a message), the message is built (our `Received:` line, the fingerprint that
makes a sender's retry the same message), its verdicts are awaited within their deadline,
and delivery answers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Protocol

from mailstore.headers import HeaderScan, scan_headers
from mailstore.ids import new_message_id
from mailstore.message import MessageDocument, utcnow
from receiver import replies
from receiver.delivery.deliver import Delivery
from receiver.door.client import Client
from receiver.intake.authcheck import AuthChecker, Pending
from receiver.intake.trace import DateCache, received_header, safe_name
from receiver.replies import Reply
from receiver.smtp.context import Clock
from receiver.smtp.envelope import Envelope
from receiver.vocabulary import MessageOutcome


class IntakeEvents(Protocol):
    def message(self, outcome: MessageOutcome) -> None: ...

    def authenticated(self, key: str) -> None: ...


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


def protocol(esmtp: bool, utf8: bool, tls: bool) -> str:
    """The `with` keyword of the trace line (RFC 3848, RFC 6531)."""
    if not esmtp:
        return "SMTP"
    return ("UTF8SMTP" if utf8 else "ESMTP") + ("S" if tls else "")


class Intake:
    """Builds every message of one worker and sends it on (see the module docstring)."""

    def __init__(
        self,
        hostname: str,
        delivery: Delivery,
        events: IntakeEvents,
        clock: Clock,
        auth: AuthChecker | None = None,
    ) -> None:
        self.hostname = hostname
        self.delivery = delivery
        self.events = events
        self.clock = clock
        self.auth = auth
        self.dates = DateCache()

    def begin(self, client: Client, helo: str, sender: str) -> Transaction:
        checks = None
        if self.auth is not None:
            checks = self.auth.begin(client.ip, safe_name(helo), sender, self.clock)
        return Transaction(self, checks)

    def build(self, envelope: Envelope, content: bytes, headers: dict[str, str]) -> MessageDocument:
        """The one place a message is made: its id, trace line and fingerprint."""
        message_id = new_message_id()
        now = utcnow()
        helo = safe_name(envelope.helo)
        client = envelope.client
        trace = received_header(
            helo=helo,
            ip=client.ip,
            client_name=client.name,
            hostname=self.hostname,
            protocol=protocol(envelope.esmtp, envelope.utf8, envelope.tls is not None),
            tls=envelope.tls,
            message_id=message_id,
            recipients=list(envelope.recipients),
            when=self.dates.format(now),
        )
        return MessageDocument(
            id=message_id,
            raw=content,
            mail_from=envelope.sender,
            rcpt=envelope.recipients,
            peer_ip=client.ip,
            helo=helo,
            received_at=now,
            received_header=trace,
            headers=headers,
            tls=envelope.tls,
            fp=fingerprint(envelope.sender, envelope.recipients, content),
        )


class Transaction:
    """One message from MAIL FROM to its reply."""

    __slots__ = ("checks", "intake")

    def __init__(self, intake: Intake, checks: Pending | None) -> None:
        self.intake = intake
        self.checks = checks  # the authentication checks, running since MAIL FROM

    def cancel(self) -> None:
        if self.checks is not None:
            self.checks.cancel()
            self.checks = None

    async def finish(self, envelope: Envelope, content: bytes) -> Reply:
        intake = self.intake
        scan = scan_headers(content)
        refusal = _header_refusal(content, scan)
        if refusal is not None:
            reply, outcome = refusal
            intake.events.message(outcome)
            self.cancel()
            return reply
        message = intake.build(envelope, content, scan.values)
        if self.checks is not None:  # within their own deadline; never raises
            message = await self.checks.finish(message)
            self.checks = None
            if _authenticated(message):  # evidence of good behaviour, toward karma
                intake.events.authenticated(envelope.client.key)
        return await intake.delivery.deliver(message, envelope.client.key)


def _authenticated(message: MessageDocument) -> bool:
    """SPF passed for the envelope sender, or a DKIM signature verified."""
    auth = message.auth or {}
    spf = auth.get("spf")
    if isinstance(spf, dict) and spf.get("result") == "pass":
        return True
    signed = auth.get("dkim")
    return isinstance(signed, list) and any(
        isinstance(d, dict) and d.get("result") == "pass" for d in signed
    )


def _header_refusal(content: bytes, scan: HeaderScan) -> tuple[Reply, MessageOutcome] | None:
    if content[:1] in (b" ", b"\t"):
        return replies.FOLDED_START, MessageOutcome.FOLDED_START
    if scan.refused:
        reply = replies.HEADER_TOO_BIG if scan.too_big else replies.TOO_MANY_HEADER_FIELDS
        return reply, MessageOutcome.HEADER_TOO_BIG
    return None
