"""Live push over Server-Sent Events, against real processes, and the hub's bounds."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from api.limits import ApiLimits
from api.push import QUEUE, Full, Hub, client_key, network_key
from mailstore.message import MessageDocument
from tests.conftest import ServiceFactory
from tests.support.api import AUTH
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient, queued_id, send_message, wait_for


def listen(
    api: ServiceProcess,
    mailbox: str,
    out: queue.Queue[Any],
    sockets: list[socket.socket],
    **headers: str,
) -> None:
    """Read events into `out` as (seconds, id, data) until the stream ends; its socket
    goes into `sockets`, for the test to shut down."""
    url = f"{api.http_url}/v1/mailboxes/{mailbox}/events"
    try:
        with httpx.stream("GET", url, headers={**AUTH, **headers}, timeout=30) as response:
            sockets.append(response.extensions["network_stream"].get_extra_info("socket"))
            out.put(("status", response.status_code, None))
            event: dict[str, str] = {}
            for line in response.iter_lines():
                if line.startswith(("id:", "data:")):
                    key, _, value = line.partition(":")
                    event[key] = value.strip()
                elif not line and "id" in event:
                    out.put((time.monotonic(), event["id"], json.loads(event["data"])))
                    event = {}
    except httpx.HTTPError:  # shut down at the end of the test: the stream ends
        out.put(("closed", 0, None))


@pytest.fixture
def streams(api: ServiceProcess) -> Iterator[Callable[..., queue.Queue[Any]]]:
    """`streams(mailbox, **headers)` follows a mailbox in a thread of its own; its events
    come through the queue it returns. Every stream ends before the API stops (an open
    one would hold the API's shutdown for its graceful 10 s)."""
    sockets: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(mailbox: str, **headers: str) -> queue.Queue[Any]:
        out: queue.Queue[Any] = queue.Queue()
        thread = threading.Thread(
            target=listen, args=(api, mailbox, out, sockets), kwargs=headers, daemon=True
        )
        threads.append(thread)
        thread.start()
        assert out.get(timeout=10)[:2] == ("status", 200)
        return out

    yield start
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    for thread in threads:
        thread.join(10)


def test_a_stored_message_appears_on_the_stream_within_a_second(
    receiver: ServiceProcess, streams: Callable[..., queue.Queue[Any]]
) -> None:
    events = streams("live@mx.test")
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    # The API's change stream is open once a first message comes through (in its own time).
    primer = send_message(client, "a@example.org", ["live@mx.test"], b"Subject: primer\r\n\r\n")
    assert events.get(timeout=10)[1] == queued_id(primer.text)
    ids = []
    for n in range(3):
        body = f"Subject: live {n}\r\n\r\nx\r\n".encode()
        reply = send_message(client, "a@example.org", ["live@mx.test"], body)
        accepted = time.monotonic()
        ids.append(queued_id(reply.text))
        seen, event_id, data = events.get(timeout=5)
        assert event_id == ids[-1] and data["subject"] == f"live {n}"
        assert datetime.fromisoformat(data["received_at"]).tzinfo is not None
        assert seen - accepted < 1.0, seen - accepted
    # A client that reconnects with the last id it saw gets what it missed first.
    missed = send_message(client, "a@example.org", ["live@mx.test"], b"Subject: missed\r\n\r\n")
    again = streams("live@mx.test", **{"Last-Event-ID": ids[-1]})
    _, event_id, data = again.get(timeout=5)
    assert event_id == queued_id(missed.text) and data["subject"] == "missed"


async def test_a_reader_that_falls_behind_is_dropped_not_buffered() -> None:
    hub = Hub()
    slow = hub.subscribe("box@mx.test", "127.0.0.1")
    other = hub.subscribe("other@mx.test", "127.0.0.1")
    assert slow is not None and other is not None
    for n in range(QUEUE + 5):
        hub.publish(MessageDocument.read({"_id": str(n), "rcpt": ["box@mx.test"]}))
    assert slow.dropped and slow.queue.qsize() == QUEUE
    assert not other.dropped and other.queue.empty()
    hub.unsubscribe(slow)
    hub.unsubscribe(slow)  # twice: counted once
    assert hub.count == 1


def _status(api: ServiceProcess, mailbox: str) -> tuple[int, httpx.Client]:
    """Open a stream and keep it open: its status, and the client holding it."""
    client = httpx.Client(headers=AUTH, timeout=10)
    url = f"{api.http_url}/v1/mailboxes/{mailbox}/events"
    response = client.send(client.build_request("GET", url), stream=True)
    return response.status_code, client


def _probe(api: ServiceProcess, mailbox: str) -> int:
    status, client = _status(api, mailbox)
    client.close()
    return status


def test_one_client_gets_its_share_of_streams_not_every_slot(make_api: ServiceFactory) -> None:
    api = make_api(push_per_client=3, push_per_mailbox=2)
    held: list[httpx.Client] = []
    try:
        for mailbox in ("a@mx.test", "a@mx.test", "b@mx.test"):
            status, client = _status(api, mailbox)
            held.append(client)
            assert status == 200
        status, client = _status(api, "c@mx.test")  # a fourth from the same address
        held.append(client)
        assert status == 429
        held[0].close()  # one leaves: its slot is free again
        assert wait_for(lambda: _probe(api, "c@mx.test") == 200, timeout=5)
    finally:
        for client in held:
            client.close()


def test_a_mailbox_gets_its_share_of_streams(make_api: ServiceFactory) -> None:
    api = make_api(push_per_mailbox=2)
    held = [_status(api, "busy@mx.test") for _ in range(3)]
    try:
        assert [status for status, _ in held] == [200, 200, 429]
        url = f"{api.http_url}/v1/mailboxes/busy@mx.test/events"
        refused = httpx.get(url, headers=AUTH)
        assert refused.json() == {"error": "too many live streams on this mailbox"}
        assert refused.headers["retry-after"] == "5"
    finally:
        for _, client in held:
            client.close()


def test_a_dropped_reader_frees_its_slot_at_once() -> None:
    hub = Hub(ApiLimits(push_per_client=2, push_per_mailbox=2), total=2)
    slow = hub.subscribe("box@mx.test", "192.0.2.1")
    hub.subscribe("other@mx.test", "192.0.2.1")
    with pytest.raises(Full) as full:
        hub.subscribe("third@mx.test", "192.0.2.2")
    assert full.value.status == 503  # the global cap is kept
    for n in range(QUEUE + 1):
        hub.publish(MessageDocument.read({"_id": str(n), "rcpt": ["box@mx.test"]}))
    assert slow.dropped and hub.count == 1
    hub.subscribe("third@mx.test", "192.0.2.2")  # its slot went to someone else


def test_clients_are_ipv4_addresses_and_ipv6_slash_64s() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::9")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")


def test_one_client_cannot_hold_every_stream_of_a_mailbox() -> None:
    hub = Hub(ApiLimits(push_per_mailbox=20, push_per_client_mailbox=4))
    for _ in range(4):
        hub.subscribe("owner@mx.test", "198.51.100.66")
    with pytest.raises(Full) as full:
        hub.subscribe("owner@mx.test", "198.51.100.66")
    assert full.value.status == 429 and "on this mailbox" in str(full.value)
    hub.subscribe("owner@mx.test", "192.0.2.1")  # the mailbox's owner still gets in
    hub.subscribe("other@mx.test", "198.51.100.66")  # and the client on other mailboxes


def test_one_network_cannot_take_every_slot() -> None:
    hub = Hub(ApiLimits(push_per_network=10), total=1_000)
    for n in range(10):  # ten addresses of one /24, one stream each
        hub.subscribe(f"m{n}@mx.test", f"203.0.113.{n}")
    with pytest.raises(Full) as full:
        hub.subscribe("m@mx.test", "203.0.113.200")
    assert full.value.status == 429 and "network" in str(full.value)
    hub.subscribe("m@mx.test", "203.0.114.1")  # the next /24 is another network
    # IPv6: a /48 is one network, whichever /64 of it the client is.
    for n in range(10):
        hub.subscribe(f"v{n}@mx.test", client_key(f"2001:db8:1:{n}::1"))
    with pytest.raises(Full):
        hub.subscribe("v@mx.test", client_key("2001:db8:1:ff::1"))
    hub.subscribe("v@mx.test", client_key("2001:db8:2::1"))


def test_a_networks_slots_come_back_when_its_streams_end() -> None:
    hub = Hub(ApiLimits(push_per_network=2))
    first = hub.subscribe("a@mx.test", "203.0.113.1")
    hub.subscribe("b@mx.test", "203.0.113.2")
    hub.unsubscribe(first)
    hub.subscribe("c@mx.test", "203.0.113.3")
    assert network_key("203.0.113.3") == "203.0.113.0/24"
    assert network_key(client_key("2001:db8:1:2::1")) == "2001:db8:1::/48"
