"""A small asynchronous DNS client: A and PTR queries for the screen, TXT, MX and AAAA for
the authentication checks (receiver.intake.authcheck), over UDP.

Why our own and not a library: the screen asks two kinds of question (an A record under
a list domain, a PTR for reverse DNS), and what it needs above all is control of cost
and failure: a cap on queries in flight and per second that refuses at once instead of
queueing, a deadline per query that is one timer, and every failure told apart (timeout,
SERVFAIL, garbage) so it can be counted and then treated as "not listed". A query here
is one `sendto` on a long-lived connected UDP socket per server (the kernel drops answers
from any other address) and a dict entry; no thread, no task, no socket per query.
dnspython's asyncio resolver opens a socket and runs a coroutine per query and reads
/etc/resolv.conf itself; aiodns/pycares brings a C library with its own socket and timer
management and error codes to map. Both would work; neither makes the bounds simpler.

`lookup` never raises: it returns a future that always ends with an `Answer`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["AAAA", "MX", "OUTCOMES", "PTR", "TXT", "A", "Answer", "Resolver", "system_servers"]

A = 1
PTR = 12
MX = 15  # authentication checks (receiver.intake.authcheck): SPF's `mx` mechanism
TXT = 16  # SPF and DMARC records, DKIM keys
AAAA = 28  # SPF's `a` and `mx` for IPv6 clients
# How a lookup ended: `answer` (records of the type asked), `nxdomain` (no such name, or
# no record of that type), `servfail` (SERVFAIL, REFUSED or another error code),
# `timeout`, `garbage` (an answer we cannot parse, truncated, or not to our question),
# `throttled` (not sent: too many in flight or per second).
OUTCOMES = ("answer", "nxdomain", "servfail", "timeout", "garbage", "throttled")
MAX_VALUES = 32  # records kept from one answer: a list gives one or two, a TXT set a dozen
_HOST = re.compile(r"[A-Za-z0-9_.-]{1,253}")
Server = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Answer:
    """How one lookup ended, the values found (A: dotted quads, PTR: names), and how long
    it took."""

    outcome: str
    values: tuple[str, ...] = ()
    seconds: float = 0.0


def system_servers(resolv_conf: str) -> tuple[Server, ...]:
    """The `nameserver` lines of a resolv.conf text, port 53."""
    servers = []
    for line in resolv_conf.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append((fields[1].split("%")[0], 53))
    return tuple(servers)


# EDNS0 (RFC 6891 6.1.2): room for 1232 octets of answer, the DNS flag day's size, so a
# DKIM key or a domain's TXT set fits in one UDP answer; a larger one comes truncated and
# ends as `garbage` (there is no TCP retry).
_OPT = struct.pack("!BHHIH", 0, 41, 1232, 0, 0)


def encode_query(qid: int, name: str, qtype: int) -> bytes:
    """One question, recursion desired (RFC 1035 4.1); TXT questions carry EDNS0."""
    labels = b"".join(
        bytes([len(label)]) + label for label in (x.encode("ascii") for x in name.split("."))
    )
    edns = qtype == TXT
    return (
        struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1 if edns else 0)
        + labels
        + b"\x00"
        + struct.pack("!HH", qtype, 1)
        + (_OPT if edns else b"")
    )


def decode_answer(data: bytes, name: str, qtype: int) -> Answer:
    """The outcome and values of an answer to (name, qtype); never raises."""
    try:
        return _decode(data, name, qtype)
    except (IndexError, struct.error, ValueError, UnicodeDecodeError):
        return Answer("garbage")


def _decode(data: bytes, name: str, qtype: int) -> Answer:
    _, flags, qdcount, ancount = struct.unpack_from("!HHHH", data)
    if not flags & 0x8000 or flags & 0x0200 or qdcount != 1:
        return Answer("garbage")  # not a response, truncated, or not one question
    asked, offset = _name(data, 12)
    if asked.lower() != name.lower() or struct.unpack_from("!H", data, offset)[0] != qtype:
        return Answer("garbage")  # an answer to another question
    rcode = flags & 0x000F
    if rcode == 3:
        return Answer("nxdomain")
    if rcode != 0:
        return Answer("servfail")
    offset += 4
    values: list[str] = []
    for _ in range(min(ancount, 64)):
        _, offset = _name(data, offset)
        rtype, _, _, length = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        if offset + length > len(data):
            return Answer("garbage")
        if rtype == qtype and len(values) < MAX_VALUES:
            values.append(_value(data, offset, length, qtype))
        offset += length
    return Answer("answer", tuple(values)) if values else Answer("nxdomain")


def _value(data: bytes, offset: int, length: int, qtype: int) -> str:
    if qtype == A:
        if length != 4:
            raise ValueError("an A record is four octets")
        return ".".join(str(octet) for octet in data[offset : offset + 4])
    if qtype == AAAA:
        if length != 16:
            raise ValueError("an AAAA record is sixteen octets")
        return str(ipaddress.IPv6Address(data[offset : offset + 16]))
    if qtype == TXT:
        return _text(data[offset : offset + length])
    if qtype == MX:
        offset += 2  # the preference: SPF looks at every exchange alike (RFC 7208 5.4)
    host, _ = _name(data, offset)
    if not _HOST.fullmatch(host):
        raise ValueError("not a host name")  # it will be written into Received lines
    return host


def _text(rdata: bytes) -> str:
    """A TXT record's strings joined without a separator (RFC 7208 3.3, RFC 6376
    3.6.2.2); bytes that are not ASCII become U+FFFD, which no record syntax accepts."""
    parts: list[bytes] = []
    offset = 0
    while offset < len(rdata):
        length = rdata[offset]
        if offset + 1 + length > len(rdata):
            raise ValueError("a TXT string runs past its record")
        parts.append(rdata[offset + 1 : offset + 1 + length])
        offset += 1 + length
    return b"".join(parts).decode("ascii", "replace")


def _name(data: bytes, offset: int) -> tuple[str, int]:
    """A domain name at `offset`, compression pointers followed (RFC 1035 4.1.4), and
    the offset after it; bounded however the pointers loop."""
    labels: list[str] = []
    end: int | None = None
    for _ in range(128):
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise ValueError("unknown label type")
        offset += 1
        if length == 0:
            return ".".join(labels), end if end is not None else offset
        labels.append(data[offset : offset + length].decode("ascii"))
        offset += length
    raise ValueError("name too long or looping")


class _Endpoint(asyncio.DatagramProtocol):
    """One connected UDP socket to one server."""

    def __init__(self, on_answer: Callable[[bytes], None]) -> None:
        self.on_answer = on_answer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.on_answer(data)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP unreachable: the queries to this server run into their timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _same(endpoint: _Endpoint) -> _Endpoint:
    return endpoint


class _Pending:
    __slots__ = ("future", "name", "qtype", "started", "timer")

    def __init__(
        self, future: asyncio.Future[Answer], name: str, qtype: int, started: float
    ) -> None:
        self.future = future
        self.name = name
        self.qtype = qtype
        self.started = started
        self.timer: asyncio.TimerHandle | None = None


class Resolver:
    """Queries to the configured servers (in turn), bounded in flight and per second."""

    def __init__(
        self,
        servers: tuple[Server, ...],
        *,
        max_in_flight: int,
        rate: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not servers:
            raise ValueError("no DNS server to ask")
        self.servers = servers
        self.max_in_flight = max_in_flight
        self.rate = rate
        self._clock = clock
        self._endpoints: list[_Endpoint] = []
        self._pending: dict[tuple[int, int], _Pending] = {}
        self._next = 0
        self._tokens = float(rate)
        self._refilled = clock()

    async def open(self) -> None:
        """Open one socket per server (no packet is sent until a lookup)."""
        loop = asyncio.get_running_loop()
        for index, server in enumerate(self.servers):
            endpoint = _Endpoint(functools.partial(self._answer, index))
            factory = functools.partial(_same, endpoint)
            await loop.create_datagram_endpoint(factory, remote_addr=server)
            self._endpoints.append(endpoint)

    def close(self) -> None:
        for endpoint in self._endpoints:
            if endpoint.transport is not None:
                endpoint.transport.close()
        for pending in list(self._pending.values()):
            self._finish(pending, Answer("timeout"))
        self._pending.clear()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def lookup(self, name: str, qtype: int, timeout: float) -> asyncio.Future[Answer]:
        """Send one query; the future ends with the answer or at `timeout` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        if len(self._pending) >= self.max_in_flight or not self._take():
            future.set_result(Answer("throttled"))
            return future
        index = self._next
        self._next = (index + 1) % len(self.servers)
        endpoint = self._endpoints[index] if index < len(self._endpoints) else None
        if endpoint is None or endpoint.transport is None:
            future.set_result(Answer("servfail"))  # not opened, or closed
            return future
        qid = secrets.randbits(16)
        while (index, qid) in self._pending:
            qid = secrets.randbits(16)
        pending = _Pending(future, name, qtype, self._clock())
        try:
            endpoint.transport.sendto(encode_query(qid, name, qtype))
        except (OSError, UnicodeEncodeError):
            future.set_result(Answer("servfail"))
            return future
        key = (index, qid)
        self._pending[key] = pending
        pending.timer = loop.call_later(timeout, self._expire, key)
        return future

    def _take(self) -> bool:
        """A token of the per-second budget (a one-second burst), or False."""
        now = self._clock()
        self._tokens = min(float(self.rate), self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _answer(self, index: int, data: bytes) -> None:
        if len(data) < 12:
            return
        pending = self._pending.pop((index, int.from_bytes(data[:2], "big")), None)
        if pending is None:
            return  # late, duplicate or forged: nobody is waiting for it
        answer = decode_answer(data, pending.name, pending.qtype)
        if pending.timer is not None:
            pending.timer.cancel()
        self._finish(pending, answer)

    def _expire(self, key: tuple[int, int]) -> None:
        pending = self._pending.pop(key, None)
        if pending is not None:
            self._finish(pending, Answer("timeout"))

    def _finish(self, pending: _Pending, answer: Answer) -> None:
        if not pending.future.done():
            seconds = self._clock() - pending.started
            pending.future.set_result(Answer(answer.outcome, answer.values, seconds))
