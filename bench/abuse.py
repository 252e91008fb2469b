"""What held sockets cost, what legit senders feel meanwhile, what a refusal costs, and
whether one crafted message can stall everyone else.

* Hold 10,000 idle sockets from 40 loopback addresses against a real receiver: its RSS per
  held socket (target <= 4 KB), and legit latency at concurrency 10 (one connection per
  message, as MTAs send) while they are held vs unloaded (target: p99 <= 1.5x unloaded).
* A message whose Subject is folded over 200,000 continuation lines: the worst time another
  client waits for its banner while the receiver handles it (target <= 100 ms).
* Refusal cost: one client address at its per-IP cap hammering connect / read 421 / close
  from several processes; refusals per wall second and per receiver CPU-second (target
  >= 10,000 per CPU-second, i.e. on one core).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    cpu_seconds,
    embedded_store,
    median,
    metric,
    percentile,
    proc_status,
    raise_fd_limit,
    start_service,
)

RSS_TARGET_KB = 4
BANNER_TARGET_MS = 100
IDLE_ENV = {
    "FLOODGATE_MAX_CONNECTIONS": "20000",  # 10k held stays below the stress threshold
    "FLOODGATE_MAX_CONNECTIONS_PER_IP": "300",
    "FLOODGATE_CONNECTION_RATE": "0",
    "FLOODGATE_MESSAGE_RATE": "0",
    "FLOODGATE_AUTOBAN_THRESHOLD": "0",
    "FLOODGATE_IDLE_TIMEOUT": "600",
    "FLOODGATE_SESSION_TIMEOUT": "1200",
}


def connections_open(receiver_http: str) -> float:
    """The host's open connections (the door's count, whatever the worker count)."""
    return metric(receiver_http, "floodgate_connections_open", worker="gate")


async def _legit_once(port: int, source: str, serial: int) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))

    async def reply() -> bytes:
        while True:
            line = await asyncio.wait_for(reader.readline(), 30)
            if not line:
                raise ConnectionError("closed")
            if line[3:4] != b"-":
                return line

    try:
        await reply()
        body = b"Subject: legit %d\r\n\r\n" % serial + b"x" * 1000 + b"\r\n.\r\n"
        for command in (
            b"EHLO legit.test\r\n",
            b"MAIL FROM:<l@legit.test>\r\n",
            b"RCPT TO:<u%d@mx.test>\r\n" % (serial % 50),
            b"DATA\r\n",
            body,
        ):
            writer.write(command)
            line = await reply()
            if line[:1] not in (b"2", b"3"):
                raise RuntimeError(f"legit message refused: {line!r}")
        writer.write(b"QUIT\r\n")
        return time.perf_counter() - started
    finally:
        writer.close()


async def _legit_run(port: int, concurrency: int, total: int) -> list[float]:
    latencies: list[float] = []
    serials = iter(range(total))

    async def worker(index: int) -> None:
        source = f"127.0.40.{index + 1}"
        for serial in serials:
            latencies.append(await _legit_once(port, source, serial))

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return latencies


def legit_latency(port: int, concurrency: int, total: int) -> dict[str, float]:
    latencies = asyncio.run(_legit_run(port, concurrency, total))
    return {
        "messages": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
    }


def hold_idle(port: int, count: int, addresses: int) -> list[socket.socket]:
    held = []
    for n in range(count):
        sock = socket.socket()
        sock.bind((f"127.0.100.{n % addresses + 1}", 0))
        sock.connect(("127.0.0.1", port))
        held.append(sock)
    return held


def idle_sockets(quick: bool) -> dict[str, Any]:
    count = 2000 if quick else 10_000
    addresses = 40
    legit_total = 60 if quick else 1000
    limit = raise_fd_limit()
    if limit < count + 500:
        return {"skipped": f"open-files limit {limit} is below {count + 500}"}
    with tempfile.TemporaryDirectory() as directory, embedded_store(Path(directory)) as uri:
        receiver = start_service(
            "receiver", {"FLOODGATE_MONGODB_URI": uri, **IDLE_ENV}, Path(directory)
        )
        held: list[socket.socket] = []
        try:
            legit_latency(receiver.port, 10, 30 if quick else 100)  # warm up
            unloaded = [legit_latency(receiver.port, 10, legit_total) for _ in range(3)]
            rss_before = proc_status(receiver.pid, "VmRSS")
            held = hold_idle(receiver.port, count, addresses)
            deadline = time.monotonic() + 60
            while connections_open(receiver.http_url) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError("the receiver did not admit every idle socket")
                time.sleep(0.2)
            time.sleep(1.0)
            rss_held = proc_status(receiver.pid, "VmRSS")
            loaded = [legit_latency(receiver.port, 10, legit_total) for _ in range(3)]
            still_open = connections_open(receiver.http_url)
        finally:
            for sock in held:
                sock.close()
            receiver.stop()
    unloaded_p99 = median([r["p99_ms"] for r in unloaded])
    loaded_p99 = median([r["p99_ms"] for r in loaded])
    per_socket_kb = (rss_held - rss_before) / count
    return {
        "sockets": count,
        "source_addresses": addresses,
        "rss_before_mb": round(rss_before / 1024, 1),
        "rss_held_mb": round(rss_held / 1024, 1),
        "rss_per_socket_kb": round(per_socket_kb, 2),
        "held_during_legit": int(still_open),
        "legit_concurrency": 10,
        "legit_messages_per_run": legit_total,
        "unloaded_p50_ms": median([r["p50_ms"] for r in unloaded]),
        "unloaded_p99_ms": unloaded_p99,
        "loaded_p50_ms": median([r["p50_ms"] for r in loaded]),
        "loaded_p99_ms": loaded_p99,
        "p99_ratio": round(loaded_p99 / unloaded_p99, 2) if unloaded_p99 else None,
        "targets": {
            "rss_per_socket_kb <= 4": per_socket_kb <= RSS_TARGET_KB,
            "p99_ratio <= 1.5": bool(unloaded_p99) and loaded_p99 <= 1.5 * unloaded_p99,
        },
    }


def _hammer(port: int, source: str, seconds: float, counter: Any) -> None:
    refused = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock = socket.socket()
        try:
            sock.bind((source, 0))
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port))
            if sock.recv(64).startswith(b"421"):
                refused += 1
        except OSError:
            pass
        finally:
            sock.close()
    with counter.get_lock():
        counter.value += refused


def refusal_cost(quick: bool) -> dict[str, Any]:
    seconds = 1.0 if quick else 8.0
    workers = 3
    with tempfile.TemporaryDirectory() as directory, embedded_store(Path(directory)) as uri:
        receiver = start_service(
            "receiver",
            {
                "FLOODGATE_MONGODB_URI": uri,
                "FLOODGATE_MAX_CONNECTIONS_PER_IP": "1",
                "FLOODGATE_CONNECTION_RATE": "0",
                "FLOODGATE_AUTOBAN_THRESHOLD": "0",
                "FLOODGATE_LOG_LEVEL": "WARNING",
            },
            Path(directory),
        )
        holder = socket.create_connection(("127.0.0.1", receiver.port), 5, ("127.0.200.1", 0))
        try:
            holder.recv(64)
            counter = multiprocessing.Value("q", 0)
            processes = [
                multiprocessing.Process(
                    target=_hammer, args=(receiver.port, "127.0.200.1", seconds, counter)
                )
                for _ in range(workers)
            ]
            cpu_start = cpu_seconds(receiver.pid)
            started = time.perf_counter()
            for process in processes:
                process.start()
            for process in processes:
                process.join(seconds + 30)
            wall = time.perf_counter() - started
            cpu = cpu_seconds(receiver.pid) - cpu_start
        finally:
            holder.close()
            receiver.stop()
    refused = int(counter.value)
    per_cpu = refused / cpu if cpu else 0.0
    return {
        "client_processes": workers,
        "seconds": round(wall, 2),
        "refusals": refused,
        "per_wall_second": round(refused / wall),
        "receiver_cpu_seconds": round(cpu, 2),
        "per_receiver_cpu_second": round(per_cpu),
        "targets": {"per_receiver_cpu_second >= 10000": per_cpu >= 10_000},
    }


def _crafted(port: int, lines: int, outcome: dict[str, Any]) -> None:
    """Send one message with a Subject folded over `lines` lines; record the reply."""
    with socket.create_connection(("127.0.0.1", port), 60, ("127.0.201.1", 0)) as sock:
        stream = sock.makefile("rb")

        def reply() -> bytes:
            while True:
                line = stream.readline()
                if not line or line[3:4] != b"-":
                    return line

        reply()
        for command in (b"EHLO c.test", b"MAIL FROM:<a@example.org>", b"RCPT TO:<f@mx.test>"):
            sock.sendall(command + b"\r\n")
            reply()
        sock.sendall(b"DATA\r\n")
        reply()
        outcome["sent"] = time.monotonic()
        sock.sendall(b"Subject: x\r\n" + b" y\r\n" * lines + b"\r\nbody\r\n.\r\n")
        outcome["reply"] = reply().decode(errors="replace").strip()
        outcome["answered"] = time.monotonic()


def _banner_delay(port: int) -> float:
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), 30, ("127.0.202.1", 0)) as sock:
        sock.recv(256)
    return time.perf_counter() - started


def header_stall(quick: bool) -> dict[str, Any]:
    lines = 100_000 if quick else 200_000
    with tempfile.TemporaryDirectory() as directory, embedded_store(Path(directory)) as uri:
        receiver = start_service(
            "receiver",
            {"FLOODGATE_MONGODB_URI": uri, "FLOODGATE_CONNECTION_RATE": "0"},
            Path(directory),
        )
        try:
            outcome: dict[str, Any] = {}
            sender = threading.Thread(target=_crafted, args=(receiver.port, lines, outcome))
            sender.start()
            delays = []
            while sender.is_alive() or time.monotonic() < outcome.get("answered", 0) + 0.5:
                delays.append(_banner_delay(receiver.port))
                time.sleep(0.02)
            sender.join()
        finally:
            receiver.stop()
    worst = max(delays) * 1000
    return {
        "folded_lines": lines,
        "message_bytes": 12 + 4 * lines + 10,
        "reply": outcome.get("reply", "none"),
        "answered_in_ms": round((outcome["answered"] - outcome["sent"]) * 1000, 1),
        "probes": len(delays),
        "banner_p50_ms": round(percentile(delays, 0.5) * 1000, 2),
        "banner_max_ms": round(worst, 2),
        "targets": {f"banner_max_ms <= {BANNER_TARGET_MS}": worst <= BANNER_TARGET_MS},
    }


STATS_SHARE_TARGET = 5.0  # % of a refusal's receiver CPU cost


def stats_cost(refusal: dict[str, Any], quick: bool) -> dict[str, Any]:
    """What the live statistics add to each refusal, and what a snapshot costs.

    Measured in process on the exact hot-path call (`LiveStats.record_refusal`), with the
    worst key mix for the summary (a new address on every refusal, 100,000 of them), and
    compared with the receiver CPU cost of one refusal from `refusal_cost`.
    """
    import json as json_module

    from receiver.telemetry.stats import LiveStats, snapshot

    calls = 200_000 if quick else 1_000_000
    keys = [f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in range(100_000)]
    stats = LiveStats()
    record = stats.record_refusal
    started = time.process_time()
    for n in range(calls):
        record(keys[n % 100_000], "per_ip_cap")
    per_call_us = (time.process_time() - started) / calls * 1e6
    refusal_us = 1e6 / refusal["per_receiver_cpu_second"]
    open_counts = {keys[n]: 1 + n % 5 for n in range(10_000)}
    started = time.process_time()
    for _ in range(20):
        document = snapshot(
            stats,
            receiver="bench",
            open_counts=open_counts,
            open_total=30_000,
            stressed=False,
            store_up=True,
            store_reason="",
            accepted_total=0,
        )
    build_ms = (time.process_time() - started) / 20 * 1000
    share = 100 * per_call_us / refusal_us
    return {
        "calls": calls,
        "record_us": round(per_call_us, 3),
        "refusal_us": round(refusal_us, 1),
        "share_pct": round(share, 2),
        "cpu_pct_at_10k_per_s": round(per_call_us * 10_000 / 1e4, 2),
        "snapshot_bytes": len(json_module.dumps(document)),
        "snapshot_build_ms": round(build_ms, 2),
        "targets": {f"share_pct < {STATS_SHARE_TARGET}": share < STATS_SHARE_TARGET},
    }


def run(quick: bool = False) -> dict[str, Any]:
    refusal = refusal_cost(quick)
    return {
        "idle": idle_sockets(quick),
        "refusal": refusal,
        "stats": stats_cost(refusal, quick),
        "header": header_stall(quick),
    }


def markdown(result: dict[str, Any]) -> str:
    idle, refusal = result["idle"], result["refusal"]
    lines = ["### Abuse: held sockets and refusals", ""]
    if "skipped" in idle:
        lines.append(f"Idle sockets skipped: {idle['skipped']}")
    else:
        lines += [
            f"{idle['sockets']:,} idle sockets from {idle['source_addresses']} addresses held: "
            f"receiver RSS {idle['rss_before_mb']} -> {idle['rss_held_mb']} MB, "
            f"**{idle['rss_per_socket_kb']} KB per socket** (target <= {RSS_TARGET_KB}); "
            f"{idle['held_during_legit']:,} still held after the legit runs.",
            "",
            "| legit, concurrency 10, 1 KB, conn per message | p50 ms | p99 ms |",
            "| --- | ---: | ---: |",
            f"| unloaded | {idle['unloaded_p50_ms']} | {idle['unloaded_p99_ms']} |",
            f"| {idle['sockets']:,} sockets held | {idle['loaded_p50_ms']} | "
            f"{idle['loaded_p99_ms']} |",
            "",
            f"p99 loaded / unloaded: **{idle['p99_ratio']}** (target <= 1.5; medians of 3 "
            f"runs of {idle['legit_messages_per_run']} messages).",
        ]
    lines += [
        "",
        f"Refusal cost: {refusal['refusals']:,} refusals (421 at the per-IP cap) in "
        f"{refusal['seconds']} s from {refusal['client_processes']} client processes: "
        f"{refusal['per_wall_second']:,}/s wall, "
        f"**{refusal['per_receiver_cpu_second']:,} per receiver CPU-second** (target >= 10,000).",
    ]
    stats = result.get("stats")
    if stats:
        lines += [
            "",
            f"Live statistics (heavy hitters per refusal, worst key mix: a new address each "
            f"time): **{stats['record_us']} µs per refusal, {stats['share_pct']} % of a "
            f"refusal's {stats['refusal_us']} µs** (target < {STATS_SHARE_TARGET} %); at "
            f"10,000 refusals/s that is {stats['cpu_pct_at_10k_per_s']} % of one core. A "
            f"snapshot of 10,000 open clients and 100,000 refused ones: "
            f"{stats['snapshot_bytes']:,} bytes, built in {stats['snapshot_build_ms']} ms "
            f"(published every 5 s).",
        ]
    header = result.get("header")
    if header:
        lines += [
            "",
            f"Crafted header: a Subject folded over {header['folded_lines']:,} lines "
            f"({header['message_bytes']:,} bytes) got `{header['reply']}` in "
            f"{header['answered_in_ms']} ms; meanwhile {header['probes']} other clients waited "
            f"p50 {header['banner_p50_ms']} ms, **max {header['banner_max_ms']} ms** for their "
            f"banner (target <= {BANNER_TARGET_MS} ms).",
        ]
    return "\n".join(lines) + "\n"
