"""Webhooks: how fast a stored message reaches a registered endpoint.

From the final dot's `250` to the endpoint receiving the signed POST, one message at a time,
through the real path: receiver → store → the dispatcher's change stream → a durable
delivery (links and codes read by a render worker) → the POST to a loopback endpoint.
Target: p99 under 250 ms. One message goes first, uncounted: the dispatcher's render worker
starts at its first message.

And what the scripts' paths cost the MX, which shares the store with them: another sender's
final dot to `250` (one connection per message, as MTAs deliver), the receiver's and the
store's CPU per stored message, and the store's CPU per idle second, measured three times on
the same processes: with no dispatcher; with the dispatcher following the store and a
webhook for the whole domain (every message POSTed); and with that plus 1,000 waits held on
the API. Target: the sender's p99 within twice its value alone (plus 2 ms for timer noise),
and the receiver's CPU per message within 20 %.
"""

from __future__ import annotations

import asyncio
import http.server
import queue
import smtplib
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench import wait
from bench.common import (
    TOKEN,
    cpu_seconds,
    percentile,
    raise_fd_limit,
    start_service,
    wait_http,
)
from bench.scale import sender_latency
from mailstore.embedded import EmbeddedStore

LATENCY_TARGET_S = 0.25
MX_P99_RATIO = 2.0
MX_P99_FLOOR_MS = 2.0
MX_CPU_RATIO = 1.2
IDLE_SECONDS = 3.0
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
MAIL = (
    b"From: shop@example.org\r\nSubject: Your code %d\r\n\r\n"
    b"Your verification code is 739201.\r\nhttps://shop.example/confirm?t=%d\r\n"
)


def _endpoint(arrived: queue.Queue[tuple[float, str]]) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            arrived.put((time.perf_counter(), self.headers.get("webhook-id", "")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def latency(api_url: str, smtp_port: int, count: int) -> dict[str, Any]:
    arrived: queue.Queue[tuple[float, str]] = queue.Queue()
    server = _endpoint(arrived)
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    body = {"url": url, "match": "hook@mx.test"}
    response = httpx.post(f"{api_url}/v1/webhooks", json=body, headers=HEADERS)
    response.raise_for_status()
    time.sleep(0.5)  # the dispatcher's endpoint cache (0.2 s) has seen it
    delays = []
    try:
        with smtplib.SMTP("127.0.0.1", smtp_port, local_hostname="bench.test") as client:
            # One message first, not counted: the dispatcher starts its render worker for
            # links and codes at its first message (once per process, not per message).
            client.sendmail("b@bench.test", ["hook@mx.test"], MAIL % (-1, -1))
            arrived.get(timeout=30)
            for n in range(count):
                client.sendmail("b@bench.test", ["hook@mx.test"], MAIL % (n, n))
                accepted = time.perf_counter()
                seen, _ = arrived.get(timeout=30)
                delays.append(seen - accepted)
    finally:
        server.shutdown()
        server.server_close()
    return {
        "messages": count,
        "p50_ms": round(percentile(delays, 0.5) * 1000, 1),
        "p99_ms": round(percentile(delays, 0.99) * 1000, 1),
        "max_ms": round(max(delays) * 1000, 1),
        "target_met": percentile(delays, 0.99) <= LATENCY_TARGET_S,
    }


class Mx:
    """The MX side of one measure: its receiver and store processes and SMTP port."""

    def __init__(self, port: int, receiver_pid: int, store_pid: int) -> None:
        self.port, self.receiver_pid, self.store_pid = port, receiver_pid, store_pid
        self.sent = 0

    def cost(self, count: int, arrived: queue.Queue[tuple[float, str]] | None) -> dict[str, Any]:
        """Idle store CPU, then `count` messages one connection each: the sender's final
        dot to 250 and the CPU per message (with a webhook, once every POST has come: the
        dispatcher's reads and writes of the store are counted in)."""
        idle = cpu_seconds(self.store_pid)
        time.sleep(IDLE_SECONDS)
        idle = (cpu_seconds(self.store_pid) - idle) / IDLE_SECONDS
        receiver, store = cpu_seconds(self.receiver_pid), cpu_seconds(self.store_pid)
        sender = sender_latency(self.port, count, self.sent)
        self.sent += count
        if arrived is not None:
            for _ in range(count):
                arrived.get(timeout=60)
        return {
            **sender,
            "receiver_us_per_msg": round((cpu_seconds(self.receiver_pid) - receiver) / count * 1e6),
            "store_us_per_msg": round((cpu_seconds(self.store_pid) - store) / count * 1e6),
            "store_idle_ms_per_s": round(idle * 1000, 1),
        }

    def cost_with_waits(
        self, api_port: int, count: int, waiters: int, arrived: queue.Queue[tuple[float, str]]
    ) -> dict[str, Any]:
        async def held() -> dict[str, Any]:
            opened = [await wait._open(api_port, n) for n in range(waiters)]
            await asyncio.sleep(2.0)  # each wait's one read at its start is over
            try:
                return await asyncio.to_thread(self.cost, count, arrived)
            finally:
                for _, writer in opened:
                    writer.close()

        return {**asyncio.run(held()), "waits_held": waiters}


def verdict(alone: dict[str, Any], loaded: dict[str, Any]) -> bool:
    return bool(
        loaded["p99_ms"] <= alone["p99_ms"] * MX_P99_RATIO + MX_P99_FLOOR_MS
        and loaded["receiver_us_per_msg"] <= alone["receiver_us_per_msg"] * MX_CPU_RATIO
    )


def mx_cost(rig: Mx, api: Any, hooks_url: str, count: int, waiters: int) -> dict[str, Any]:
    """The three measures after the one alone (taken before the dispatcher started)."""
    arrived: queue.Queue[tuple[float, str]] = queue.Queue()
    server = _endpoint(arrived)
    url = f"http://127.0.0.1:{server.server_address[1]}/all"
    response = httpx.post(
        f"{api.http_url}/v1/webhooks", json={"url": url, "match": "mx.test"}, headers=HEADERS
    )
    response.raise_for_status()
    time.sleep(1.5)  # the dispatcher's endpoint cache has seen it
    try:
        hooked = rig.cost(count, arrived)
        waiting = rig.cost_with_waits(api.http_port, count, waiters, arrived)
    finally:
        server.shutdown()
        server.server_close()
    return {"dispatcher": hooked, "dispatcher_and_waits": waiting}


def run(quick: bool = False) -> dict[str, Any]:
    raise_fd_limit()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        store = EmbeddedStore(work / "store")
        uri = store.start()
        assert store.process is not None
        env = {
            "FLOODGATE_MONGODB_URI": uri,
            "FLOODGATE_MESSAGE_RATE": "0",
            "FLOODGATE_CONNECTION_RATE": "0",
            "FLOODGATE_WEBHOOK_ALLOW_PRIVATE": "true",  # the endpoint is on loopback
        }
        waiters = 100 if quick else wait.WAITERS
        receiver = start_service("receiver", env, work)
        # Capacity, not fairness: every waiter comes from one address.
        api = start_service("api", {**env, "FLOODGATE_PUSH_PER_CLIENT": str(waiters)}, work)
        hooks = None
        try:
            count = 30 if quick else 300
            rig = Mx(receiver.port, receiver.pid, store.process.pid)
            rig.cost(5, None)  # warm: the first connections start what starts once
            result: dict[str, Any] = {"mx": {"alone": rig.cost(count, None)}}
            hooks_env = {**env, "FLOODGATE_WEBHOOK_API_URL": api.http_url}
            hooks = start_service("webhooks", hooks_env, work)
            wait_http(hooks.http_url + "/readyz")
            result["latency"] = latency(api.http_url, receiver.port, 20 if quick else 200)
            result["mx"].update(mx_cost(rig, api, hooks.http_url, count, waiters))
            alone = result["mx"]["alone"]
            result["mx"]["target_met"] = all(
                verdict(alone, result["mx"][k]) for k in ("dispatcher", "dispatcher_and_waits")
            )
        finally:
            if hooks is not None:
                hooks.stop()
            api.stop()
            receiver.stop()
            store.stop()
    return result


def markdown(result: dict[str, Any]) -> str:
    lat = result["latency"]
    return (
        "### Webhooks\n\n"
        f"From the final dot's 250 to the endpoint receiving the signed POST, over "
        f"{lat['messages']} messages: p50 {lat['p50_ms']} ms, **p99 {lat['p99_ms']} ms** "
        f"(max {lat['max_ms']} ms; target p99 <= {LATENCY_TARGET_S * 1000:.0f} ms).\n\n"
        + mx_markdown(result["mx"])
    )


def mx_markdown(mx: dict[str, Any]) -> str:
    rows = [
        "What it costs the MX (another sender, one connection per message; the store shared):",
        "",
        "| | sender 250 p50 / p99 ms | receiver µs/msg | store µs/msg | store idle ms/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    names = {
        "alone": "no dispatcher",
        "dispatcher": "dispatcher, every message POSTed",
        "dispatcher_and_waits": "the same + waits held",
    }
    for key, name in names.items():
        row = mx[key]
        if "waits_held" in row:
            name += f" ({row['waits_held']:,})"
        rows.append(
            f"| {name} | {row['p50_ms']} / {row['p99_ms']} | {row['receiver_us_per_msg']} | "
            f"{row['store_us_per_msg']} | {row['store_idle_ms_per_s']} |"
        )
    met = "met" if mx["target_met"] else "**not met**"
    rows += [
        "",
        f"Target (p99 <= {MX_P99_RATIO:g}x alone + {MX_P99_FLOOR_MS:g} ms, receiver CPU <= "
        f"{MX_CPU_RATIO:g}x alone): {met}.",
    ]
    return "\n".join(rows) + "\n"
