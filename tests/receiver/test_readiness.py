"""Honest health through real processes: the port opens with the store down, indexes come
when it answers, and /readyz follows whether writes succeed, not whether pings do."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
from pymongo import MongoClient

from mailstore.embedded import EmbeddedStore
from tests.conftest import ServiceFactory
from tests.support.faultproxy import FaultProxy
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient, send_message, wait_for


def readyz(receiver: ServiceProcess) -> tuple[int, str]:
    response = httpx.get(f"{receiver.http_url}/readyz", timeout=10)
    return response.status_code, response.text.strip()


def test_receiver_started_with_the_store_down_listens_at_once_and_indexes_later(
    make_receiver: ServiceFactory, tmp_path: Path, db_name: str
) -> None:
    store = EmbeddedStore(tmp_path / "late-store")
    uri = store.start()
    store.stop()  # down: same port, started again below
    try:
        started = time.monotonic()
        receiver = make_receiver(mongodb_uri=uri, store_timeout="5", spool="false")
        with socket.create_connection((receiver.host, receiver.port), timeout=5):
            pass
        # Before, it waited for index creation first: six store timeouts (~30 s here). A
        # start on a busy host takes a few seconds, none of them the store's.
        assert time.monotonic() - started < 15
        status, reason = readyz(receiver)
        assert status == 503 and reason.startswith("store not taking writes")
        client = RawClient(receiver.host, receiver.port, timeout=30)
        client.hello()
        assert send_message(client, "a@example.org", ["late@mx.test"], b"x\r\n").code == 451
        store.start()
        assert wait_for(lambda: readyz(receiver)[0] == 200, timeout=20), readyz(receiver)
        with MongoClient(uri) as check:
            indexes = check[db_name]["messages"].index_information()
        # Made once the store answered (the embedded store's retention index: no TTL there).
        assert any(spec["key"] == [("expiry", 1)] for spec in indexes.values()), indexes
        assert send_message(client, "a@example.org", ["late@mx.test"], b"x\r\n").code == 250
    finally:
        store.stop()


def test_readiness_follows_failing_writes_and_comes_back_with_the_store(
    make_receiver: ServiceFactory, store_fault: FaultProxy
) -> None:
    receiver = make_receiver(mongodb_uri=store_fault.uri, store_timeout="1", spool="false")
    assert wait_for(lambda: readyz(receiver)[0] == 200, timeout=15)
    store_fault.set_mode("stall")  # the server still accepts connections; no write completes
    client = RawClient(receiver.host, receiver.port, timeout=30)
    client.hello()
    assert send_message(client, "a@example.org", ["h@mx.test"], b"x\r\n").code == 451
    assert wait_for(lambda: readyz(receiver)[0] == 503, timeout=15)
    _, reason = readyz(receiver)
    assert "no durable write within 1s" in reason, reason
    assert "store_down" in receiver.log() and "no durable write" in receiver.log()
    store_fault.set_mode("pass")
    assert wait_for(lambda: readyz(receiver)[0] == 200, timeout=20), readyz(receiver)
    assert send_message(client, "a@example.org", ["h@mx.test"], b"x\r\n").code == 250
