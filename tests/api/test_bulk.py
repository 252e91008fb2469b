"""Bulk adds: all or nothing, and gentle enough that receivers keep storing mail."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from pymongo import MongoClient

from tests.conftest import ServiceFactory
from tests.support.api import AUTH
from tests.support.faultproxy import FaultProxy
from tests.support.smtp import RawClient, send_message


def entries(prefix: int, count: int) -> dict[str, Any]:
    return {
        "entries": [
            {"cidr": f"10.{prefix}.{n // 256}.{n % 256}", "reason": "bulk"} for n in range(count)
        ]
    }


def test_a_maximal_bulk_add_never_stalls_the_receivers(
    make_api: ServiceFactory, make_receiver: ServiceFactory
) -> None:
    # The store timeout bounds each of the add's writes (500 entries). Here it is long: on a
    # loaded host one took more than the default 5 s, a 503 with nothing written, which is
    # right when the store is that slow; what this test proves is that the receivers keep
    # storing mail while the add runs.
    api = make_api(store_timeout="30")
    receiver = make_receiver(message_rate="0", recipient_rate="0")
    codes: list[int] = []
    done = threading.Event()

    def send() -> None:
        client = RawClient(receiver.host, receiver.port, timeout=30)
        client.hello()
        while not done.is_set():
            try:
                reply = send_message(client, "a@example.org", ["bulk@mx.test"], b"x\r\n")
            except (AssertionError, OSError):  # a refused MAIL/RCPT: recorded as a failure
                codes.append(-1)
                return
            codes.append(reply.code)
            # A steady sender (one message every 20 ms) sees a stall as well as a flat-out
            # one would, without spending the host's CPU on thousands of messages.
            done.wait(0.02)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        answer = httpx.post(
            api.http_url + "/v1/blocklist/bulk", json=entries(1, 10_000), headers=AUTH, timeout=120
        )
    finally:
        done.set()
        sender.join(60)
    assert answer.status_code == 200 and answer.json() == {"added": 10_000, "updated": 0}
    assert codes and set(codes) == {250}, codes[:20]


def test_a_bulk_add_cut_off_mid_way_leaves_nothing_behind(
    make_api: ServiceFactory,
    store_fault: FaultProxy,
    mongo: MongoClient[dict[str, Any]],
    db_name: str,
) -> None:
    # The cut is a reset (an error at once); the timeout bounds each write of the add and of
    # its undo, which on a loaded host take more than a couple of seconds.
    api = make_api(mongodb_uri=store_fault.uri, store_timeout="10")
    body = entries(2, 3_000)
    store_fault.set_mode("reset_after", after_bytes=150_000)  # a few chunks in, the write is cut
    cut = httpx.post(api.http_url + "/v1/blocklist/bulk", json=body, headers=AUTH, timeout=60)
    assert cut.status_code == 503 and "nothing was written" in cut.json()["error"], cut.text
    assert mongo[db_name]["blocklist"].count_documents({"reason": "bulk"}) == 0
    store_fault.set_mode("pass")
    again = httpx.post(api.http_url + "/v1/blocklist/bulk", json=body, headers=AUTH, timeout=60)
    assert again.status_code == 200 and again.json()["added"] == 3_000
    assert mongo[db_name]["blocklist"].count_documents({"reason": "bulk"}) == 3_000
