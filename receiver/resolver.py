"""A small asynchronous DNS client: A and PTR queries for the screen, TXT, MX and AAAA for
the authentication checks (receiver.intake.authcheck), over UDP.

Why our own and not a library: the screen asks two kinds of question (an A record under
a list domain, a PTR for reverse DNS), and what it needs above all is control of cost
and failure: a cap on queries in flight and per second that refuses at once instead of
queueing, a deadline per query that is one timer, and every failure told apart (timeout,
SERVFAIL, garbage) so it can be counted and then treated as "not listed".

It resists forgery as a stub resolver should (RFC 5452): each query goes out from a socket
of its own, on a source port the kernel picks at random, connected to the server it asks
(the kernel drops datagrams from any other address); its 16-bit id is random, and with
`case_randomised` (DNS 0x20) so is the case of each letter of the name. A datagram is an
answer only if its id, its question (name, case included, type and class) and its size
(no larger than we said we accept) all match: anything else is dropped and the lookup
keeps waiting, so a blind flood of datagrams ends no lookup early. Answers carry their
TTL (a negative one from the SOA, RFC 2308), so callers cache no longer than the owner of
the name allows.

`lookup` never raises: it returns a future that always ends with an `Answer`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["AAAA", "MX", "OUTCOMES", "PTR", "TXT", "A", "Answer", "Resolver", "system_servers"]

A = 1
PTR = 12
SOA = 6  # read from an answer's authority section: the negative TTL (RFC 2308 5)
MX = 15  # authentication checks (receiver.intake.authcheck): SPF's `mx` mechanism
TXT = 16  # SPF and DMARC records, DKIM keys
AAAA = 28  # SPF's `a` and `mx` for IPv6 clients
# How a lookup ended: `answer` (records of the type asked), `nxdomain` (no such name, or
# no record of that type), `servfail` (SERVFAIL, REFUSED or another error code),
# `timeout`, `garbage` (an answer to our question we cannot parse, or truncated, or
# larger than we said we accept), `throttled` (not sent: too many in flight or per second).
OUTCOMES = ("answer", "nxdomain", "servfail", "timeout", "garbage", "throttled")
MAX_VALUES = 32  # records kept from one answer: a list gives one or two, a TXT set a dozen
MAX_DATAGRAMS = 16  # datagrams read per wakeup of one query's socket
_HOST = re.compile(r"[A-Za-z0-9_.-]{1,253}")
Server = tuple[str, int]
PLAIN_SIZE = 512  # what a query without EDNS0 accepts (RFC 1035 4.2.1)
# EDNS0 (RFC 6891 6.1.2): room for 1232 octets of answer, the DNS flag day's size, so a
# DKIM key or a domain's TXT set fits in one UDP answer; a larger one comes truncated and
# ends as `garbage` (there is no TCP retry), as does one larger than we said we accept.
EDNS_SIZE = 1232
_OPT = struct.pack("!BHHIH", 0, 41, EDNS_SIZE, 0, 0)


@dataclass(frozen=True, slots=True)
class Answer:
    """How one lookup ended, the values found (A: dotted quads, PTR: names), how long it
    took, and how long the answer may be kept (seconds; None when it did not say)."""

    outcome: str
    values: tuple[str, ...] = ()
    seconds: float = 0.0
    ttl: float | None = None


def system_servers(resolv_conf: str) -> tuple[Server, ...]:
    """The `nameserver` lines of a resolv.conf text, port 53."""
    servers = []
    for line in resolv_conf.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            servers.append((fields[1].split("%")[0], 53))
    return tuple(servers)


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


def accepted_size(qtype: int) -> int:
    """The largest answer a query of `qtype` says it accepts."""
    return EDNS_SIZE if qtype == TXT else PLAIN_SIZE


def randomised(name: str) -> str:
    """DNS 0x20 (draft-vixie-dnsext-dns0x20): each letter's case at random, one more bit
    a forger must guess per letter; servers copy the question as asked."""
    bits = secrets.randbits(len(name))
    return "".join(
        c.upper() if bits >> i & 1 else c.lower() if c.isalpha() else c for i, c in enumerate(name)
    )


def decode_answer(data: bytes, name: str, qtype: int) -> Answer:
    """The outcome and values of an answer to (name, qtype), compared without case; never
    raises. An answer to another question is `garbage`."""
    question = read_question(data)
    if question is None or question[1:] != (name.lower(), qtype):
        return Answer("garbage")
    return read_answer(data, qtype)


def read_question(data: bytes) -> tuple[int, str, int] | None:
    """(id, name as lowercase, type) of a response with one IN question, else None."""
    try:
        qid, flags, qdcount = struct.unpack_from("!HHH", data)
        if not flags & 0x8000 or qdcount != 1:
            return None
        name, offset = _name(data, 12)
        qtype, qclass = struct.unpack_from("!HH", data, offset)
    except (IndexError, struct.error, ValueError, UnicodeDecodeError):
        return None
    return (qid, name.lower(), qtype) if qclass == 1 else None


def question_name(data: bytes) -> str | None:
    """The question's name exactly as the response carries it (case kept)."""
    try:
        return _name(data, 12)[0]
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


def read_answer(data: bytes, qtype: int) -> Answer:
    """The outcome, values and TTL of a response already known to answer our question;
    never raises."""
    try:
        return _decode(data, qtype)
    except (IndexError, struct.error, ValueError, UnicodeDecodeError):
        return Answer("garbage")


def _decode(data: bytes, qtype: int) -> Answer:
    _, flags, _, ancount, nscount = struct.unpack_from("!HHHHH", data)
    if flags & 0x0200:
        return Answer("garbage")  # truncated
    _, offset = _name(data, 12)
    offset += 4
    rcode = flags & 0x000F
    if rcode not in (0, 3):
        return Answer("servfail")
    values: list[str] = []
    ttls: list[float] = []
    for _ in range(min(ancount, 64)):
        _, offset = _name(data, offset)
        rtype, _, ttl, length = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        if offset + length > len(data):
            return Answer("garbage")
        if rtype == qtype and len(values) < MAX_VALUES:
            values.append(_value(data, offset, length, qtype))
            ttls.append(float(ttl))
        offset += length
    if rcode == 0 and values:
        return Answer("answer", tuple(values), ttl=min(ttls))
    return Answer("nxdomain", ttl=_negative_ttl(data, offset, nscount))


def _negative_ttl(data: bytes, offset: int, nscount: int) -> float | None:
    """How long a "no such name" may be kept: the SOA's TTL, capped by its MINIMUM field
    (RFC 2308 5); None when the answer carries no SOA."""
    for _ in range(min(nscount, 16)):
        _, offset = _name(data, offset)
        rtype, _, ttl, length = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        if rtype == SOA and length >= 20:
            minimum = struct.unpack_from("!I", data, offset + length - 4)[0]
            return float(min(ttl, minimum))
        offset += length
    return None


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


class _Query:
    """One lookup in flight: its own socket, its id, its question as asked."""

    __slots__ = ("asked", "future", "qid", "qtype", "sock", "started", "timer")

    def __init__(
        self,
        future: asyncio.Future[Answer],
        sock: socket.socket,
        qid: int,
        asked: str,
        qtype: int,
        started: float,
    ) -> None:
        self.future = future
        self.sock = sock
        self.qid = qid
        self.asked = asked
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
        case_randomised: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not servers:
            raise ValueError("no DNS server to ask")
        self.servers = servers
        self.max_in_flight = max_in_flight
        self.rate = rate
        self.case_randomised = case_randomised
        self._clock = clock
        self._queries: set[_Query] = set()
        self._next = 0
        self._tokens = float(rate)
        self._refilled = clock()
        self._closed = False
        self.dropped = 0  # datagrams that answered nothing we asked (late, stray, forged)

    async def open(self) -> None:
        """Nothing to open: each query has a socket of its own (no packet is sent until a
        lookup)."""
        self._closed = False

    def close(self) -> None:
        self._closed = True
        for query in list(self._queries):
            self._finish(query, Answer("timeout"))

    @property
    def in_flight(self) -> int:
        return len(self._queries)

    def lookup(self, name: str, qtype: int, timeout: float) -> asyncio.Future[Answer]:
        """Send one query; the future ends with the answer or at `timeout` seconds."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        if len(self._queries) >= self.max_in_flight or not self._take():
            future.set_result(Answer("throttled"))
            return future
        if self._closed:
            future.set_result(Answer("servfail"))
            return future
        server = self.servers[self._next]
        self._next = (self._next + 1) % len(self.servers)
        asked = randomised(name) if self.case_randomised else name
        qid = secrets.randbits(16)
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM)
        except OSError:  # out of descriptors: as if the server failed
            future.set_result(Answer("servfail"))
            return future
        try:
            sock.setblocking(False)
            sock.connect(server)  # a random source port; only this server's datagrams
            sock.send(encode_query(qid, asked, qtype))
        except (OSError, UnicodeEncodeError):
            sock.close()
            future.set_result(Answer("servfail"))
            return future
        query = _Query(future, sock, qid, asked, qtype, self._clock())
        self._queries.add(query)
        loop.add_reader(sock.fileno(), self._readable, query)
        query.timer = loop.call_later(timeout, self._finish, query, Answer("timeout"))
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

    def _readable(self, query: _Query) -> None:
        for _ in range(MAX_DATAGRAMS):
            try:
                data = query.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP unreachable: the query runs into its timeout
                return
            answer = self._accept(query, data)
            if answer is not None:
                self._finish(query, answer)
                return
            self.dropped += 1

    def _accept(self, query: _Query, data: bytes) -> Answer | None:
        """The answer `data` gives our query, or None if it answers something else."""
        question = read_question(data)
        if question is None or question[0] != query.qid or question[2] != query.qtype:
            return None
        if self.case_randomised:
            if question_name(data) != query.asked:
                return None
        elif question[1] != query.asked.lower():
            return None
        if len(data) > accepted_size(query.qtype):
            return Answer("garbage")  # larger than we said we accept: as if truncated
        return read_answer(data, query.qtype)

    def _finish(self, query: _Query, answer: Answer) -> None:
        if query not in self._queries:
            return
        self._queries.discard(query)
        if query.timer is not None:
            query.timer.cancel()
        loop = asyncio.get_running_loop()
        loop.remove_reader(query.sock.fileno())
        query.sock.close()
        if not query.future.done():
            seconds = self._clock() - query.started
            query.future.set_result(Answer(answer.outcome, answer.values, seconds, answer.ttl))
