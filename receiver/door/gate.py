"""The gate: every connection of the host is judged here, before any banner, and refused
here or handed over to a worker (Postfix's postscreen in front of smtpd).

The steps, cheapest first, each refusing before the next cost is paid:

1. *Drain*: while the host stops, newcomers hear `421 4.3.2` and retry elsewhere at once.
2. *PROXY header*: a trusted proxy's connection names its client in a header the gate
   reads itself (bounded in bytes, time and, per proxy, in headers awaited at once).
3. *Admission*: the blocklist, the caps and the connection rate, from memory, no I/O.
4. *Before the banner*, when configured: postscreen's pregreet teaser (the first line of a
   multi-line greeting; a client that talks before the last line is refused) and the
   screen's DNS lists and reverse DNS, under one deadline, failing open.
5. *Hand-over*: the session starts with a known, counted client and writes the banner.

Whatever the number of worker processes, this is the one door: one process is a host whose
hand-over is a call into its one worker. Refusals are written here and never build a
session, so they stay cheap and never wait on a busy worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import ipaddress
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from receiver.door import admission as verdicts
from receiver.door import proxy
from receiver.door.admission import Admission, Admitted, Refusal
from receiver.door.client import Client
from receiver.door.handover import Handover
from receiver.door.screen import PASS, Verdict, screen_deadline
from receiver.replies import Reply
from receiver.telemetry.events import emit
from receiver.vocabulary import Refused, Violation

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_EARLY = 2048  # bytes kept from a client that talks while only the screen runs


class DoorEvents(Protocol):
    """What the door reports (receiver.telemetry.door)."""

    def accepted(self, key: str) -> None: ...

    def refused(self, key: str, reason: Refused, detail: str = "") -> None: ...

    def listed(self, key: str, reason: Refused, detail: str = "") -> None: ...


class DoorClock(Protocol):
    """The event loop's timers and tasks (a fake clock in unit tests)."""

    def call_later(
        self, delay: float, callback: Callable[..., object], *args: Any
    ) -> asyncio.TimerHandle: ...

    def create_task(self, coro: Any) -> asyncio.Task[Any]: ...


class Screener(Protocol):
    """The checks run before the banner (receiver.door.screen); never raises."""

    async def screen(self, ip: str, allowed: bool, deadline: float) -> Verdict: ...


@dataclass(frozen=True)
class DoorConfig:
    """The door's settings, resolved at start-up."""

    hostname: str
    trusted_proxies: tuple[Network, ...] = ()
    proxy_timeout: float = 5.0


def from_trusted_proxy(ip: str, trusted: tuple[Network, ...]) -> bool:
    """Whether `ip` may send a PROXY header (one of `trusted`)."""
    if not trusted:
        return False
    address = ipaddress.ip_address(ip)
    return any(address in network for network in trusted)


class Door:
    """Judges, refuses or hands over every connection (see the module docstring)."""

    def __init__(
        self,
        config: DoorConfig,
        admission: Admission,
        events: DoorEvents,
        handover: Handover,
        clock: DoorClock,
        screen: Screener | None = None,
    ) -> None:
        self.config = config
        self.admission = admission
        self.events = events
        self.handover = handover
        self.clock = clock
        self.screen = screen
        self.teaser = f"220-{config.hostname} ESMTP\r\n".encode("ascii")
        self.draining = False
        self.waiting: set[Gate] = set()  # connections not handed over yet
        self._headers: Counter[str] = Counter()  # proxy address -> headers awaited

    def gate(self) -> Gate:
        """The protocol every new connection starts with (the server's factory)."""
        return Gate(self)

    # --- arrival --------------------------------------------------------------------

    def arrived(self, gate: Gate, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        if not peer:
            transport.abort()
            return
        ip: str = peer[0]
        gate.transport, gate.ip = transport, ip
        if self.draining:
            self._refuse(gate, ip, verdicts.SHUTTING_DOWN)
        elif from_trusted_proxy(ip, self.config.trusted_proxies):
            self._await_header(gate, ip)
        else:
            self._judge(gate, ip)

    def _judge(self, gate: Gate, ip: str) -> None:
        key, verdict = self.admission.connect(ip, self.handover.settle)
        if isinstance(verdict, Refusal):
            self._refuse(gate, key, verdict)
            return
        self.events.accepted(key)
        gate.counted = key
        self._before_banner(gate, verdict, ip)

    def _refuse(self, gate: Gate, key: str, refusal: Refusal, detail: str = "") -> None:
        """The refusal is written here, from memory: no worker is involved."""
        self._forget(gate)
        transport = gate.transport
        if transport is not None:
            if refusal.reply is not None:
                transport.write(refusal.reply.wire)
                transport.close()
            else:
                transport.abort()
        gate.transport = None
        if gate.counted is not None:
            self.admission.release(gate.counted)
            gate.counted = None
        self.events.refused(key, refusal.reason, detail)

    # --- a trusted proxy's header ---------------------------------------------------

    def _await_header(self, gate: Gate, proxy_ip: str) -> None:
        if self._headers[proxy_ip] >= self.admission.limits.proxy_max_pending:
            self._refuse(gate, proxy_ip, verdicts.PROXY_BUSY)
            return
        self._headers[proxy_ip] += 1
        gate.proxy = proxy_ip
        gate.stage = Stage.HEADER
        self.waiting.add(gate)
        gate.timer = self.clock.call_later(self.config.proxy_timeout, self._header_late, gate)

    def header_input(self, gate: Gate, data: bytes) -> None:
        gate.buffer += data[: proxy.MAX_HEADER]
        length = proxy.header_length(gate.buffer)
        if length is None:
            if len(gate.buffer) < proxy.MAX_HEADER:
                return
            length = proxy.BAD
        self._header_done(gate)
        self.waiting.discard(gate)
        valid, client = (False, None)
        if length > 0:
            valid, client = proxy.client_address(bytes(gate.buffer[:length]))
        if not valid:
            self._refuse(gate, gate.ip, verdicts.BAD_PROXY_HEADER)
            return
        gate.buffer = gate.buffer[length:]  # the client's first bytes, if any came with it
        # A v2 LOCAL command (the proxy's own health check) names no client: it is judged
        # as the proxy itself.
        gate.ip = client or gate.ip
        if self.draining:  # the header came after the stop: as a newcomer would hear
            self._refuse(gate, gate.ip, verdicts.SHUTTING_DOWN)
            return
        self._judge(gate, gate.ip)

    def _header_late(self, gate: Gate) -> None:
        gate.timer = None
        self._header_done(gate)
        self._refuse(gate, gate.ip, verdicts.BAD_PROXY_HEADER)

    def _header_done(self, gate: Gate) -> None:
        if gate.proxy is not None:
            self._headers[gate.proxy] -= 1
            if self._headers[gate.proxy] <= 0:
                del self._headers[gate.proxy]
            gate.proxy = None
        if gate.timer is not None:
            gate.timer.cancel()
            gate.timer = None

    # --- before the banner ----------------------------------------------------------

    def _before_banner(self, gate: Gate, admitted: Admitted, ip: str) -> None:
        gate.client = Client(ip, admitted.key, admitted.allowed, vouched=admitted.vouched)
        limits = self.admission.limits
        if self.screen is None and limits.greet_wait <= 0:
            self._hand(gate)
            return
        gate.stage = Stage.GREETING
        self.waiting.add(gate)
        if self.screen is not None:
            deadline = screen_deadline(
                limits.greet_wait, self._screen_timeout(), self.admission.stressed
            )
            gate.screening = self.clock.create_task(self._screen(gate, self.screen, deadline))
        if limits.greet_wait > 0:
            # Postscreen's teaser: the first line of a multi-line greeting. A real client
            # waits for the final "220 " line; a bot that fires its commands now is caught.
            assert gate.transport is not None
            gate.transport.write(self.teaser)
            gate.teased = True
            gate.timer = self.clock.call_later(limits.greet_wait, self._greet_wait_over, gate)
            if gate.buffer:  # came with its proxy's header, before any banner
                self.talked(gate, b"")

    def _screen_timeout(self) -> float:
        limits = self.admission.limits
        return limits.stress_screen_timeout if self.admission.stressed else limits.screen_timeout

    def talked(self, gate: Gate, data: bytes) -> None:
        """Bytes from an admitted client before its banner."""
        if gate.teased:
            client = gate.client
            assert client is not None
            self.admission.violation(client.key, Violation.PREGREET, client.allowed)
            self._refuse(gate, client.key, verdicts.PREGREET)
        elif len(gate.buffer) < MAX_EARLY:  # only the screen runs: keep a little for later
            gate.buffer += data[: MAX_EARLY - len(gate.buffer)]

    def _greet_wait_over(self, gate: Gate) -> None:
        gate.timer = None
        if gate.screening is None:
            self._hand(gate)

    async def _screen(self, gate: Gate, screen: Screener, deadline: float) -> None:
        client = gate.client
        assert client is not None
        try:
            verdict = await screen.screen(client.ip, client.allowed, deadline)
        except Exception as error:  # fail open: a bug in a check never costs a client
            emit("screen_exception", error=type(error).__name__)
            verdict = PASS
        finally:
            gate.screening = None
        if gate.stage is not Stage.GREETING:
            return  # gone, or refused meanwhile (talked before the banner)
        if verdict.client_name is not None:
            gate.client = client = _named(client, verdict.client_name)
        if verdict.deferred:  # its network spent its lookups: never passed unscreened
            self.admission.refused(client.key, Refused.SCREEN_BUSY)
            self._refuse(gate, client.key, verdicts.SCREEN_BUSY)
            return
        if verdict.action == "drop" and verdict.reply is not None:
            self.admission.refused(client.key, Refused.DNSBL)
            self._refuse(gate, client.key, Refusal(verdict.reply, Refused.DNSBL), verdict.listed)
            return
        if verdict.action == "enforce" and verdict.reply is not None:
            gate.client = _screened(client, verdict.reply)
            self.events.listed(client.key, Refused.DNSBL, verdict.listed)
        elif verdict.action == "ignore":  # the dry run: counted and shown, nothing more
            self.events.listed(client.key, Refused.DNSBL_IGNORED, verdict.listed)
        if gate.timer is None:  # the pregreet wait is over too (or was never on)
            self._hand(gate)

    # --- hand-over ------------------------------------------------------------------

    def _hand(self, gate: Gate) -> None:
        client, transport = gate.client, gate.transport
        assert client is not None and transport is not None
        self._forget(gate)
        early = bytes(gate.buffer)
        gate.stage, gate.transport, gate.counted = Stage.HANDED, None, None
        if not self.handover.hand(transport, client, early):
            gate.transport, gate.counted = transport, client.key
            self._refuse(gate, client.key, verdicts.WORKER_BUSY)

    def _forget(self, gate: Gate) -> None:
        self._header_done(gate)
        self.waiting.discard(gate)
        if gate.timer is not None:
            gate.timer.cancel()
            gate.timer = None
        if gate.screening is not None:
            gate.screening.cancel()
            gate.screening = None
        gate.stage = Stage.GONE

    def lost(self, gate: Gate) -> None:
        """The client (or proxy) left before its hand-over."""
        if gate.stage is Stage.HANDED or gate.stage is Stage.GONE:
            return
        self._forget(gate)
        gate.transport = None
        if gate.counted is not None:
            self.admission.release(gate.counted)
            gate.counted = None

    def drain(self) -> None:
        """Stop admitting: newcomers and every connection not handed over hear 421."""
        self.draining = True
        for gate in list(self.waiting):
            self._refuse(gate, gate.client.key if gate.client else gate.ip, verdicts.SHUTTING_DOWN)


def _named(client: Client, name: str) -> Client:
    return dataclasses.replace(client, name=name)


def _screened(client: Client, reply: Reply) -> Client:
    return dataclasses.replace(client, screened=reply.text)


class Stage(enum.Enum):
    """Where a connection is at the door."""

    HEADER = "header"  # a trusted proxy's header is awaited
    GREETING = "greeting"  # the teaser is out, or the screen runs: no banner yet
    HANDED = "handed"  # a worker has it
    GONE = "gone"  # refused, or the client left


class Gate(asyncio.Protocol):
    """The first protocol of every connection: the door's hands on it until the hand-over."""

    __slots__ = (
        "buffer",
        "client",
        "counted",
        "door",
        "ip",
        "proxy",
        "screening",
        "stage",
        "teased",
        "timer",
        "transport",
    )

    def __init__(self, door: Door) -> None:
        self.door = door
        self.transport: asyncio.Transport | None = None
        self.ip = ""
        self.client: Client | None = None
        self.counted: str | None = None  # the key admission counted this connection under
        self.stage: Stage | None = None
        self.buffer = bytearray()
        self.timer: asyncio.TimerHandle | None = None
        self.screening: asyncio.Task[None] | None = None
        self.proxy: str | None = None
        self.teased = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports are full transports without subclassing asyncio's ABCs.
        self.door.arrived(self, cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        if self.stage is Stage.HEADER:
            self.door.header_input(self, data)
        elif self.stage is Stage.GREETING:
            self.door.talked(self, data)

    def eof_received(self) -> bool | None:
        return None  # close: a client that half-closes before its banner is gone

    def connection_lost(self, exc: Exception | None) -> None:
        self.door.lost(self)


__all__ = [
    "Door",
    "DoorConfig",
    "DoorEvents",
    "Gate",
    "Network",
    "Screener",
    "from_trusted_proxy",
]
