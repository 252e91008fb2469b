"""Reading mail: how fast the API renders everyday messages, and what crafted ones cost it.

* Latency of `GET /v1/messages/{id}` over a typical mix (plain, HTML alternative, small
  attachments, encoded subjects): p50 and p99.
* The bomb mix (bench/hostile.py: encoded-word and address bombs, punycode, 3,000 nested
  parts, RFC 2231 parameter bombs, a 9.6 MB message, HTML filling every CSS budget), each
  read six times, two at a time:
  the API's peak resident memory, its render workers included (target: at most 64 MB over
  its resting size; once 74 MB -> 1,039 MB for one encoded-word bomb).
* A render past the deadline: CPU the API and its workers spend after the answer (the
  worker is killed: target about 0).
"""

from __future__ import annotations

import smtplib
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from api.limits import DEFAULTS
from api.renderpool import SMALL_WORKERS
from bench.common import TOKEN, cpu_seconds, embedded_store, percentile, start_service
from bench.hostile import big_attachment, bombs, css_bomb, typical

HEADERS = {"Authorization": f"Bearer {TOKEN}"}
RSS_TARGET_MB = 64
ENV = {"FLOODGATE_MESSAGE_RATE": "0", "FLOODGATE_CONNECTION_RATE": "0"}


def family(pid: int) -> list[int]:
    """`pid` and its children (the API and its render workers)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return [pid, *children]


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue
    return total


def send(port: int, mailbox: str, messages: list[bytes]) -> list[str]:
    ids = []
    with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.test") as client:
        client.ehlo()
        for raw in messages:
            client.mail("b@bench.test")
            client.rcpt(mailbox)
            code, reply = client.data(raw)
            assert code == 250, reply
            ids.append(reply.decode().rsplit(" ", 1)[-1])
    return ids


def fetch(url: str, message_id: str) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = httpx.get(f"{url}/v1/messages/{message_id}", headers=HEADERS, timeout=60)
    return time.perf_counter() - started, response


def start_lanes(url: str, port: int) -> None:
    """Read one small and one big plain message and wait until every render worker is up:
    a lane starts its workers at its first job, and the bench measures renders, not that
    start."""
    big = b"Subject: plain\r\n\r\n" + (b"x" * 998 + b"\r\n") * 80  # past the small lane
    for message_id in send(port, "warm@mx.test", [typical(0), big]):
        assert fetch(url, message_id)[1].status_code == 200
    deadline = time.monotonic() + 30
    while render_workers(url) != (SMALL_WORKERS, DEFAULTS.render_workers):
        assert time.monotonic() < deadline, f"render workers {render_workers(url)}"
        time.sleep(0.05)


def render_workers(url: str) -> tuple[int, int]:
    """Render workers up in (the small lane, the general lane), from the API's metrics."""
    up = {"small": 0, "general": 0}
    for family_ in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for item in family_.samples:
            if item.name == "floodgate_render_workers":
                up[item.labels["lane"]] = int(item.value)
    return up["small"], up["general"]


def latency(url: str, ids: list[str]) -> dict[str, Any]:
    seconds = []
    for message_id in ids:
        took, response = fetch(url, message_id)
        assert response.status_code == 200, response.text[:200]
        seconds.append(took)
    return {
        "messages": len(ids),
        "p50_ms": round(percentile(seconds, 0.5) * 1000, 1),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
    }


class PeakRss:
    """The highest resident memory of a process and its children while it runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(family(self.pid)))
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def bomb_mix(url: str, pid: int, ids: dict[str, str], repeats: int) -> dict[str, Any]:
    """Each crafted message read `repeats` times, two at a time; memory over rest."""
    fetch(url, next(iter(ids.values())))  # the workers are up
    rows = []
    peak = resting = 0.0
    with ThreadPoolExecutor(2) as pool:
        for name, message_id in ids.items():
            time.sleep(1.0)  # a retired worker's successor is up
            rest = rss_mb(family(pid))
            resting = max(resting, rest)
            with PeakRss(pid) as sampler:
                answers = list(pool.map(fetch, [url] * repeats, [message_id] * repeats))
            peak = max(peak, sampler.peak)
            rows.append({
                "name": name,
                "size_kb": round(int(answers[0][1].json()["size"]) / 1024),
                "status": sorted({response.status_code for _, response in answers}),
                "parse_error": answers[0][1].json().get("parse_error"),
                "max_ms": round(max(took for took, _ in answers) * 1000, 1),
                "growth_mb": round(max(0.0, sampler.peak - rest), 1),
            })  # fmt: skip
    worst = max(row["growth_mb"] for row in rows)
    return {
        "resting_mb": round(resting, 1),
        "peak_mb": round(peak, 1),
        "worst_growth_mb": worst,
        "repeats": repeats,
        "rows": rows,
        # Two renders at once: each may take half of the growth seen.
        "target_met": worst / 2 <= RSS_TARGET_MB,
    }


def after_deadline(directory: Path, uri: str, port: int) -> dict[str, Any]:
    api = start_service(
        "api", {"FLOODGATE_MONGODB_URI": uri, "FLOODGATE_RENDER_SECONDS": "0.1"}, directory
    )
    try:
        [message_id] = send(port, "deadline@mx.test", [big_attachment()[0]])
        start_lanes(api.http_url, port)
        pids = family(api.pid)
        took, response = fetch(api.http_url, message_id)
        at_answer = cpu(pids)
        time.sleep(2.0)
        spent = cpu(pids) - at_answer
        again, _ = fetch(api.http_url, message_id)
    finally:
        api.stop()
    return {
        "parse_error": response.json()["parse_error"],
        "answer_ms": round(took * 1000, 1),
        "cpu_after_s": round(spent, 3),
        "repeat_ms": round(again * 1000, 1),
    }


def run(quick: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory, embedded_store(Path(directory)) as uri:
        env = {"FLOODGATE_MONGODB_URI": uri, **ENV}
        receiver = start_service("receiver", env, Path(directory))
        api = start_service("api", env, Path(directory))
        try:
            count = 40 if quick else 300
            start_lanes(api.http_url, receiver.port)
            ids = send(receiver.port, "box@mx.test", [typical(n) for n in range(count)])
            result: dict[str, Any] = {"typical": latency(api.http_url, ids)}
            crafted = {**bombs(), "css_budgets": css_bomb()}
            sent = send(receiver.port, "bomb@mx.test", [*crafted.values()])
            bomb_ids = dict(zip(crafted, sent, strict=True))
            result["bombs"] = bomb_mix(api.http_url, api.pid, bomb_ids, 2 if quick else 6)
            result["deadline"] = after_deadline(Path(directory), uri, receiver.port)
        finally:
            api.stop()
            receiver.stop()
    return result


def markdown(result: dict[str, Any]) -> str:
    typical_, bombs_, deadline = result["typical"], result["bombs"], result["deadline"]
    rows = "\n".join(
        f"| {row['name']} | {row['size_kb']:,} | {', '.join(map(str, row['status']))} | "
        f"{row['parse_error'] or '-'} | {row['max_ms']} | +{row['growth_mb']} |"
        for row in bombs_["rows"]
    )
    return (
        "### Rendering (GET /v1/messages/{id})\n\n"
        f"Typical mix, {typical_['messages']} messages one at a time: p50 "
        f"{typical_['p50_ms']} ms, **p99 {typical_['p99_ms']} ms** (max {typical_['max_ms']} ms)."
        f"\n\nBomb mix, each read {bombs_['repeats']} times, two at a time: the API with its "
        f"render workers rests at up to {bombs_['resting_mb']} MB and peaked at "
        f"{bombs_['peak_mb']} MB; the most any message added was "
        f"**+{bombs_['worst_growth_mb']} MB for two renders at once** (target <= "
        f"{RSS_TARGET_MB} MB per render).\n\n"
        "| message | KB | status | parse_error | slowest ms | peak growth MB |\n"
        "| --- | --- | --- | --- | --- | --- |\n"
        f"{rows}\n\n"
        f"Past a 0.1 s deadline (the 9.6 MB message): answered in {deadline['answer_ms']} ms "
        f"with `{deadline['parse_error']}`; CPU spent afterwards **{deadline['cpu_after_s']} s**;"
        f" asked again: {deadline['repeat_ms']} ms (the verdict is remembered).\n"
    )
