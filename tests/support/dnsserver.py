"""A small authoritative DNS server on loopback, for the screen's tests and benchmark.

It serves whatever records a test gives it (list zones, PTR names, TXT records for SPF,
DKIM and DMARC, MX and AAAA), each of which may be slow, never answered, SERVFAIL, or
garbage; every other name is NXDOMAIN. A name with records of several types is given as
`TYPE:name` keys (`"TXT:example.test"`, `"A:example.test"`), tried before the bare name.
It listens on 127.0.0.1 only and records every question it gets, so a test can count
lookups (a cached pass asks nothing) and know that the receiver asked no one else.

    with DnsServer({listed("127.0.0.2", "zen.test"): Record.a("127.0.0.2")}) as dns:
        make_receiver(dns_servers=dns.address, dnsbl_sites="zen.test")

Run alone (`python -m tests.support.dnsserver --example DIR`), it serves the example
records of README's "Try it on one machine": a DNS list that lists 127.0.0.2, and SPF,
DKIM and DMARC for shop.example, with a message DKIM-signed by that key in DIR.
"""

from __future__ import annotations

import argparse
import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnslib import AAAA, MX, PTR, QTYPE, RCODE, RR, SOA, TXT, A, DNSRecord

from receiver.door.dnsbl import query_name


def listed(ip: str, zone: str) -> str:
    """The name a list `zone` holds for `ip` (RFC 5782)."""
    name = query_name(ip, zone)
    assert name is not None
    return name


@dataclass(frozen=True)
class Record:
    """What the server does for one name."""

    # a, aaaa, ptr, txt, mx, nxdomain (with an SOA of the negative TTL given), servfail,
    # timeout, garbage (our question, an answer that cannot
    # be read), big (an answer larger than the query accepts), or stray (first a flood of
    # datagrams with our id and another question, then the values as A records)
    kind: str
    values: tuple[str, ...] = ()
    delay: float = 0.0

    @classmethod
    def a(cls, *addresses: str, delay: float = 0.0) -> Record:
        return cls("a", addresses, delay)

    @classmethod
    def ptr(cls, name: str, delay: float = 0.0) -> Record:
        return cls("ptr", (name,), delay)

    @classmethod
    def txt(cls, *texts: str, delay: float = 0.0) -> Record:
        return cls("txt", texts, delay)

    @classmethod
    def mx(cls, *names: str, delay: float = 0.0) -> Record:
        return cls("mx", names, delay)

    @classmethod
    def aaaa(cls, *addresses: str, delay: float = 0.0) -> Record:
        return cls("aaaa", addresses, delay)


SERVFAIL = Record("servfail")
TIMEOUT = Record("timeout")
GARBAGE = Record("garbage")


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        data, sock = self.request
        try:
            query = DNSRecord.parse(data)
        except Exception:
            return
        name = str(query.q.qname).rstrip(".").lower()
        self.server.owner.queries.append(name)
        records = self.server.owner.records
        typed = f"{QTYPE.get(query.q.qtype)}:{name}"
        record = records.get(typed) or records.get(name)
        if record is None and any(key.endswith(":" + name) for key in records):
            record = Record("empty")  # the name exists with records of other types
        if record is not None and record.delay:
            time.sleep(record.delay)
        if record is not None and record.kind == "stray":
            # A blind forger's guesses: our id, another question (packed once: 200 packs a
            # query would hold the server's other answers back under a flood).
            stray = DNSRecord.question(f"other.{name}", "A")
            stray.header.id, stray.header.qr = query.header.id, 1
            packed = bytes(stray.pack())
            for _ in range(200):
                _send(sock, packed, self.client_address)
            record = Record("a", record.values)
        answer = _answer(query, name, record)
        if answer is not None:
            _send(sock, answer, self.client_address)


def _send(sock: Any, data: bytes, address: Any) -> None:
    """Answer, unless the server was stopped while this answer waited (a delayed record):
    its socket is closed then, and nobody is asking any more."""
    try:
        sock.sendto(data, address)
    except OSError:
        pass


def _answer(query: Any, name: str, record: Record | None) -> bytes | None:
    reply = query.reply()
    if record is None:
        reply.header.rcode = RCODE.NXDOMAIN
    elif record.kind == "nxdomain":  # with an SOA whose MINIMUM is the negative TTL given
        reply.header.rcode = RCODE.NXDOMAIN
        negative = int(record.values[0])
        soa = SOA("ns.test", "admin.test", (1, 3600, 600, 86400, negative))
        reply.add_auth(RR("test", QTYPE.SOA, rdata=soa, ttl=3600))
    elif record.kind == "timeout":
        return None
    elif record.kind == "servfail":
        reply.header.rcode = RCODE.SERVFAIL
    elif record.kind == "garbage":
        # Our id and question, then an answer count the message does not hold.
        broken = bytearray(reply.pack())
        broken[6:8] = b"\x00\x05"
        return bytes(broken) + b"\xc0\x0c\x00\x01"
    elif record.kind == "big":
        for n in range(40):  # some 40 x 16 octets: more than a plain query's 512
            reply.add_answer(RR(name, QTYPE.A, rdata=A(f"127.0.0.{n + 2}"), ttl=60))
    elif record.kind == "ptr" and query.q.qtype == QTYPE.PTR:
        reply.add_answer(RR(name, QTYPE.PTR, rdata=PTR(record.values[0]), ttl=60))
    elif record.kind == "a" and query.q.qtype == QTYPE.A:
        for value in record.values:
            reply.add_answer(RR(name, QTYPE.A, rdata=A(value), ttl=60))
    elif record.kind == "aaaa" and query.q.qtype == QTYPE.AAAA:
        for value in record.values:
            reply.add_answer(RR(name, QTYPE.AAAA, rdata=AAAA(value), ttl=60))
    elif record.kind == "mx" and query.q.qtype == QTYPE.MX:
        for preference, value in enumerate(record.values):
            reply.add_answer(RR(name, QTYPE.MX, rdata=MX(value, preference * 10), ttl=60))
    elif record.kind == "txt" and query.q.qtype == QTYPE.TXT:
        for value in record.values:
            # Strings of at most 255 octets (RFC 1035 3.3.14): a DKIM key takes several.
            chunks = [value[i : i + 255].encode() for i in range(0, len(value), 255)]
            reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(chunks or [b""]), ttl=60))
    packed: bytes = reply.pack()
    return packed


class _Server(socketserver.ThreadingUDPServer):
    daemon_threads = True
    owner: DnsServer


class DnsServer:
    """Serves `records` on 127.0.0.1 (a free port) while in its `with` block."""

    def __init__(
        self, records: dict[str, Record] | None = None, address: tuple[str, int] = ("127.0.0.1", 0)
    ) -> None:
        self.records: dict[str, Record] = dict(records or {})
        self.queries: list[str] = []
        self._server = _Server(address, _Handler)
        self._server.owner = self
        self.host: str = address[0]
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """For FLOODGATE_DNS_SERVERS."""
        return f"{self.host}:{self.port}"

    def __enter__(self) -> DnsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def closed_port() -> int:
    """A loopback UDP port nobody listens on (a resolver that is down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


EXAMPLE_LIST = "list.example"
EXAMPLE_DOMAIN = "shop.example"


def example(directory: Path) -> dict[str, Record]:
    """README's example records; writes the message they authenticate to
    `directory/signed.eml` (From: shop.example, DKIM-signed with selector s1)."""
    from tests.support import dkimkeys

    key = dkimkeys.rsa_key()
    raw = dkimkeys.message(
        author=f"Shop <noreply@{EXAMPLE_DOMAIN}>",
        to="hello@mx.test",
        subject="Your code",
        body="Your code is 123456.\r\n",
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "signed.eml").write_bytes(dkimkeys.sign(raw, EXAMPLE_DOMAIN, "s1", key))
    return {
        listed("127.0.0.2", EXAMPLE_LIST): Record.a("127.0.0.2"),
        f"TXT:{EXAMPLE_DOMAIN}": Record.txt("v=spf1 ip4:127.0.0.0/8 -all"),
        f"s1._domainkey.{EXAMPLE_DOMAIN}": Record.txt(key.record),
        f"_dmarc.{EXAMPLE_DOMAIN}": Record.txt("v=DMARC1; p=reject"),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.dnsserver",
        description="Serve README's example DNS records on loopback until stopped.",
    )
    parser.add_argument("--listen", default="127.0.0.1:5300", help="address:port (UDP)")
    parser.add_argument(
        "--example", type=Path, required=True, metavar="DIR", help="where signed.eml goes"
    )
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    records = example(args.example)
    server = DnsServer(records, (host, int(port)))
    for name, record in records.items():
        print(f"{name}: {record.kind} {' '.join(v[:40] for v in record.values)}", flush=True)
    print(f"serving on {server.address} (UDP)", flush=True)
    server._server.serve_forever()


if __name__ == "__main__":
    main()
