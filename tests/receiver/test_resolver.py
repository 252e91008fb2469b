"""The screen's DNS client against a real DNS server on loopback."""

from __future__ import annotations

import asyncio
import time

from receiver.resolver import (
    AAAA,
    MX,
    PTR,
    TXT,
    A,
    Resolver,
    decode_answer,
    encode_query,
    randomised,
    system_servers,
)
from tests.support.dnsserver import GARBAGE, SERVFAIL, TIMEOUT, DnsServer, Record, closed_port


async def _resolver(port: int, **kw: int) -> Resolver:
    resolver = Resolver(
        (("127.0.0.1", port),),
        max_in_flight=kw.get("max_in_flight", 100),
        rate=kw.get("rate", 1000),
    )
    await resolver.open()
    return resolver


async def test_each_outcome_is_told_apart() -> None:
    records = {
        "a.test": Record.a("127.0.0.2", "127.0.0.4"),
        "fail.test": SERVFAIL,
        "silent.test": TIMEOUT,
        "junk.test": GARBAGE,
        "4.3.2.1.in-addr.arpa": Record.ptr("mail.sender.test"),
    }
    with DnsServer(records) as dns:
        resolver = await _resolver(dns.port)
        try:
            answers = await asyncio.gather(
                resolver.lookup("a.test", A, 1.0),
                resolver.lookup("none.test", A, 1.0),
                resolver.lookup("fail.test", A, 1.0),
                resolver.lookup("silent.test", A, 0.2),
                resolver.lookup("junk.test", A, 1.0),
                resolver.lookup("4.3.2.1.in-addr.arpa", PTR, 1.0),
            )
        finally:
            resolver.close()
    assert [a.outcome for a in answers] == [
        "answer",
        "nxdomain",
        "servfail",
        "timeout",
        "garbage",
        "answer",
    ]
    assert answers[0].values == ("127.0.0.2", "127.0.0.4")
    assert answers[5].values == ("mail.sender.test",)
    assert 0.15 < answers[3].seconds < 0.5


async def test_txt_mx_and_aaaa_for_the_authentication_checks() -> None:
    key = "v=DKIM1; k=rsa; p=" + "A" * 600  # several TXT strings, past 512 octets: EDNS0
    records = {
        "TXT:shop.test": Record.txt("v=spf1 -all", "other text"),
        "MX:shop.test": Record.mx("mx1.shop.test", "mx2.shop.test"),
        "AAAA:mx1.shop.test": Record.aaaa("2001:db8::25"),
        "TXT:s1._domainkey.shop.test": Record.txt(key),
    }
    with DnsServer(records) as dns:
        resolver = await _resolver(dns.port)
        try:
            txt, mx, aaaa, dkim, nodata = await asyncio.gather(
                resolver.lookup("shop.test", TXT, 1.0),
                resolver.lookup("shop.test", MX, 1.0),
                resolver.lookup("mx1.shop.test", AAAA, 1.0),
                resolver.lookup("s1._domainkey.shop.test", TXT, 1.0),
                resolver.lookup("shop.test", A, 1.0),  # the name exists, no A record
            )
        finally:
            resolver.close()
    assert txt.values == ("v=spf1 -all", "other text")
    assert mx.values == ("mx1.shop.test", "mx2.shop.test")
    assert aaaa.values == ("2001:db8::25",)
    assert dkim.values == (key,)  # the strings joined without a separator (RFC 6376 3.6.2.2)
    assert nodata.outcome == "nxdomain"


def test_only_txt_questions_carry_edns0() -> None:
    assert encode_query(1, "a.test", A)[10:12] == b"\x00\x00"  # no additional record
    query = encode_query(1, "a.test", TXT)
    assert query[10:12] == b"\x00\x01" and query.endswith(b"\x00\x00\x29\x04\xd0" + bytes(6))


async def test_a_dead_server_costs_the_timeout_and_no_more() -> None:
    resolver = await _resolver(closed_port())
    try:
        started = time.monotonic()
        answer = await resolver.lookup("x.test", A, 0.3)
        assert answer.outcome == "timeout"
        assert time.monotonic() - started < 0.6
        assert resolver.in_flight == 0
    finally:
        resolver.close()


async def test_past_the_caps_lookups_are_not_sent_and_say_so_at_once() -> None:
    with DnsServer({"slow.test": Record.a("127.0.0.2", delay=0.3)}) as dns:
        resolver = await _resolver(dns.port, max_in_flight=2, rate=1000)
        try:
            futures = [resolver.lookup("slow.test", A, 1.0) for _ in range(3)]
            assert futures[2].done() and futures[2].result().outcome == "throttled"
            await asyncio.gather(*futures)
        finally:
            resolver.close()
        resolver = await _resolver(dns.port, max_in_flight=100, rate=3)
        try:
            outcomes = [(await resolver.lookup("a.test", A, 1.0)).outcome for _ in range(4)]
        finally:
            resolver.close()
    assert outcomes == ["nxdomain", "nxdomain", "nxdomain", "throttled"]


def test_an_answer_to_another_question_is_not_ours() -> None:
    query = encode_query(7, "a.test", A)
    response = bytearray(query)
    response[2] |= 0x80  # QR: a response, but to a.test
    assert decode_answer(bytes(response), "b.test", A).outcome == "garbage"
    assert decode_answer(bytes(response), "a.test", A).outcome == "nxdomain"  # no records
    assert decode_answer(query, "a.test", A).outcome == "garbage"  # not a response


def test_compression_loops_are_garbage_not_a_hang() -> None:
    header = b"\x00\x07\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00"
    looping = header + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    assert decode_answer(looping, "a.test", A).outcome == "garbage"


def test_system_servers_come_from_nameserver_lines() -> None:
    text = "# comment\nsearch x\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\n"
    assert system_servers(text) == (("10.0.0.53", 53), ("fe80::1", 53))


# --- forgery (RFC 5452) ------------------------------------------------------------------


async def test_datagrams_with_our_id_and_another_question_end_no_lookup() -> None:
    # A blind forger floods datagrams carrying a pending id: none of them is an answer to
    # the question asked, so the lookup waits for the real one (it used to end at the
    # first, as garbage, and the screen then failed open).
    with DnsServer({"listed.test": Record("stray", ("127.0.0.2",))}) as dns:
        resolver = await _resolver(dns.port)
        try:
            answer = await resolver.lookup("listed.test", A, 2.0)
        finally:
            resolver.close()
    assert (answer.outcome, answer.values) == ("answer", ("127.0.0.2",))
    assert resolver.dropped == 200


async def test_every_query_goes_out_from_a_source_port_of_its_own() -> None:
    ports: list[int] = []
    import socket as sockets

    server = sockets.socket(sockets.AF_INET, sockets.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    loop = asyncio.get_running_loop()
    seen: asyncio.Queue[int] = asyncio.Queue()
    loop.add_reader(server.fileno(), lambda: seen.put_nowait(server.recvfrom(512)[1][1]))
    resolver = await _resolver(server.getsockname()[1])
    try:
        for _ in range(20):
            resolver.lookup("x.test", A, 0.05)
        for _ in range(20):
            ports.append(await asyncio.wait_for(seen.get(), 2))
    finally:
        loop.remove_reader(server.fileno())
        server.close()
        resolver.close()
    assert len(set(ports)) == 20  # 20 queries, 20 source ports


async def test_an_answer_larger_than_the_query_accepts_is_treated_as_truncated() -> None:
    with DnsServer({"big.test": Record("big")}) as dns:
        resolver = await _resolver(dns.port)
        try:
            answer = await resolver.lookup("big.test", A, 1.0)
        finally:
            resolver.close()
    assert answer.outcome == "garbage" and answer.values == ()


async def test_with_0x20_the_question_must_come_back_in_the_case_it_was_asked() -> None:
    with DnsServer({"a.test": Record.a("127.0.0.2")}) as dns:
        resolver = Resolver(
            (("127.0.0.1", dns.port),), max_in_flight=10, rate=100, case_randomised=True
        )
        await resolver.open()
        try:
            answer = await resolver.lookup("a.test", A, 1.0)
        finally:
            resolver.close()
    assert answer.outcome == "answer"  # dnslib copies the question as asked
    assert randomised("abcdefghijklmnopqrstuvwxyz" * 4).lower() == "abcdefghijklmnopqrstuvwxyz" * 4


def test_answers_carry_their_ttl_and_a_negative_one_from_the_soa() -> None:
    from dnslib import QTYPE, RR, SOA, DNSRecord
    from dnslib import A as ARecord

    query = DNSRecord.question("a.test", "A")
    positive = query.reply()
    positive.add_answer(RR("a.test", QTYPE.A, rdata=ARecord("127.0.0.2"), ttl=42))
    assert decode_answer(bytes(positive.pack()), "a.test", A).ttl == 42
    negative = query.reply()
    negative.header.rcode = 3
    soa = SOA("ns.test", "admin.test", (1, 3600, 600, 86400, 300))
    negative.add_auth(RR("test", QTYPE.SOA, rdata=soa, ttl=900))
    assert decode_answer(bytes(negative.pack()), "a.test", A).ttl == 300  # min(TTL, MINIMUM)
    bare = query.reply()
    bare.header.rcode = 3
    assert decode_answer(bytes(bare.pack()), "a.test", A).ttl is None
