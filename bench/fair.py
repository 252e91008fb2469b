"""Fair reading: one client asking the worst crafted messages' reads over many connections
must not make an everyday reader wait more than twice as long.

* The everyday reader alone: `GET /v1/messages/{id}` of typical mail (bench/hostile.py),
  one at a time, each message read once (a fresh render every time): p50 and p99.
* The same reader again, on other typical messages, while one attacking client (another
  loopback address) asks, over `CONNECTIONS` connections at once, the view, links and
  attachments of 24 crafted messages (1,000 parameters in each of 29 parts, 32 KB of
  "A-A-...", 100,000 images in one link), each job once (nothing to reuse). The attacker's
  answers are counted by status (429: its share of the render queues or of reads a second).
* Goal: the reader's p99 under attack at most twice its p99 alone, and no reader answer
  other than 200.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.common import TOKEN, embedded_store, percentile, start_service
from bench.hostile import dashes, linked_images, semicolons, typical
from bench.render import ENV, send, start_lanes

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
CONNECTIONS = 17
CRAFTED = 24
ATTACKER = "127.0.1.66"  # a client of its own (loopback /8): not the reader's 127.0.0.1
GOAL = 2.0


def crafted() -> list[bytes]:
    """Eight of each worst case, each a distinct message."""
    worst = (semicolons(), dashes(), linked_images(100_000))
    # A header line on top makes each a message of its own (its own id, its own jobs).
    return [b"X-Copy: %d\r\n" % n + raw for n in range(CRAFTED // len(worst)) for raw in worst]


def read(client: httpx.Client, url: str) -> tuple[float, int]:
    started = time.perf_counter()
    status = client.get(url).status_code
    return time.perf_counter() - started, status


def reader(base: str, ids: list[str]) -> dict[str, Any]:
    seconds, statuses = [], Counter[int]()
    with httpx.Client(headers=HEADERS, timeout=120) as client:
        for message_id in ids:
            took, status = read(client, f"{base}/v1/messages/{message_id}")
            seconds.append(took)
            statuses[status] += 1
    return {
        "reads": len(ids),
        "p50_ms": round(percentile(seconds, 0.5) * 1000, 1),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 1),
        "statuses": dict(sorted(statuses.items())),
    }


def attack(base: str, ids: list[str], stop: threading.Event) -> Counter[int]:
    """Every job on every crafted message, each asked once, over `CONNECTIONS` clients."""
    jobs = [f"{base}/v1/messages/{i}" for i in ids] + [f"{base}/v1/messages/{i}/links" for i in ids]
    jobs += [f"{base}/v1/messages/{i}/attachments/{n}" for n in range(100) for i in ids]
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def worker(share: list[str]) -> None:
        transport = httpx.HTTPTransport(local_address=ATTACKER)
        with httpx.Client(headers=HEADERS, timeout=120, transport=transport) as client:
            for url in share:
                if stop.is_set():
                    return
                _, status = read(client, url)
                with lock:
                    statuses[status] += 1

    with ThreadPoolExecutor(CONNECTIONS) as pool:
        list(pool.map(worker, [jobs[n::CONNECTIONS] for n in range(CONNECTIONS)]))
    return statuses


def run(quick: bool = False) -> dict[str, Any]:
    count = 20 if quick else 100
    with tempfile.TemporaryDirectory() as directory, embedded_store(Path(directory)) as uri:
        env = {"FLOODGATE_MONGODB_URI": uri, **ENV}
        receiver = start_service("receiver", env, Path(directory))
        api = start_service("api", env, Path(directory))
        try:
            start_lanes(api.http_url, receiver.port)
            everyday = send(receiver.port, "reader@mx.test", [typical(n) for n in range(2 * count)])
            worst = send(receiver.port, "worst@mx.test", crafted())
            alone = reader(api.http_url, everyday[:count])
            stop = threading.Event()
            attacked: Counter[int] = Counter()
            attacker = threading.Thread(
                target=lambda: attacked.update(attack(api.http_url, worst, stop)), daemon=True
            )
            attacker.start()
            time.sleep(2.0)  # the attack is under way: every queue has filled
            under = reader(api.http_url, everyday[count:])
            stop.set()
            attacker.join(300)
        finally:
            api.stop()
            receiver.stop()
    ratio = under["p99_ms"] / max(alone["p99_ms"], 0.1)
    return {
        "alone": alone,
        "under_attack": under,
        "attacker": {
            "connections": CONNECTIONS,
            "messages": CRAFTED,
            "statuses": dict(sorted(attacked.items())),
        },
        "p99_ratio": round(ratio, 2),
        "target_met": ratio <= GOAL and set(under["statuses"]) == {200},
    }


def markdown(result: dict[str, Any]) -> str:
    alone, under, attacker = result["alone"], result["under_attack"], result["attacker"]
    statuses = ", ".join(f"{code}: {n:,}" for code, n in attacker["statuses"].items())
    return (
        "### Fair reading (an everyday reader beside one attacking client)\n\n"
        f"Everyday reader alone, {alone['reads']} views: p50 {alone['p50_ms']} ms, "
        f"p99 {alone['p99_ms']} ms. While one client asks the view, links and attachments of "
        f"{attacker['messages']} crafted messages over {attacker['connections']} connections: "
        f"p50 {under['p50_ms']} ms, **p99 {under['p99_ms']} ms ({result['p99_ratio']}x alone;"
        f" goal <= {GOAL:g}x)**, reader statuses {under['statuses']}. The attacker's answers: "
        f"{statuses}. Target met: {result['target_met']}.\n"
    )
