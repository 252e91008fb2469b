"""Webhooks: how fast a stored message reaches a registered endpoint.

From the final dot's `250` to the endpoint receiving the signed POST, one message at a time,
through the real path: receiver → store → the dispatcher's change stream → a durable
delivery (links and codes read by a render worker) → the POST to a loopback endpoint.
Target: p99 under 250 ms. One message goes first, uncounted: the dispatcher's render worker
starts at its first message.
"""

from __future__ import annotations

import http.server
import queue
import smtplib
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import TOKEN, embedded_store, percentile, start_service, wait_http

LATENCY_TARGET_S = 0.25
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


def run(quick: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory, embedded_store(Path(directory)) as uri:
        work = Path(directory)
        env = {
            "FLOODGATE_MONGODB_URI": uri,
            "FLOODGATE_MESSAGE_RATE": "0",
            "FLOODGATE_WEBHOOK_ALLOW_PRIVATE": "true",  # the endpoint is on loopback
        }
        receiver = start_service("receiver", env, work)
        api = start_service("api", env, work)
        hooks = start_service("webhooks", {**env, "FLOODGATE_WEBHOOK_API_URL": api.http_url}, work)
        try:
            wait_http(hooks.http_url + "/readyz")
            result = {"latency": latency(api.http_url, receiver.port, 20 if quick else 200)}
        finally:
            hooks.stop()
            api.stop()
            receiver.stop()
    return result


def markdown(result: dict[str, Any]) -> str:
    lat = result["latency"]
    return (
        "### Webhooks\n\n"
        f"From the final dot's 250 to the endpoint receiving the signed POST, over "
        f"{lat['messages']} messages: p50 {lat['p50_ms']} ms, **p99 {lat['p99_ms']} ms** "
        f"(max {lat['max_ms']} ms; target p99 <= {LATENCY_TARGET_S * 1000:.0f} ms).\n"
    )
