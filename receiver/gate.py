"""The gate: every new connection is admitted or refused here, before any banner.

Cheapest defence first (postscreen): the blocklist, the caps and the connection rate are
asked of admission from memory; a refusal is written by the gate itself and never builds
a session. An admitted connection becomes a `Session` of the engine.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import cast

from receiver import replies
from receiver.door.admission import Admission, Refusal
from receiver.smtp import Session, SessionContext, Wire
from receiver.telemetry.recorder import Telemetry

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SHUTDOWN_REFUSAL = Refusal(replies.SHUTTING_DOWN, "shutting_down")


def from_trusted_proxy(ip: str, trusted: tuple[Network, ...]) -> bool:
    """Whether `ip` may send a PROXY header (one of `trusted`)."""
    if not trusted:
        return False
    address = ipaddress.ip_address(ip)
    return any(address in network for network in trusted)


class ConnectionGate:
    """Admission at connect for one receiver, and the hand-over to a session."""

    def __init__(
        self,
        admission: Admission,
        telemetry: Telemetry,
        context: SessionContext,
        trusted_proxies: tuple[Network, ...],
    ) -> None:
        self.admission = admission
        self.telemetry = telemetry
        self.context = context
        self.wire = Wire(context)
        self.trusted = trusted_proxies
        self.draining = False

    def admit(self, transport: asyncio.Transport) -> None:
        """Admit or refuse a new connection before any banner, handler or store work."""
        peer = transport.get_extra_info("peername")
        if not peer:
            transport.abort()
            return
        ip: str = peer[0]
        key: str | None
        refusal: Refusal | None
        if self.draining:
            key, refusal = ip, SHUTDOWN_REFUSAL
        elif from_trusted_proxy(ip, self.trusted):
            key, refusal = None, self.admission.connect_unkeyed()
        else:
            key, refusal = self.admission.connect(ip)
        if refusal is not None:
            self.refuse(transport, key or ip, refusal)
            return
        self.telemetry.on_accepted(key)  # behind a trusted proxy the client is known later
        self.start_session(transport, key, ip)

    def start_session(self, transport: asyncio.Transport, key: str | None, ip: str) -> Session:
        """An admitted connection (counted under `key`) becomes a session."""
        session = Session(self.context, self.wire, key, ip)
        transport.set_protocol(session)
        session.connection_made(transport)
        return session

    def refuse(self, transport: asyncio.Transport, key: str, refusal: Refusal) -> None:
        """Send the refusal and close; counted and summarised, never logged one by one."""
        transport.write(refusal.reply.line())
        transport.close()
        self.telemetry.on_refused(key, refusal.reason)


class Gate(asyncio.Protocol):
    """The first protocol of every connection: hands it to the gate, nothing else.

    Refusals are written by the gate itself and never build a session.
    """

    __slots__ = ("_gate",)

    def __init__(self, gate: ConnectionGate) -> None:
        self._gate = gate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports are full transports without subclassing asyncio's ABCs.
        self._gate.admit(cast(asyncio.Transport, transport))
