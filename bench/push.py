"""Live push: how fast a stored message reaches a live subscriber, and how many subscribers
one API process holds at what memory each.

* Latency from the final dot's `250` to the Server-Sent Event for that message, one message
  at a time (target p99 <= 1 s).
* Subscribers: open `/events` streams until the hub's cap (1,000), each on its own
  connection; RSS per subscriber, and the next one must get `503` (bounded, not queued).
"""

from __future__ import annotations

import asyncio
import queue
import smtplib
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    TOKEN,
    embedded_store,
    percentile,
    proc_status,
    raise_fd_limit,
    start_service,
)

LATENCY_TARGET_S = 1.0
SUBSCRIBER_TARGET = 1_000
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def _listen(
    url: str, out: queue.Queue[tuple[float, str]], ready: threading.Event, count: int
) -> None:
    """Put the first `count` event ids into `out`, then close the stream (an open one
    would hold the API's shutdown for its graceful 10 s)."""
    try:
        with httpx.stream("GET", url, headers=HEADERS, timeout=60) as response:
            ready.set()
            for line in response.iter_lines():
                if line.startswith("id:"):
                    out.put((time.perf_counter(), line[3:].strip()))
                    count -= 1
                    if count == 0:
                        return
    except httpx.HTTPError:
        pass  # the API stopped early: the run fails on the missing events


def latency(api_url: str, smtp_port: int, count: int) -> dict[str, Any]:
    events: queue.Queue[tuple[float, str]] = queue.Queue()
    ready = threading.Event()
    url = f"{api_url}/v1/mailboxes/push@mx.test/events"
    threading.Thread(target=_listen, args=(url, events, ready, count), daemon=True).start()
    ready.wait(10)
    time.sleep(0.3)
    delays = []
    with smtplib.SMTP("127.0.0.1", smtp_port, local_hostname="bench.test") as client:
        for n in range(count):
            client.sendmail("b@bench.test", ["push@mx.test"], b"Subject: %d\r\n\r\nx\r\n" % n)
            accepted = time.perf_counter()
            seen, _ = events.get(timeout=10)
            delays.append(seen - accepted)
    return {
        "messages": count,
        "p50_ms": round(percentile(delays, 0.5) * 1000, 1),
        "p99_ms": round(percentile(delays, 0.99) * 1000, 1),
        "max_ms": round(max(delays) * 1000, 1),
        "target_met": percentile(delays, 0.99) <= LATENCY_TARGET_S,
    }


async def _subscribe(port: int, n: int) -> tuple[int, asyncio.StreamWriter | None]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /v1/mailboxes/s{n}@mx.test/events HTTP/1.1\r\nHost: bench\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    status = int((await asyncio.wait_for(reader.readline(), 30)).split()[1])
    if status != 200:
        writer.close()
        return status, None
    while b"retry:" not in await asyncio.wait_for(reader.readline(), 30):
        pass
    return status, writer


async def _hold(port: int, pid: int, count: int) -> dict[str, Any]:
    before = proc_status(pid, "VmRSS")
    held = []
    for n in range(count):
        _, writer = await _subscribe(port, n)
        if writer is None:
            break
        held.append(writer)
    await asyncio.sleep(1.0)
    after = proc_status(pid, "VmRSS")
    beyond, spare = await _subscribe(port, count)
    for writer in [*held, *([spare] if spare else [])]:
        writer.close()
    return {
        "held": len(held),
        "rss_per_subscriber_kb": round((after - before) / max(1, len(held)), 1),
        "next_status": beyond,
        "target_met": len(held) >= SUBSCRIBER_TARGET and beyond == 503,
        # (in a quick run the cap is not reached: the next one is served, 200)
    }


def run(quick: bool = False) -> dict[str, Any]:
    raise_fd_limit()
    with tempfile.TemporaryDirectory() as directory, embedded_store(Path(directory)) as uri:
        env = {"FLOODGATE_MONGODB_URI": uri, "FLOODGATE_MESSAGE_RATE": "0"}
        receiver = start_service("receiver", env, Path(directory))
        # Capacity, not fairness: every subscriber here comes from one address, so the
        # per-client and per-network caps (20 and 100 streams by default) are lifted to the
        # process's global cap.
        capacity = {
            "FLOODGATE_PUSH_PER_CLIENT": str(SUBSCRIBER_TARGET),
            "FLOODGATE_PUSH_PER_NETWORK": str(SUBSCRIBER_TARGET),
        }
        api = start_service("api", {**env, **capacity}, Path(directory))
        try:
            # Subscribers first: the latency listener below stays connected to the end.
            held = asyncio.run(_hold(api.http_port, api.pid, 100 if quick else SUBSCRIBER_TARGET))
            result = {"subscribers": held}
            result["latency"] = latency(api.http_url, receiver.port, 20 if quick else 200)
        finally:
            api.stop()
            receiver.stop()
    return result


def markdown(result: dict[str, Any]) -> str:
    lat, subs = result["latency"], result["subscribers"]
    return (
        "### Live push (Server-Sent Events)\n\n"
        f"From the final dot's 250 to the event, over {lat['messages']} messages: "
        f"p50 {lat['p50_ms']} ms, **p99 {lat['p99_ms']} ms** (max {lat['max_ms']} ms; "
        f"target p99 <= {LATENCY_TARGET_S * 1000:.0f} ms).\n\n"
        f"One API process held **{subs['held']:,} subscribers** at "
        f"{subs['rss_per_subscriber_kb']} KB each; the next one got {subs['next_status']} "
        f"(target {SUBSCRIBER_TARGET:,}, then 503).\n"
    )
