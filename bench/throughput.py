"""Messages per second accepted *and durably stored*, beside Postfix's smtp-sink, and the
receiver's CPU time per stored message.

Load generator: Postfix's `smtp-source` (C, so the client is never the bottleneck) at 1, 20
and 100 concurrent sessions, 1 KB and 20 KB messages, in two modes: **one TCP connection per
message** (how MTAs deliver to an MX: the headline) and `-d`, many messages per connection.
Every receiver run is checked against the store: the number of stored documents must equal
the number of messages sent (smtp-source stops at the first non-2xx reply). The receiver's
CPU time (user + system, from /proc, all its threads) over each run divided by the messages
stored gives the CPU per message. `smtp-sink`, a C server that discards everything, gets the
same load in the same run: it is the ceiling on this machine, and each figure is also given
as a ratio to it because absolute rates drift between runs here.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench.common import (
    cpu_seconds,
    embedded_store,
    free_port,
    median,
    proc_status,
    start_service,
)

CONCURRENCY = (1, 20, 100)
SIZES = (1024, 20 * 1024)
MODES = ("connection", "session")  # one connection per message / smtp-source -d
CPU_TARGET_US = 400  # receiver CPU per stored message, c=20, 1 KB, connection mode
RATIO_TARGET = 0.30  # stored throughput / smtp-sink, same row
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"

RECEIVER_ENV = {
    # Throughput, not limits: one client address opens every connection here.
    "FLOODGATE_MAX_CONNECTIONS_PER_IP": "1000",
    "FLOODGATE_CONNECTION_RATE": "0",
    "FLOODGATE_MESSAGE_RATE": "0",
    "FLOODGATE_RECIPIENT_RATE": "0",
    "FLOODGATE_AUTOBAN_THRESHOLD": "0",
    # Every message goes to one mailbox and each run checks the stored count: no cap.
    "FLOODGATE_MAILBOX_MAX_MESSAGES": "0",
    # smtp-source -d sends every message of a session on one connection.
    "FLOODGATE_MAX_COMMANDS": "1000000",
}


def have_postfix_tools() -> bool:
    return Path(SMTP_SOURCE).exists() and Path(SMTP_SINK).exists()


def messages_for(concurrency: int, size: int, quick: bool) -> int:
    base = 300 if quick else 2000
    if concurrency == 1:
        base //= 3
    if size > 4096:
        base //= 2
    return max(base, concurrency * 2)


def drive(port: int, concurrency: int, size: int, count: int, mode: str) -> float:
    """Seconds smtp-source takes to deliver `count` messages; raises if it reports errors."""
    started = time.perf_counter()
    result = subprocess.run(
        [
            SMTP_SOURCE,
            *(["-d"] if mode == "session" else []),
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


Key = tuple[str, int, int]  # mode, concurrency, size


def sink_rates(runs: int, quick: bool) -> dict[Key, float]:
    port = free_port()
    sink = subprocess.Popen(
        [SMTP_SINK, "-u", "nobody", f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        rates = {}
        for mode, concurrency, size in _rows():
            count = messages_for(concurrency, size, quick) * 3
            rates[(mode, concurrency, size)] = median(
                [count / drive(port, concurrency, size, count, mode) for _ in range(runs)]
            )
        return rates
    finally:
        sink.terminate()
        sink.wait(5)


def _rows() -> list[Key]:
    return [(m, c, s) for m in MODES for c in CONCURRENCY for s in SIZES]


def receiver_rates(runs: int, quick: bool) -> tuple[dict[Key, float], dict[Key, float], int]:
    """Messages/s and receiver CPU µs per stored message for each row; peak RSS (KB)."""
    with tempfile.TemporaryDirectory() as directory, embedded_store(Path(directory)) as uri:
        receiver = start_service(
            "receiver", {"FLOODGATE_MONGODB_URI": uri, **RECEIVER_ENV}, Path(directory)
        )
        check: MongoClient[dict[str, Any]] = MongoClient(uri)
        messages = check["floodgate"]["messages"]
        try:
            drive(receiver.port, 20, 1024, 200, "connection")  # warm up: indexes, caches
            rates: dict[Key, float] = {}
            cpu_us: dict[Key, float] = {}
            for key in _rows():
                mode, concurrency, size = key
                count = messages_for(concurrency, size, quick)
                samples, cpu_samples = [], []
                for _ in range(runs):
                    messages.delete_many({})
                    cpu_before = cpu_seconds(receiver.pid)
                    elapsed = drive(receiver.port, concurrency, size, count, mode)
                    cpu = cpu_seconds(receiver.pid) - cpu_before
                    stored = messages.count_documents({})
                    if stored != count:
                        raise RuntimeError(f"{count} sent but {stored} stored")
                    samples.append(count / elapsed)
                    cpu_samples.append(cpu / stored * 1e6)
                rates[key] = median(samples)
                cpu_us[key] = median(cpu_samples)
            peak = proc_status(receiver.pid, "VmHWM")
            return rates, cpu_us, peak
        finally:
            check.close()
            receiver.stop()


def run(quick: bool = False) -> dict[str, Any]:
    if not have_postfix_tools():
        return {
            "skipped": "Postfix's smtp-source/smtp-sink are missing "
            "(FLOODGATE_INSTALL_TOOLS=1 make bench installs them)"
        }
    runs = 3 if quick else 5
    ours, cpu_us, peak_kb = receiver_rates(runs, quick)
    sink = sink_rates(runs, quick)
    rows: list[dict[str, Any]] = [
        {
            "mode": mode,
            "concurrency": concurrency,
            "size": size,
            "messages": messages_for(concurrency, size, quick),
            "floodgate_per_s": round(ours[(mode, concurrency, size)]),
            "receiver_cpu_us_per_message": round(cpu_us[(mode, concurrency, size)]),
            "smtp_sink_per_s": round(sink[(mode, concurrency, size)]),
            "ratio": round(ours[(mode, concurrency, size)] / sink[(mode, concurrency, size)], 3),
        }
        for mode, concurrency, size in _rows()
    ]
    target = next(
        r for r in rows if (r["mode"], r["concurrency"], r["size"]) == ("connection", 20, 1024)
    )
    return {
        "runs_per_figure": runs,
        "rows": rows,
        "receiver_peak_rss_mb": round(peak_kb / 1024, 1),
        "target": {
            "c20_1kb_per_s": target["floodgate_per_s"],
            "c20_1kb_cpu_us": target["receiver_cpu_us_per_message"],
            "c20_1kb_ratio": target["ratio"],
            "cpu_goal_us": CPU_TARGET_US,
            "ratio_goal": RATIO_TARGET,
            "cpu_met": target["receiver_cpu_us_per_message"] <= CPU_TARGET_US,
            "ratio_met": target["ratio"] >= RATIO_TARGET,
        },
    }


def markdown(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"### Throughput\n\nSkipped: {result['skipped']}\n"
    lines = [
        "### Throughput (stored durably; Postfix smtp-source as the client)",
        "",
        f"Median of {result['runs_per_figure']} runs per figure; receiver peak RSS "
        f"{result['receiver_peak_rss_mb']} MB. CPU is the receiver's user + system time per "
        "stored message.",
    ]
    titles = {
        "connection": "One TCP connection per message (how MTAs deliver to an MX)",
        "session": "Many messages per connection (smtp-source -d)",
    }
    for mode in MODES:
        lines += [
            "",
            f"#### {titles[mode]}",
            "",
            "| clients | size | messages/run | Floodgate msg/s | receiver CPU µs/msg "
            "| smtp-sink msg/s | ratio |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in (row for row in result["rows"] if row["mode"] == mode):
            lines.append(
                f"| {r['concurrency']} | {r['size'] // 1024} KB | {r['messages']} | "
                f"{r['floodgate_per_s']:,} | {r['receiver_cpu_us_per_message']:,} | "
                f"{r['smtp_sink_per_s']:,} | {r['ratio']} |"
            )
    t = result["target"]
    lines += [
        "",
        f"Targets (one connection per message, 20 clients, 1 KB): receiver CPU <= "
        f"{t['cpu_goal_us']} µs/msg: **{t['c20_1kb_cpu_us']} µs**, "
        f"{'met' if t['cpu_met'] else 'NOT met'}; stored throughput >= {t['ratio_goal']}x "
        f"smtp-sink: **{t['c20_1kb_ratio']}x** ({t['c20_1kb_per_s']:,}/s), "
        f"{'met' if t['ratio_met'] else 'NOT met'}.",
    ]
    return "\n".join(lines) + "\n"
