"""Workers: what a second receiver worker buys on this machine (FLOODGATE_WORKERS 1 vs 2).

For each worker count, one receiver host (gate + workers) on the embedded store, with
clients spread over 16 loopback addresses (the gate sends every connection of one client
to one worker, so a single address would use one worker):

- **STARTTLS handshakes per second** (connect, EHLO, STARTTLS, full handshake, QUIT);
- **stored msg/s**, one connection per message, in clear text and over STARTTLS, 20
  clients, 1 KB; every run checks the store holds every message;
- **receiver CPU µs per message**, all processes of the receiver counted (the gate and
  every worker, from /proc);
- **refusals per second** and per receiver CPU-second: three processes hammer one address
  over its connection cap (the gate answers them alone).

Medians of the runs, and the ratio 2 workers / 1 worker. On a 2-core machine the client,
the store and the receiver share the two cores: see the README's Workers section.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from bench.abuse import _hammer
from bench.common import CLK_TCK, Service, embedded_store, median, start_service
from bench.tls import TLS_ENV, session

SOURCES = 16
COUNTS = (1, 2)


def family_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its live children (a host's gate and its workers)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


async def _spread(port: int, count: int, concurrency: int, *, tls: bool, send: bool) -> float:
    """Seconds for `count` sessions, `concurrency` at a time, from SOURCES addresses."""
    queue = iter(range(count))

    async def client(index: int) -> None:
        source = f"127.0.50.{1 + index % SOURCES}"
        for _ in queue:
            await session(port, tls=tls, send=send, source=source)

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(concurrency)))
    return time.perf_counter() - started


def _host(uri: str, workers: int, directory: Path, **extra: str) -> Service:
    env = {"FLOODGATE_MONGODB_URI": uri, **TLS_ENV, "FLOODGATE_WORKERS": str(workers), **extra}
    service = start_service("receiver", env, directory)
    deadline = time.monotonic() + 30
    while httpx.get(service.http_url + "/readyz", timeout=5).status_code != 200:
        if time.monotonic() > deadline:
            service.stop()
            raise RuntimeError("receiver host not ready")
        time.sleep(0.2)
    return service


def serving(uri: str, workers: int, directory: Path, quick: bool) -> dict[str, Any]:
    runs = 1 if quick else 3
    handshakes = 200 if quick else 1000
    messages = 200 if quick else 1000
    receiver = _host(uri, workers, directory)
    check: MongoClient[dict[str, Any]] = MongoClient(uri)
    stored = check["floodgate"]["messages"]
    figures: dict[str, list[float]] = {
        k: [] for k in ("handshakes_per_s", "clear_per_s", "tls_per_s", "clear_us", "tls_us")
    }
    try:
        port = receiver.port
        asyncio.run(_spread(port, 100, 10, tls=True, send=True))  # warm up every worker
        for _ in range(runs):
            elapsed = asyncio.run(_spread(port, handshakes, 16, tls=True, send=False))
            figures["handshakes_per_s"].append(handshakes / elapsed)
            for mode in ("clear", "tls"):
                stored.delete_many({})
                before = family_cpu(receiver.pid)
                elapsed = asyncio.run(_spread(port, messages, 20, tls=mode == "tls", send=True))
                cpu = family_cpu(receiver.pid) - before
                count = stored.count_documents({})
                if count != messages:
                    raise RuntimeError(f"{messages} sent over {mode} but {count} stored")
                figures[f"{mode}_per_s"].append(messages / elapsed)
                figures[f"{mode}_us"].append(cpu / messages * 1e6)
    finally:
        check.close()
        receiver.stop()
    return {name: round(median(values)) for name, values in figures.items()}


def refusals(uri: str, workers: int, directory: Path, quick: bool) -> dict[str, Any]:
    seconds = 3.0 if quick else 6.0
    receiver = _host(
        uri,
        workers,
        directory,
        FLOODGATE_MAX_CONNECTIONS_PER_IP="1",
        FLOODGATE_CONNECTION_RATE="0",
        FLOODGATE_AUTOBAN_REFUSAL_THRESHOLD="0",
    )
    holder = socket.create_connection(("127.0.0.1", receiver.port), 5, ("127.0.201.1", 0))
    try:
        holder.recv(64)
        counter = multiprocessing.Value("q", 0)
        hammers = [
            multiprocessing.Process(
                target=_hammer, args=(receiver.port, "127.0.201.1", seconds, counter)
            )
            for _ in range(3)
        ]
        before = family_cpu(receiver.pid)
        started = time.perf_counter()
        for process in hammers:
            process.start()
        for process in hammers:
            process.join(seconds + 30)
        wall = time.perf_counter() - started
        cpu = family_cpu(receiver.pid) - before
    finally:
        holder.close()
        receiver.stop()
    refused = int(counter.value)
    return {
        "refusals_per_s": round(refused / wall),
        "refusals_per_cpu_s": round(refused / cpu) if cpu else 0,
    }


def run(quick: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {"runs_per_figure": 1 if quick else 3}
    with tempfile.TemporaryDirectory() as directory, embedded_store(Path(directory)) as uri:
        for workers in COUNTS:
            figures = serving(uri, workers, Path(directory), quick)
            figures.update(refusals(uri, workers, Path(directory), quick))
            results[str(workers)] = figures
    one, two = results["1"], results["2"]
    results["ratio"] = {k: round(two[k] / one[k], 2) if one[k] else 0.0 for k in one}
    results["targets"] = {
        "cpu_us_per_message_growth <= 10%": two["tls_us"] <= 1.1 * one["tls_us"]
        and two["clear_us"] <= 1.1 * one["clear_us"],
        "refusals_per_cpu_s >= 10000": min(one["refusals_per_cpu_s"], two["refusals_per_cpu_s"])
        >= 10_000,
    }
    return results


ROWS = (
    ("handshakes_per_s", "STARTTLS handshakes/s"),
    ("clear_per_s", "stored msg/s, clear text (1 connection per message)"),
    ("tls_per_s", "stored msg/s, STARTTLS (1 connection per message)"),
    ("clear_us", "receiver CPU µs per message, clear text (all processes)"),
    ("tls_us", "receiver CPU µs per message, STARTTLS (all processes)"),
    ("refusals_per_s", "refusals/s (one address over its cap)"),
    ("refusals_per_cpu_s", "refusals per receiver CPU-second"),
)


def markdown(result: dict[str, Any]) -> str:
    one, two, ratio = result["1"], result["2"], result["ratio"]
    lines = [
        "### Workers",
        "",
        f"Median of {result['runs_per_figure']} runs; clients from {SOURCES} loopback "
        "addresses; the client, the store and the receiver share this machine's cores.",
        "",
        "| measure | 1 worker | 2 workers | ratio |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {label} | {one[k]:,} | {two[k]:,} | {ratio[k]} |" for k, label in ROWS]
    lines += ["", "Targets: " + ", ".join(f"{k}: {v}" for k, v in result["targets"].items())]
    return "\n".join(lines) + "\n"
