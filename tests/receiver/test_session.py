"""The SMTP dialogue against a real receiver process and a real store."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.conftest import ServiceFactory
from tests.support.api import AUTH, listing
from tests.support.metrics import sample
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient, queued_id, rss_kb, send_message, smtp_from, wait_for


def raw_of(api: ServiceProcess, message_id: str) -> bytes:
    response = httpx.get(f"{api.http_url}/v1/messages/{message_id}/raw", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "message/rfc822"
    return strip_received(response.content)


def strip_received(data: bytes) -> bytes:
    """The bytes after our (folded) Received: header."""
    assert data.startswith(b"Received: from ")
    position = data.index(b"\r\n") + 2
    while data[position : position + 1] in (b"\t", b" "):  # continuation lines
        position = data.index(b"\r\n", position) + 2
    return data[position:]


def test_message_is_readable_byte_exact_with_dots_and_8bit(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    body = (
        "Subject: =?utf-8?q?caf=C3=A9?=\r\nFrom: Ann <ann@example.org>\r\n\r\n"
        ".leading dot\r\n..two dots\r\n.\r\nnaïve déjà vu — 日本語\r\n"
    ).encode()
    with smtp_from(shared_receiver, client_ip) as client:
        client.ehlo()
        assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
        assert client.has_extn("pipelining") and client.has_extn("enhancedstatuscodes")
        code, text = client.docmd("MAIL FROM:<ann@example.org> BODY=8BITMIME")
        assert code == 250
        assert client.docmd("RCPT TO:<inbox@mx.test>")[0] == 250
        code, text = client.data(body)
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as ")
    message_id = queued_id(text.decode())
    assert raw_of(shared_api, message_id) == body
    [summary] = listing(shared_api, "inbox@mx.test")
    assert summary["id"] == message_id and summary["subject"] == "café"
    assert summary["size"] == len(body)


def test_message_to_several_recipients_is_in_each_mailbox(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    with smtp_from(shared_receiver, client_ip, "c.test") as client:
        refused = client.sendmail("a@example.org", ["one@mx.test", "TWO@MX.test"], b"Hi\r\n")
    assert refused == {}
    assert len(listing(shared_api, "one@mx.test")) == 1
    assert len(listing(shared_api, "two@mx.test")) == 1


def test_mailbox_lookup_ignores_case(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    with smtp_from(shared_receiver, client_ip, "c.test") as client:
        client.sendmail("a@example.org", ["MiXeD@Mx.Test"], b"Subject: x\r\n\r\nx\r\n")
    assert len(listing(shared_api, "mixed@mx.test")) == 1
    assert len(listing(shared_api, "MIXED@MX.TEST")) == 1


def test_recipient_outside_our_domains_gets_550_never_relayed(
    shared_receiver: ServiceProcess, client_ip: str
) -> None:
    client = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    client.hello()
    assert client.cmd("MAIL FROM:<a@example.org>").code == 250
    reply = client.cmd("RCPT TO:<victim@example.com>")
    assert reply.code == 550 and reply.text.startswith("5.7.1")
    assert client.cmd("RCPT TO:<someone@mx.test.example.com>").code == 550
    assert client.cmd("DATA").code == 503  # no valid recipient, no transaction
    client.close()


def test_recipients_past_the_cap_get_452(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(max_recipients="3")
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    assert client.cmd("MAIL FROM:<a@example.org>").code == 250
    for n in range(3):
        assert client.cmd(f"RCPT TO:<r{n}@mx.test>").code == 250
    reply = client.cmd("RCPT TO:<r3@mx.test>")
    assert reply.code == 452 and reply.text.startswith("4.5.3")
    assert client.cmd("DATA").code == 354
    client.send(b"Subject: capped\r\n\r\nbody\r\n.\r\n")
    assert client.reply().code == 250  # the first three still get the message
    client.close()


def test_line_longer_than_1000_octets_is_accepted(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    body = b"Subject: long\r\n\r\n" + b"x" * 50_000 + b"\r\nend\r\n"
    client = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    client.hello()
    reply = send_message(client, "a@example.org", ["long@mx.test"], body)
    assert reply.code == 250, reply
    assert raw_of(shared_api, queued_id(reply.text)) == body
    client.close()


def test_oversized_message_gets_552_and_memory_stays_bounded(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(max_message_size="1048576")
    before = rss_kb(receiver.process.pid)
    client = RawClient(receiver.host, receiver.port, timeout=60)
    client.hello()
    assert client.cmd("MAIL FROM:<a@example.org>").code == 250
    assert client.cmd("RCPT TO:<big@mx.test>").code == 250
    assert client.cmd("DATA").code == 354
    line = b"y" * 998 + b"\r\n"
    chunk = line * 1000  # ~1 MB
    for _ in range(40):  # 40 MB streamed, 40x the limit
        client.send(chunk)
    client.send(b".\r\n")
    reply = client.reply()
    assert reply.code == 552 and reply.text.startswith("5.3.4")
    grown = rss_kb(receiver.process.pid) - before
    assert grown < 12 * 1024, f"receiver grew by {grown} KiB while 40 MB streamed"
    # The session is still usable afterwards.
    reply = send_message(client, "a@example.org", ["big@mx.test"], b"small\r\n")
    assert reply.code == 250
    client.close()


def test_declared_size_over_limit_is_refused_at_mail(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(max_message_size="1048576")
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    reply = client.cmd("MAIL FROM:<a@example.org> SIZE=99999999")
    assert reply.code == 552 and reply.text.startswith("5.3.4")
    client.close()


def test_garbage_and_bad_commands_get_clear_errors_and_server_stays_up(
    shared_receiver: ServiceProcess,
    client_ip: str,
) -> None:
    client = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    client.hello()
    reply = client.cmd("MAIL FROM:<not an address")
    assert 500 <= reply.code < 600 and reply.text[:2] == "5."  # enhanced code added
    control = client.cmd("\x00\xff garbage")  # control bytes anywhere in a command: 501
    assert (control.code, control.text[:5]) == (501, "5.5.2")
    client.send(b"A" * 100_000 + b"\r\n")  # a command line far past 512 octets
    assert client.reply().code == 500
    client.close()
    # Another client is unaffected.
    with smtp_from(shared_receiver, client_ip, "c.test") as other:
        assert other.sendmail("a@example.org", ["ok@mx.test"], b"fine\r\n") == {}


def test_null_sender_bounce_is_accepted(shared_receiver: ServiceProcess, client_ip: str) -> None:
    client = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    client.hello()
    reply = send_message(client, "", ["bounce@mx.test"], b"Subject: bounce\r\n\r\nx\r\n")
    assert reply.code == 250
    client.close()


def test_sigterm_lets_a_message_in_data_finish(
    receiver: ServiceProcess, api: ServiceProcess
) -> None:
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    assert client.cmd("MAIL FROM:<a@example.org>").code == 250
    assert client.cmd("RCPT TO:<drain@mx.test>").code == 250
    assert client.cmd("DATA").code == 354
    client.send(b"Subject: in flight\r\n\r\npart one\r\n")
    receiver.process.terminate()
    time.sleep(0.3)
    newcomer = RawClient(receiver.host, receiver.port).reply()  # during the grace
    assert (newcomer.code, newcomer.text[:5]) == (421, "4.3.2"), newcomer
    client.send(b"part two\r\n.\r\n")
    reply = client.reply()
    assert reply.code == 250, reply
    assert client.closed_by_server(timeout=10)
    assert receiver.process.wait(15) == 0
    assert len(listing(api, "drain@mx.test")) == 1
    with pytest.raises(OSError):
        socket.create_connection((receiver.host, receiver.port), timeout=2).close()


def test_sessions_past_the_shared_data_memory_get_452_4_3_1(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(max_data_memory="1048576", max_message_size="1048576")
    holder = RawClient(receiver.host, receiver.port)
    holder.hello()
    assert holder.cmd("MAIL FROM:<a@example.org>").code == 250
    assert holder.cmd("RCPT TO:<m@mx.test>").code == 250
    assert holder.cmd("DATA").code == 354
    holder.send(b"x" * 998 + b"\r\n" + (b"y" * 998 + b"\r\n") * 700)  # ~700 KB held, no dot

    def held() -> float:
        return sample(receiver.http_url, "floodgate_data_memory_bytes")

    assert wait_for(lambda: held() >= 700_000, timeout=10), held()  # it has all arrived
    other = RawClient(receiver.host, receiver.port)
    other.hello()
    reply = send_message(other, "b@example.org", ["m@mx.test"], (b"z" * 998 + b"\r\n") * 500)
    assert (reply.code, reply.text[:5]) == (452, "4.3.1")
    holder.send(b".\r\n")
    assert holder.reply().code == 250  # the first one still completes
    small = send_message(other, "b@example.org", ["m@mx.test"], b"now it fits\r\n")
    assert small.code == 250


def test_pathological_folded_header_gets_552_and_never_stalls_other_clients(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    # 160,000 folded continuation lines (640 KB, under the size limit): the stdlib parser
    # took seconds on the event loop for this; the bounded scan refuses it at once.
    folded = b"Subject: start\r\n" + b" x\r\n" * 160_000 + b"\r\nbody\r\n"
    crafted = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip, timeout=30)
    crafted.hello()
    assert crafted.cmd("MAIL FROM:<a@example.org>").code == 250
    assert crafted.cmd("RCPT TO:<folded@mx.test>").code == 250
    assert crafted.cmd("DATA").code == 354
    crafted.send(folded + b".\r\n")
    started = time.monotonic()
    other = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    assert other.reply().code == 220
    banner_delay = time.monotonic() - started
    reply = crafted.reply()
    assert (reply.code, reply.text[:5]) == (552, "5.3.4"), reply
    assert banner_delay < 2.0, banner_delay  # it was ~6 s with the stdlib parser
    # The same session goes on; a sane message with an encoded subject is listed decoded.
    body = b"Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nx\r\n"
    assert send_message(crafted, "a@example.org", ["folded@mx.test"], body).code == 250
    assert [m["subject"] for m in listing(shared_api, "folded@mx.test")] == ["café"]


def test_undecodable_sender_fails_alone_beside_six_legit_senders(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    legit = [
        RawClient(shared_receiver.host, shared_receiver.port, source=client_ip) for _ in range(6)
    ]
    crafted = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    for client in [*legit, crafted]:
        client.hello()
    for n, client in enumerate(legit):
        assert client.cmd(f"MAIL FROM:<s{n}@example.org>").code == 250
        assert client.cmd("RCPT TO:<batch@mx.test>").code == 250
        assert client.cmd("DATA").code == 354
    crafted.send(b"MAIL FROM:<\xff\xfe@example.org>\r\n")
    first = crafted.reply()
    assert (first.code, first.text[:5]) == (553, "5.1.7")  # refused by the grammar at MAIL
    # Every final dot goes out together, so the messages share one insert batch.
    for client in legit:
        client.send(b"Subject: good\r\n\r\nx\r\n.\r\n")
    replies_ = [client.reply().code for client in legit]
    assert replies_ == [250] * 6
    assert len(listing(shared_api, "batch@mx.test")) == 6
