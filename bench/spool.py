"""The spool: what accepting while the store is away costs, and how fast it drains.

One receiver on an embedded store. The same load twice, one connection per message, 20
clients, 1 KB: first with the store up (the normal path), then with the store killed (every
message appended to the spool and synced before its 250). For each: messages/s, the
receiver's CPU µs per message and the time from the final dot to the 250 (p50/p99). Then the
store comes back and the spool is replayed: records per second into the store (the replay
rate is set high here, to measure what the store takes; the default paces it at 500/s).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from bench.common import cpu_seconds, median, metric, percentile, start_service
from mailstore.embedded import EmbeddedStore

CLIENTS = 20
SIZE = 1024
CPU_RATIO_GOAL = 1.5  # spooling may cost at most 1.5x the normal path's CPU per message
P99_GOAL_MS = 50.0
ENV = {
    "FLOODGATE_CONNECTION_RATE": "0",
    "FLOODGATE_MESSAGE_RATE": "0",
    "FLOODGATE_RECIPIENT_RATE": "0",
    "FLOODGATE_MAX_CONNECTIONS_PER_IP": "1000",
    "FLOODGATE_AUTOBAN_THRESHOLD": "0",
    "FLOODGATE_AUTOBAN_REFUSAL_THRESHOLD": "0",
    "FLOODGATE_MAILBOX_MAX_MESSAGES": "0",
    "FLOODGATE_STORE_TIMEOUT": "1",
    "FLOODGATE_STARTTLS": "false",
    "FLOODGATE_SPOOL_REPLAY_RATE": "100000",
}


async def _one(port: int, serial: int, body: bytes) -> tuple[int, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:

        async def reply() -> int:
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("closed")
                if line[3:4] != b"-":
                    return int(line[:3])

        await reply()
        for command in (
            b"EHLO bench.test",
            b"MAIL FROM:<bench@client.test>",
            b"RCPT TO:<spool@mx.test>",
            b"DATA",
        ):
            writer.write(command + b"\r\n")
            await reply()
        started = time.perf_counter()
        writer.write(f"Subject: spool {serial}\r\n\r\n".encode() + body + b".\r\n")
        code = await reply()
        took = time.perf_counter() - started
        writer.write(b"QUIT\r\n")
        await reply()
        return code, took
    finally:
        writer.close()


async def _load(port: int, count: int) -> tuple[float, list[float], dict[int, int]]:
    body = (b"x" * 78 + b"\r\n") * (SIZE // 80)
    queue = iter(range(count))
    latencies: list[float] = []
    codes: dict[int, int] = {}

    async def worker() -> None:
        for serial in queue:
            code, took = await _one(port, serial, body)
            codes[code] = codes.get(code, 0) + 1
            latencies.append(took)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    return time.perf_counter() - started, latencies, codes


def _phase(port: int, pid: int, count: int) -> dict[str, Any]:
    cpu = cpu_seconds(pid)
    elapsed, latencies, codes = asyncio.run(_load(port, count))
    used = cpu_seconds(pid) - cpu
    return {
        "messages": count,
        "codes": {str(k): v for k, v in sorted(codes.items())},
        "per_s": round(count / elapsed),
        "cpu_us_per_message": round(used / count * 1e6),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


def _ready_reason(url: str) -> str:
    return httpx.get(url + "/readyz", timeout=5).text


def _drain(url: str, store: EmbeddedStore) -> dict[str, Any]:
    """Bring the store back; time the replay from its first record to an empty spool."""
    held = metric(url, "floodgate_spool_messages")
    before = metric(url, "floodgate_spool_replayed_total")
    store.start()
    back = time.monotonic()
    first: float | None = None
    while metric(url, "floodgate_spool_messages") > 0:
        if first is None and metric(url, "floodgate_spool_replayed_total") > before:
            first = time.monotonic()
        if time.monotonic() - back > 120:
            raise RuntimeError("the spool did not drain in 2 minutes")
        time.sleep(0.05)
    end = time.monotonic()
    return {
        "messages": int(held),
        "seconds_from_return": round(end - back, 2),  # includes noticing the store is back
        "seconds_replaying": round(end - (first or back), 2),
    }


def run(quick: bool = False) -> dict[str, Any]:
    count = 400 if quick else 2000
    runs = 1 if quick else 3
    normal, spooled, replay = [], [], []
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        store = EmbeddedStore(workdir / "store")
        uri = store.start()
        receiver = start_service("receiver", {"FLOODGATE_MONGODB_URI": uri, **ENV}, workdir)
        check: MongoClient[dict[str, Any]] = MongoClient(uri)
        messages = check["floodgate"]["messages"]
        try:
            asyncio.run(_load(receiver.port, 200))  # warm up
            for _ in range(runs):
                # From an empty collection each time: the embedded store slows as one
                # mailbox grows (the throughput suite empties it between runs too).
                messages.delete_many({})
                normal.append(_phase(receiver.port, receiver.pid, count))
                messages.delete_many({})
                store.kill()
                deadline = time.monotonic() + 30
                while "spooling" not in _ready_reason(receiver.http_url):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the receiver never saw the store down")
                    asyncio.run(_load(receiver.port, 5))  # its own writes notice it
                    time.sleep(0.2)
                spooled.append(_phase(receiver.port, receiver.pid, count))
                replay.append(_drain(receiver.http_url, store))
        finally:
            check.close()
            receiver.stop()
            store.stop()

    def med(rows: list[dict[str, Any]], field: str) -> float:
        return round(median([float(r[field]) for r in rows]), 2)

    summary = {
        name: {f: med(rows, f) for f in ("per_s", "cpu_us_per_message", "p50_ms", "p99_ms")}
        for name, rows in (("normal", normal), ("spooling", spooled))
    }
    ratio = summary["spooling"]["cpu_us_per_message"] / max(
        1.0, summary["normal"]["cpu_us_per_message"]
    )
    drain = [r["messages"] / max(r["seconds_replaying"], 0.05) for r in replay]
    back = [r["seconds_from_return"] for r in replay]
    return {
        "runs": runs,
        "clients": CLIENTS,
        "size": SIZE,
        "phases": {"normal": normal, "spooling": spooled, "replay": replay},
        "summary": summary,
        "cpu_ratio": round(ratio, 2),
        "cpu_ratio_goal": CPU_RATIO_GOAL,
        "p99_goal_ms": P99_GOAL_MS,
        "replay_per_s": round(median(drain)),
        "empty_after_return_s": round(median(back), 1),
        "goals_met": ratio <= CPU_RATIO_GOAL and summary["spooling"]["p99_ms"] <= P99_GOAL_MS,
    }


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [
        "### Spool (store up vs store away; one connection per message)",
        "",
        f"{result['clients']} clients, {result['size'] // 1024} KB, median of {result['runs']} "
        "runs. Latency is from the final dot to the 250.",
        "",
        "| path | msg/s | receiver CPU µs/msg | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in ("normal", "spooling"):
        r = s[name]
        lines.append(
            f"| {name} | {r['per_s']:,.0f} | {r['cpu_us_per_message']:,.0f} | {r['p50_ms']} | "
            f"{r['p99_ms']} |"
        )
    lines += [
        "",
        f"Spooling costs **{result['cpu_ratio']}x** the normal path's CPU per message (goal "
        f"<= {result['cpu_ratio_goal']}x) with p99 {s['spooling']['p99_ms']} ms (goal <= "
        f"{result['p99_goal_ms']} ms): {'met' if result['goals_met'] else 'NOT met'}. "
        f"Replay into the embedded store: **{result['replay_per_s']:,} messages/s** from the "
        "first replayed record to an empty spool (pace set high here; the default is 500/s, "
        f"behind live mail); the spool was empty {result['empty_after_return_s']} s after the "
        "store came back (the receiver first needs two good write probes, 2 s apart).",
    ]
    return "\n".join(lines) + "\n"
