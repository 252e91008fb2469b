"""A 250 only for durably stored mail: the store is killed and restarted under a live receiver.

These run with the spool off (`FLOODGATE_SPOOL=false`): the store is then the only place a
250 can vouch for, and its absence is a 451. The spool's own promise is in test_spool.py."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from pymongo import MongoClient

from mailstore.embedded import EmbeddedStore
from tests.conftest import ServiceFactory
from tests.support.smtp import RawClient, queued_id, send_message


def test_store_killed_gives_451_never_250_then_recovers(
    make_receiver: ServiceFactory, tmp_path: Path, db_name: str
) -> None:
    store = EmbeddedStore(tmp_path / "own-store")
    uri = store.start()
    try:
        receiver = make_receiver(mongodb_uri=uri, store_timeout="1.5", spool="false")
        client = RawClient(receiver.host, receiver.port, timeout=30)
        client.hello()
        first = send_message(client, "a@example.org", ["d@mx.test"], b"Subject: 1\r\n\r\nx\r\n")
        assert first.code == 250

        store.kill()
        started = time.monotonic()
        lost = send_message(client, "a@example.org", ["d@mx.test"], b"Subject: 2\r\n\r\nx\r\n")
        assert lost.code == 451 and lost.text.startswith("4.3.0"), lost
        assert time.monotonic() - started < 10  # bounded by the store deadline

        store.start()  # same port and files: the receiver reconnects by itself
        deadline = time.monotonic() + 20
        while True:
            again = send_message(client, "a@example.org", ["d@mx.test"], b"Subject: 3\r\n\r\n")
            if again.code == 250 or time.monotonic() > deadline:
                break
            assert again.code == 451
            time.sleep(0.5)
        assert again.code == 250

        with MongoClient(uri) as check:
            messages = check[db_name]["messages"]
            for reply in (first, again):
                assert messages.count_documents({"_id": queued_id(reply.text)}) == 1
    finally:
        store.stop()


def test_receiver_started_while_store_is_down_answers_451_not_250(
    make_receiver: ServiceFactory, tmp_path: Path
) -> None:
    store = EmbeddedStore(tmp_path / "down-store")
    uri = store.start()
    store.kill()
    receiver = make_receiver(mongodb_uri=uri, store_timeout="1", spool="false")
    client = RawClient(receiver.host, receiver.port, timeout=30)
    client.hello()
    reply = send_message(client, "a@example.org", ["d@mx.test"], b"x\r\n")
    assert reply.code == 451


def test_store_stalled_past_the_deadline_then_retried_stores_each_message_once(
    make_receiver: ServiceFactory, tmp_path: Path, db_name: str
) -> None:
    store = EmbeddedStore(tmp_path / "stalled-store")
    uri = store.start()
    assert store.process is not None
    pid = store.process.pid
    stopped = False
    try:
        receiver = make_receiver(mongodb_uri=uri, store_timeout="1.5", spool="false")
        clients = [RawClient(receiver.host, receiver.port, timeout=30) for _ in range(8)]
        bodies = [f"Subject: stalled {n}\r\n\r\nbody {n}\r\n".encode() for n in range(8)]
        for client in clients:
            client.hello()
            assert client.cmd("MAIL FROM:<a@example.org>").code == 250
            assert client.cmd("RCPT TO:<stall@mx.test>").code == 250
            assert client.cmd("DATA").code == 354
        os.kill(pid, signal.SIGSTOP)  # a hung primary: writes are sent, never confirmed
        stopped = True
        for client, body in zip(clients, bodies, strict=True):
            client.send(body + b".\r\n")
        assert [c.reply().code for c in clients] == [451] * 8
        os.kill(pid, signal.SIGCONT)  # it resumes: some of those writes may land now
        stopped = False
        deadline = time.monotonic() + 30
        pending = list(zip(clients, bodies, strict=True))
        while pending and time.monotonic() < deadline:  # each sender retries, as MTAs do
            client, body = pending.pop(0)
            if send_message(client, "a@example.org", ["stall@mx.test"], body).code != 250:
                pending.append((client, body))
                time.sleep(0.2)
        assert not pending, "every retry was eventually accepted"
        with MongoClient(uri) as check:
            messages = check[db_name]["messages"]
            subjects = [d["headers"]["subject"] for d in messages.find({"rcpt": "stall@mx.test"})]
        assert sorted(subjects) == sorted(f"stalled {n}" for n in range(8))  # none twice
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)
        store.stop()
