"""aiosmtpd's hooks, each a few lines that call typed policy code.

`SessionHooks` names the hooks aiosmtpd looks up by name, so mypy catches a typo.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import re
import time
from typing import TYPE_CHECKING, Any, Protocol

from aiosmtpd.smtp import Envelope, Session

from mailstore import (
    IncomingMessage,
    StoreBusy,
    StoreError,
    StoreRejected,
    new_message_id,
    scan_headers,
    utcnow,
)
from receiver import replies

if TYPE_CHECKING:
    from receiver.protocol import FloodgateSMTP
    from receiver.server import ReceiverState

log = logging.getLogger("floodgate.receiver")
_SPACE = re.compile(r"\s")
_UNSAFE = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")
MAX_HELO = 255  # RFC 5321 4.5.3.1.2 caps a domain at 255 octets
MAX_PATH = 256  # RFC 5321 4.5.3.1.3


class SessionHooks(Protocol):
    async def handle_EHLO(
        self, server: Any, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]: ...

    async def handle_MAIL(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str: ...

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str: ...

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str: ...

    async def handle_PROXY(
        self, server: Any, session: Session, envelope: Envelope, proxy_data: Any
    ) -> bool: ...


class Hooks:
    """The receiver's policy at EHLO, MAIL, RCPT and DATA."""

    def __init__(self, state: ReceiverState) -> None:
        self.state = state

    async def handle_EHLO(
        self,
        server: FloodgateSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        # aiosmtpd lists SIZE, 8BITMIME, SMTPUTF8; add what we also support.
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_PROXY(
        self, server: FloodgateSMTP, session: Session, envelope: Envelope, proxy_data: Any
    ) -> bool:
        """A trusted proxy told us who the client is: admit that client, or refuse it."""
        source = getattr(proxy_data, "src_addr", None)
        if isinstance(source, ipaddress.IPv4Address | ipaddress.IPv6Address):
            server.client_ip = str(source)
        # A v2 LOCAL command (the proxy's own health check) carries no client address:
        # it is judged as the proxy itself.
        return await server.identify_client()

    async def handle_MAIL(
        self,
        server: FloodgateSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        if not _valid_sender(address):
            return str(replies.BAD_SENDER)
        refusal = self.state.admission.mail(server._key())
        if refusal is not None:
            self.state.on_message("message_rate")
            self.state.on_refused(server._key(), refusal.reason)
            return str(refusal.reply)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return str(replies.OK)

    async def handle_RCPT(
        self,
        server: FloodgateSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        reply, outcome = self._judge_recipient(server, envelope, address)
        self.state.on_recipient(outcome)
        if reply is replies.RCPT_OK and address.lower() not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(address.lower())
            envelope.rcpt_options.extend(options)
        return str(reply)

    def _judge_recipient(
        self, server: FloodgateSMTP, envelope: Envelope, address: str
    ) -> tuple[replies.Reply, str]:
        local, at, domain = address.rpartition("@")
        if not at or not local or len(address) > MAX_PATH:
            return replies.BAD_ADDRESS, "bad_address"
        if domain.lower().rstrip(".") not in self.state.domains:
            return replies.RELAY_DENIED, "relay_denied"  # never an open relay
        if len(envelope.rcpt_tos) >= self.state.admission.limits.max_recipients:
            return replies.TOO_MANY_RECIPIENTS, "too_many"
        refusal = self.state.admission.rcpt(server._key())
        if refusal is not None:
            self.state.on_refused(server._key(), refusal.reason)
            return refusal.reply, "recipient_rate"
        return replies.RCPT_OK, "accepted"

    async def handle_DATA(self, server: FloodgateSMTP, session: Session, envelope: Envelope) -> str:
        if self.state.store_ok is False:
            # The health loop saw the store down: answer at once rather than hold the
            # sender (and a pending-insert slot) for the whole store deadline.
            self.state.on_message("store_failed")
            return str(replies.NOT_STORED)
        scan = scan_headers(envelope.original_content or b"")
        if scan.refused:
            self.state.on_message("header_too_big")
            return str(replies.HEADER_TOO_BIG if scan.too_big else replies.TOO_MANY_HEADER_FIELDS)
        message = self._message(server, session, envelope, scan.values)
        started = time.perf_counter()
        try:
            await self.state.store.insert(message)
        except StoreRejected:
            self.state.on_message("unstorable")
            return str(replies.UNSTORABLE)
        except StoreBusy:
            self.state.on_message("store_busy")
            return str(replies.STORE_BUSY)
        except StoreError:
            self.state.on_message("store_failed")
            return str(replies.NOT_STORED)
        except Exception as error:  # never a 250 for mail we cannot vouch for
            log.error("event=store_exception error=%r", error)
            self.state.on_message("store_failed")
            return str(replies.NOT_STORED)
        self.state.metrics.store_seconds.observe(time.perf_counter() - started)
        self.state.on_message("stored")
        return str(replies.STORED.with_text(f"Ok: queued as {message.id}"))

    def _message(
        self,
        server: FloodgateSMTP,
        session: Session,
        envelope: Envelope,
        headers: dict[str, str],
    ) -> IncomingMessage:
        message_id = new_message_id()
        now = utcnow()
        helo = _safe(session.host_name or "unknown")
        raw = envelope.original_content or b""
        header = received_header(
            helo=helo,
            ip=server.client_ip,
            client_name=server.client_name,
            hostname=self.state.hostname,
            protocol=_protocol(session, envelope),
            message_id=message_id,
            recipients=envelope.rcpt_tos,
            when=email.utils.format_datetime(now),
        )
        return IncomingMessage(
            id=message_id,
            raw=raw,
            mail_from=envelope.mail_from or "",
            rcpt_to=tuple(envelope.rcpt_tos),
            peer_ip=server.client_ip,
            helo=helo,
            received_at=now,
            received_header=header,
            headers=headers,
        )


def received_header(
    *,
    helo: str,
    ip: str,
    client_name: str | None,
    hostname: str,
    protocol: str,
    message_id: str,
    recipients: list[str],
    when: str,
) -> bytes:
    """Our trace line (RFC 5321 4.4); `for` only names a lone recipient (no Bcc leaks)."""
    literal = f"IPv6:{ip}" if ":" in ip else ip
    client = f"{_safe(client_name)} [{literal}]" if client_name else f"[{literal}]"
    recipient = f"\r\n\tfor <{recipients[0]}>" if len(recipients) == 1 else ""
    text = (
        f"Received: from {helo} ({client})\r\n\tby {hostname} (Floodgate) with {protocol} "
        f"id {message_id}{recipient};\r\n\t{when}\r\n"
    )
    return text.encode("utf-8", "replace")


def _protocol(session: Session, envelope: Envelope) -> str:
    # RFC 3848 / RFC 6531 7.2 "with" keywords.
    if getattr(envelope, "smtp_utf8", False):
        return "UTF8SMTP"
    return "ESMTP" if session.extended_smtp else "SMTP"


def _valid_sender(address: str) -> bool:
    """`<>` (bounces) or local@domain within RFC 5321 length limits, no white space."""
    if address == "<>":
        return True
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain) and len(address) <= MAX_PATH and not _SPACE.search(address)


def _safe(text: str) -> str:
    return _UNSAFE.sub("?", text[:MAX_HELO]) or "unknown"
