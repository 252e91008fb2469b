"""Issue 2: messages per second accepted *and durably stored*, beside Postfix's smtp-sink.

Load generator: Postfix's `smtp-source` (C, so the client is never the bottleneck), with
`-d` (many messages per connection) at 1, 20 and 100 concurrent sessions, 1 KB and 20 KB
messages. Every receiver run is checked against the store: the number of stored documents
must equal the number of messages sent (smtp-source stops at the first non-2xx reply).
`smtp-sink`, a C server that discards everything, gets the same load in the same run: it is
the ceiling on this machine, and each figure is also given as a ratio to it because absolute
rates drift between runs here.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench.common import embedded_store, free_port, median, proc_status, start_service

CONCURRENCY = (1, 20, 100)
SIZES = (1024, 20 * 1024)
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"

RECEIVER_ENV = {
    # Throughput, not limits: one client address opens every connection here.
    "FLOODGATE_MAX_CONNECTIONS_PER_IP": "1000",
    "FLOODGATE_CONNECTION_RATE": "0",
    "FLOODGATE_MESSAGE_RATE": "0",
    "FLOODGATE_RECIPIENT_RATE": "0",
    "FLOODGATE_AUTOBAN_THRESHOLD": "0",
    # smtp-source -d sends every message of a session on one connection.
    "FLOODGATE_MAX_COMMANDS": "1000000",
}


def have_postfix_tools() -> bool:
    return Path(SMTP_SOURCE).exists() and Path(SMTP_SINK).exists()


def messages_for(concurrency: int, size: int, quick: bool) -> int:
    base = 300 if quick else 3000
    if concurrency == 1:
        base //= 3
    if size > 4096:
        base //= 2
    return max(base, concurrency * 2)


def drive(port: int, concurrency: int, size: int, count: int) -> float:
    """Seconds smtp-source takes to deliver `count` messages; raises if it reports errors."""
    started = time.perf_counter()
    result = subprocess.run(
        [
            SMTP_SOURCE,
            "-d",
            "-s",
            str(concurrency),
            "-l",
            str(size),
            "-m",
            str(count),
            "-f",
            "bench@client.test",
            "-t",
            "inbox@mx.test",
            "-M",
            "client.test",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0 or result.stderr.strip():
        raise RuntimeError(f"smtp-source failed: {result.stderr.strip()[:500]}")
    return elapsed


def sink_rates(runs: int, quick: bool) -> dict[tuple[int, int], float]:
    port = free_port()
    sink = subprocess.Popen(
        [SMTP_SINK, "-u", "nobody", f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        rates = {}
        for concurrency in CONCURRENCY:
            for size in SIZES:
                count = messages_for(concurrency, size, quick) * 3
                rates[(concurrency, size)] = median(
                    [count / drive(port, concurrency, size, count) for _ in range(runs)]
                )
        return rates
    finally:
        sink.terminate()
        sink.wait(5)


def receiver_rates(runs: int, quick: bool) -> tuple[dict[tuple[int, int], float], int]:
    with tempfile.TemporaryDirectory() as directory, embedded_store(Path(directory)) as uri:
        receiver = start_service(
            "receiver", {"FLOODGATE_MONGODB_URI": uri, **RECEIVER_ENV}, Path(directory)
        )
        check: MongoClient[dict[str, Any]] = MongoClient(uri)
        messages = check["floodgate"]["messages"]
        try:
            drive(receiver.port, 20, 1024, 200)  # warm up: connections, indexes, caches
            rates = {}
            for concurrency in CONCURRENCY:
                for size in SIZES:
                    count = messages_for(concurrency, size, quick)
                    samples = []
                    for _ in range(runs):
                        messages.delete_many({})
                        elapsed = drive(receiver.port, concurrency, size, count)
                        stored = messages.count_documents({})
                        if stored != count:
                            raise RuntimeError(f"{count} sent but {stored} stored")
                        samples.append(count / elapsed)
                    rates[(concurrency, size)] = median(samples)
            peak = proc_status(receiver.pid, "VmHWM")
            return rates, peak
        finally:
            check.close()
            receiver.stop()


def run(quick: bool = False) -> dict[str, Any]:
    if not have_postfix_tools():
        return {
            "skipped": "Postfix's smtp-source/smtp-sink are missing "
            "(bench/install-postfix.sh installs them)"
        }
    runs = 3 if quick else 5
    ours, peak_kb = receiver_rates(runs, quick)
    sink = sink_rates(runs, quick)
    rows = [
        {
            "concurrency": concurrency,
            "size": size,
            "messages": messages_for(concurrency, size, quick),
            "floodgate_per_s": round(ours[(concurrency, size)]),
            "smtp_sink_per_s": round(sink[(concurrency, size)]),
            "ratio": round(ours[(concurrency, size)] / sink[(concurrency, size)], 3),
        }
        for concurrency in CONCURRENCY
        for size in SIZES
    ]
    target = next(r for r in rows if r["concurrency"] == 20 and r["size"] == 1024)
    return {
        "runs_per_figure": runs,
        "rows": rows,
        "receiver_peak_rss_mb": round(peak_kb / 1024, 1),
        "target": {
            "c20_1kb_per_s": target["floodgate_per_s"],
            "goal": 1000,
            "met": target["floodgate_per_s"] >= 1000,
        },
    }


def markdown(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"### Throughput\n\nSkipped: {result['skipped']}\n"
    lines = [
        "### Throughput (stored durably, smtp-source -d as the client)",
        "",
        f"Median of {result['runs_per_figure']} runs per figure; receiver peak RSS "
        f"{result['receiver_peak_rss_mb']} MB.",
        "",
        "| clients | size | messages/run | Floodgate msg/s | smtp-sink msg/s | ratio |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['concurrency']} | {r['size'] // 1024} KB | {r['messages']} | "
            f"{r['floodgate_per_s']:,} | {r['smtp_sink_per_s']:,} | {r['ratio']} |"
        )
    t = result["target"]
    lines += [
        "",
        f"Target (20 clients, 1 KB): >= {t['goal']:,}/s: {t['c20_1kb_per_s']:,}/s, "
        f"{'met' if t['met'] else 'NOT met'}.",
    ]
    return "\n".join(lines) + "\n"
