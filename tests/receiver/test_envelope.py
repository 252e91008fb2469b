"""The envelope through a real receiver: strict paths, canonical mailboxes, clean traces."""

from __future__ import annotations

import socket
import time
from typing import Any

from pymongo import MongoClient

from tests.conftest import ServiceFactory
from tests.support.api import listing
from tests.support.metrics import sample
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient, queued_id, wait_for


def test_malformed_paths_are_client_errors_that_count_toward_the_limit(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(hard_error_limit="3")
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    for line in ("MAIL FROM:<", "MAIL FROM:<a@[", "MAIL FROM:<a b@c>"):
        reply = client.cmd(line)
        assert (reply.code, reply.text[:5]) == (501, "5.1.7"), (line, reply)
    client.send(b"MAIL FROM:<\x00@example.org>\r\n")
    assert client.reply().code == 501  # the fourth error exceeds the limit of three
    final = client.reply()
    assert (final.code, final.text[:5]) == (421, "4.7.0") and client.closed_by_server()


def test_header_injection_through_a_quoted_recipient_is_refused(
    shared_receiver: ServiceProcess,
    mongo: MongoClient[dict[str, Any]],
    db_name: str,
    client_ip: str,
) -> None:
    client = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    client.hello()
    assert client.cmd("MAIL FROM:<a@example.org>").code == 250
    injected = client.cmd('RCPT TO:<"a\rX-Injected: yes"@mx.test>')
    assert (injected.code, injected.text[:5]) == (501, "5.5.2")
    fake_hop = client.cmd('RCPT TO:<"x; by attacker.example"@mx.test>')
    assert fake_hop.code == 553
    assert client.cmd("RCPT TO:<clean@mx.test>").code == 250
    assert client.cmd("DATA").code == 354
    client.send(b"Subject: t\r\n\r\nx\r\n.\r\n")
    reply = client.reply()
    doc = mongo[db_name]["messages"].find_one({"_id": queued_id(reply.text)})
    assert doc is not None and doc["rcpt"] == ["clean@mx.test"]
    trace = bytes(doc["received_header"])
    assert b"Injected" not in trace and b"attacker" not in trace
    assert trace.count(b"by ") == 1 and trace.count(b"\r") == trace.count(b"\r\n")


def test_postmaster_and_trailing_dots_land_in_the_mailbox_the_api_serves(
    shared_receiver: ServiceProcess, api: ServiceProcess, client_ip: str
) -> None:
    client = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    client.hello()
    assert client.cmd("MAIL FROM:<a@example.org>").code == 250
    assert client.cmd("RCPT TO:<POSTMASTER>").code == 250  # RFC 5321 4.5.1
    assert client.cmd("RCPT TO:<u@mx.test.>").code == 250
    assert client.cmd('RCPT TO:<"quoted"@mx.test>').code == 250
    assert client.cmd("DATA").code == 354
    client.send(b"Subject: canonical\r\n\r\nx\r\n.\r\n")
    assert client.reply().code == 250
    for mailbox in ("postmaster@mx.test", "u@mx.test", "quoted@mx.test", "U@MX.TEST."):
        assert [m["subject"] for m in listing(api, mailbox)] == ["canonical"], mailbox


def test_repeating_one_recipient_counts_toward_the_recipient_limit(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(max_recipients="5")
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    assert client.cmd("MAIL FROM:<a@example.org>").code == 250
    codes = [client.cmd("RCPT TO:<same@mx.test>").code for _ in range(8)]
    assert codes == [250] * 5 + [452] * 3


def test_undecodable_sender_gets_553_at_mail_and_never_reaches_a_batch(
    shared_receiver: ServiceProcess,
    client_ip: str,
) -> None:
    client = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    client.hello()
    client.send(b"MAIL FROM:<\xff\xfe@example.org>\r\n")
    reply = client.reply()
    assert (reply.code, reply.text[:5]) == (553, "5.1.7")
    client.send("MAIL FROM:<jö@example.org>\r\n".encode())
    reply = client.reply()
    assert (reply.code, reply.text[:5]) == (553, "5.6.7")  # UTF-8, but no SMTPUTF8
    client.send("MAIL FROM:<jö@example.org> SMTPUTF8\r\n".encode())
    assert client.reply().code == 250


def test_connecting_and_closing_before_the_banner_never_locks_the_address_out(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(greet_wait="2", max_connections_per_ip="3", autoban_threshold="0")
    for _ in range(10):
        sock = socket.create_connection((receiver.host, receiver.port), timeout=5)
        sock.close()  # gone during the pregreet wait, before the banner
    url = receiver.http_url
    assert wait_for(lambda: sample(url, "floodgate_connections_open") == 0, timeout=5)
    started = time.monotonic()
    client = RawClient(receiver.host, receiver.port)
    assert client.hello().code == 250  # the teaser, then the banner: served, not 421
    assert time.monotonic() - started < 10


def test_quit_is_counted_as_quit_and_unknown_commands_never_reach_the_log_raw(
    receiver: ServiceProcess,
) -> None:
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    for _ in range(3):
        assert client.cmd("XYZZY \x1b[31mred").code == 501  # a control byte: 501
        assert client.cmd("XYZZY plain").code == 500
    assert client.cmd("QUIT").code == 221
    url = receiver.http_url
    assert wait_for(lambda: sample(url, "floodgate_sessions_closed_total", reason="quit") == 1)
    assert sample(url, "floodgate_sessions_closed_total", reason="client_closed") == 0
    log = receiver.log()
    assert "\x1b" not in log and "XYZZY" not in log
