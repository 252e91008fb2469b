"""Live push over Server-Sent Events, against real processes, and the hub's bounds."""

from __future__ import annotations

import json
import queue
import threading
import time
from datetime import datetime
from typing import Any

import httpx

from api.push import QUEUE, Hub
from tests.support.api import AUTH
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient, queued_id, send_message


def listen(api: ServiceProcess, mailbox: str, out: queue.Queue[Any], **headers: str) -> None:
    """Read events into `out` as (seconds, id, data) until the stream ends."""
    url = f"{api.http_url}/v1/mailboxes/{mailbox}/events"
    try:
        with httpx.stream("GET", url, headers={**AUTH, **headers}, timeout=30) as response:
            out.put(("status", response.status_code, None))
            event: dict[str, str] = {}
            for line in response.iter_lines():
                if line.startswith(("id:", "data:")):
                    key, _, value = line.partition(":")
                    event[key] = value.strip()
                elif not line and "id" in event:
                    out.put((time.monotonic(), event["id"], json.loads(event["data"])))
                    event = {}
    except httpx.HTTPError:  # the API stopped at the end of the test: the stream ends
        out.put(("closed", 0, None))


def start(api: ServiceProcess, mailbox: str, **headers: str) -> queue.Queue[Any]:
    out: queue.Queue[Any] = queue.Queue()
    threading.Thread(target=listen, args=(api, mailbox, out), kwargs=headers, daemon=True).start()
    assert out.get(timeout=10)[:2] == ("status", 200)
    return out


def test_a_stored_message_appears_on_the_stream_within_a_second(
    receiver: ServiceProcess, api: ServiceProcess
) -> None:
    events = start(api, "live@mx.test")
    time.sleep(0.5)  # the stream is open
    client = RawClient(receiver.host, receiver.port)
    client.hello()
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
    again = start(api, "live@mx.test", **{"Last-Event-ID": ids[-1]})
    _, event_id, data = again.get(timeout=5)
    assert event_id == queued_id(missed.text) and data["subject"] == "missed"


async def test_a_reader_that_falls_behind_is_dropped_not_buffered() -> None:
    hub = Hub()
    slow = hub.subscribe("box@mx.test", "127.0.0.1")
    other = hub.subscribe("other@mx.test", "127.0.0.1")
    assert slow is not None and other is not None
    for n in range(QUEUE + 5):
        hub.publish({"_id": str(n), "rcpt": ["box@mx.test"]})
    assert slow.dropped and slow.queue.qsize() == QUEUE
    assert not other.dropped and other.queue.empty()
    hub.unsubscribe(slow)
    hub.unsubscribe(slow)  # twice: counted once
    assert hub.count == 1
