"""SMTP hygiene against a real receiver: smuggling endings, synchronisation, whole replies."""

from __future__ import annotations

import socket
from typing import Any

from pymongo import MongoClient

from mailstore import MessageDocument
from tests.conftest import ServiceFactory
from tests.support.metrics import sample
from tests.support.smtp import RawClient
from tests.support.smuggling import MALFORMED_ENDINGS

SMUGGLED = b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@mx.test>\r\nDATA\r\n"


def open_data(client: RawClient, rcpt: str) -> None:
    client.hello()
    assert client.cmd("MAIL FROM:<a@example.org>").code == 250
    assert client.cmd(f"RCPT TO:<{rcpt}>").code == 250
    assert client.cmd("DATA").code == 354


def stored_raw(mongo: MongoClient[dict[str, Any]], db: str, rcpt: str) -> list[bytes]:
    found = mongo[db]["messages"].find({"rcpt": rcpt})
    return [MessageDocument.read(doc).raw for doc in found]  # compressed or not


def test_every_malformed_ending_is_refused_with_521_and_nothing_stored(
    make_receiver: ServiceFactory, mongo: MongoClient[dict[str, Any]], db_name: str
) -> None:
    receiver = make_receiver(autoban_threshold="0")
    for n, ending in enumerate(MALFORMED_ENDINGS):
        client = RawClient(receiver.host, receiver.port)
        open_data(client, f"r{n}@mx.test")
        client.send(b"Subject: smuggle\r\n\r\nx" + ending + SMUGGLED + b"y\r\n.\r\n")
        reply = client.reply()
        assert (reply.code, reply.text[:5]) == (521, "5.5.2"), (ending, reply)
        assert client.closed_by_server(), ending
        assert stored_raw(mongo, db_name, f"r{n}@mx.test") == []
    assert mongo[db_name]["messages"].count_documents({"rcpt": "victim@mx.test"}) == 0
    url = receiver.http_url
    assert sample(url, "floodgate_sessions_closed_total", reason="bare_newline") == len(
        MALFORMED_ENDINGS
    )


def test_normalize_mode_stores_each_malformed_ending_as_crlf_only(
    make_receiver: ServiceFactory, mongo: MongoClient[dict[str, Any]], db_name: str
) -> None:
    receiver = make_receiver(bare_newline="normalize")
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    for n, ending in enumerate(MALFORMED_ENDINGS):
        assert client.cmd("MAIL FROM:<a@example.org>").code == 250
        assert client.cmd(f"RCPT TO:<n{n}@mx.test>").code == 250
        assert client.cmd("DATA").code == 354
        client.send(b"Subject: smuggle\r\n\r\nx" + ending + SMUGGLED + b"y\r\n.\r\n")
        reply = client.reply()
        assert reply.code == 250, (ending, reply)  # one message, never two
        [raw] = stored_raw(mongo, db_name, f"n{n}@mx.test")
        assert raw.count(b"\n") == raw.count(b"\r\n") == raw.count(b"\r"), (ending, raw)
        assert b"\x00" not in raw and raw.endswith(b"DATA\r\ny\r\n")
    assert mongo[db_name]["messages"].count_documents({"rcpt": "victim@mx.test"}) == 0


def test_data_content_sent_before_the_354_is_554_and_closed(
    make_receiver: ServiceFactory, mongo: MongoClient[dict[str, Any]], db_name: str
) -> None:
    receiver = make_receiver(autoban_threshold="0")
    client = RawClient(receiver.host, receiver.port)
    open_data(client, "sync@mx.test")
    # A first message, then a second one pipelined whole behind its final dot.
    client.send(b"Subject: one\r\n\r\nx\r\n.\r\n" + SMUGGLED + b"Subject: two\r\n\r\ny\r\n.\r\n")
    assert client.reply().code == 250
    assert [client.reply().code for _ in range(3)] == [250, 250, 554]
    assert client.closed_by_server()
    assert len(stored_raw(mongo, db_name, "sync@mx.test")) == 1
    assert mongo[db_name]["messages"].count_documents({"rcpt": "victim@mx.test"}) == 0
    url = receiver.http_url
    assert sample(url, "floodgate_sessions_closed_total", reason="improper_pipelining") == 1


def test_a_client_reading_one_segment_per_command_gets_every_reply_whole(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver()
    sock = socket.create_connection((receiver.host, receiver.port), timeout=10)
    try:
        assert sock.recv(65536).startswith(b"220 ")
        for command, expected in (
            (b"EHLO c.test\r\n", 7),  # the multi-line EHLO reply (STARTTLS offered)
            (b"MAIL FROM:<a@example.org>\r\nRCPT TO:<w@mx.test>\r\nDATA\r\n", 3),  # a group
            (b"x" * 1024 + b"\r\n.\r\n", 1),
            (b"HELP\r\n", 1),
        ):
            sock.sendall(command)
            segment = sock.recv(65536)  # one read per command, as a naive client does
            assert segment.endswith(b"\r\n") and segment.count(b"\r\n") == expected, segment
    finally:
        sock.close()
