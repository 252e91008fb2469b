"""The store at scale: what the receiver and the readers cost as the store fills.

One receiver (default mailbox cap), one API and the embedded store (`make run`'s store).
The store is filled through the receiver by Postfix's `smtp-source` (20 clients, 1 KB, one
connection per message, `-N`: every message to a mailbox of its own) to each size in
turn (0, 50,000, 200,000 messages; bounded in time: `BENCH_SCALE_BUDGET`
seconds, default 3,600, then the sizes not reached are left out and the last size measured
is the one reached). At each size:

- stored msg/s over a window of messages, and the receiver's and the store's CPU per
  message (user + system from /proc);
- listing latency through the API, p50/p99, for an empty mailbox, a mailbox of 50 and a
  full mailbox (549 messages: the receiver trims at the cap plus its slack, 550);
- reading one message (`/raw`), p50/p99;
- a trim (the full mailbox down to 300) and a retention sweep (2,000 expired messages),
  each timed in process against the same store, per message removed;
- bytes on disk per stored message (SQLite's live pages, and the file with its WAL).

At the last size, another sender's time from its final dot to the 250 (one message at a
time), alone and while 8 readers list a mailbox of 50 as fast as the API answers them.

Last, retention's effect on the file: messages written and expired, then swept, then the
space handed back (the sweep's compaction), with the file's size after each step.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from bench.common import TOKEN, cpu_seconds, median, percentile, start_service
from mailstore import MessageDocument, MessageStore, StoreConfig, new_message_id, utcnow
from mailstore.embedded import EmbeddedStore

SIZES = (0, 50_000, 200_000)
QUICK_SIZES = (0, 2_000, 10_000)
CLIENTS = 20
SIZE = 1024
FILL_CHUNK = 10_000
WINDOW, QUICK_WINDOW = 3_000, 600
READS, QUICK_READS = 200, 50
FULL = 549  # the default cap (500) plus its slack (50), less one: not trimmed yet
TRIM_KEEP = 300
SWEEP, QUICK_SWEEP = 2_000, 500
LISTING_P50_GOAL_MS = 20.0
RATE_GOAL, CPU_GOAL = 0.9, 1.2  # at the largest size, against the empty store
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
ENV = {
    "FLOODGATE_MAX_CONNECTIONS_PER_IP": "1000",
    "FLOODGATE_CONNECTION_RATE": "0",
    "FLOODGATE_MESSAGE_RATE": "0",
    "FLOODGATE_RECIPIENT_RATE": "0",
    "FLOODGATE_AUTOBAN_THRESHOLD": "0",
    "FLOODGATE_AUTOBAN_REFUSAL_THRESHOLD": "0",
    "FLOODGATE_STARTTLS": "false",
    # The bench sweeps and times it itself; the receiver's sweeper would race it.
    "FLOODGATE_SWEEP_INTERVAL": "3600",
}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def budget() -> float:
    """Seconds the fill may take (not a FLOODGATE_ variable: the services refuse unknown
    ones, and they inherit the bench's environment)."""
    return float(os.environ.get("BENCH_SCALE_BUDGET", "3600"))


def send(port: int, count: int, to: str, *, distinct: bool = True) -> float:
    """Seconds smtp-source takes to deliver `count` messages to `to` (to a mailbox each,
    the address prefixed with a sequence number, if `distinct`)."""
    started = time.perf_counter()
    command = [SMTP_SOURCE, *(["-N"] if distinct else []), "-s", str(CLIENTS), "-l", str(SIZE)]
    command += ["-m", str(count), "-f", "bench@client.test", "-t", to, "-M", "client.test"]
    result = subprocess.run(
        [*command, f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0 or result.stderr.strip():
        raise RuntimeError(f"smtp-source failed: {result.stderr.strip()[:500]}")
    return time.perf_counter() - started


@dataclass
class Rig:
    store: EmbeddedStore
    receiver_pid: int
    smtp_port: int
    api_url: str
    check: MongoClient[dict[str, Any]]
    workdir: Path

    def stored(self) -> int:
        """Messages in the store, counted in its file (nx-27017 answers a count by
        reading every document)."""
        with sqlite3.connect(f"file:{self.store.database_path}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT count(*) FROM messages").fetchone()[0])

    def store_pid(self) -> int:
        assert self.store.process is not None
        return self.store.process.pid


def latencies(client: httpx.Client, paths: list[str]) -> dict[str, float]:
    took = []
    for path in paths:
        started = time.perf_counter()
        response = client.get(path, headers=AUTH)
        took.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return {"p50_ms": round(median(took), 2), "p99_ms": round(percentile(took, 0.99), 2)}


def window(rig: Rig, stage: int, count: int) -> dict[str, Any]:
    before = rig.stored()
    receiver_cpu, store_cpu = cpu_seconds(rig.receiver_pid), cpu_seconds(rig.store_pid())
    elapsed = send(rig.smtp_port, count, f"w{stage}@mx.test")
    receiver_cpu = cpu_seconds(rig.receiver_pid) - receiver_cpu
    store_cpu = cpu_seconds(rig.store_pid()) - store_cpu
    stored = rig.stored() - before
    if stored != count:
        raise RuntimeError(f"{count} sent but {stored} stored")
    return {
        "stored_per_s": round(count / elapsed),
        "receiver_cpu_us": round(receiver_cpu / count * 1e6),
        "store_cpu_us": round(store_cpu / count * 1e6),
    }


def readers(rig: Rig, stage: int, reads: int) -> dict[str, Any]:
    fifty, full = f"fifty{stage}@mx.test", f"full{stage}@mx.test"
    send(rig.smtp_port, 50, fifty, distinct=False)
    send(rig.smtp_port, FULL, full, distinct=False)
    with httpx.Client(base_url=rig.api_url, timeout=30) as client:
        listing = client.get(f"/v1/mailboxes/{fifty}/messages", headers=AUTH).json()
        ids = [m["id"] for m in listing["messages"]]
        if len(ids) != 50:
            raise RuntimeError(f"{fifty} lists {len(ids)} messages, not 50")
        mailbox = "/v1/mailboxes/{}/messages"
        return {
            "list_empty": latencies(client, [mailbox.format(f"nobody{stage}@mx.test")] * reads),
            "list_50": latencies(client, [mailbox.format(fifty)] * reads),
            "list_full": latencies(client, [mailbox.format(full)] * reads),
            "read": latencies(client, [f"/v1/messages/{ids[n % 50]}/raw" for n in range(reads)]),
        }


async def _final_dot_to_250(port: int, serial: int) -> float:
    """One message on a connection of its own; seconds from its final dot to the 250."""
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
        for command in (b"EHLO other.test", b"MAIL FROM:<other@client.test>"):
            writer.write(command + b"\r\n")
            await reply()
        writer.write(f"RCPT TO:<other{serial}@mx.test>\r\nDATA\r\n".encode())
        await reply()
        await reply()
        started = time.perf_counter()
        writer.write(f"Subject: {serial}\r\n\r\nhello\r\n.\r\n".encode())
        if await reply() != 250:
            raise RuntimeError("message refused")
        took = time.perf_counter() - started
        writer.write(b"QUIT\r\n")
        await reply()
        return took
    finally:
        writer.close()


def sender_latency(port: int, count: int, offset: int) -> dict[str, float]:
    """Final dot to 250, p50/p99, for `count` messages sent one after another."""

    async def send_all() -> list[float]:
        return [await _final_dot_to_250(port, offset + n) for n in range(count)]

    took = [t * 1000 for t in asyncio.run(send_all())]
    return {"p50_ms": round(median(took), 2), "p99_ms": round(percentile(took, 0.99), 2)}


def readers_and_the_mx(rig: Rig, stage: int, count: int) -> dict[str, Any]:
    """Another sender's final dot to 250 alone, then while 8 readers list a mailbox of 50
    as fast as the API answers them (the issue's incident: 5 ms became 824 ms)."""
    alone = sender_latency(rig.smtp_port, count, 0)
    stop = threading.Event()
    listed = [0]

    def read() -> None:
        with httpx.Client(base_url=rig.api_url, timeout=30) as client:
            while not stop.is_set():
                client.get(f"/v1/mailboxes/fifty{stage}@mx.test/messages", headers=AUTH)
                listed[0] += 1

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1)
        started, before = time.perf_counter(), listed[0]
        loaded = sender_latency(rig.smtp_port, count, count)
        rate = (listed[0] - before) / (time.perf_counter() - started)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return {"alone": alone, "with_readers": loaded, "listings_per_s": round(rate)}


def message(rcpt: str) -> MessageDocument:
    body = (b"x" * 78 + b"\r\n") * (SIZE // 80)
    return MessageDocument(
        id=new_message_id(),
        raw=b"Subject: sweep\r\n\r\n" + body,
        mail_from="bench@client.test",
        rcpt=(rcpt,),
        peer_ip="127.0.0.1",
        helo="client.test",
        received_at=utcnow(),
        fp=new_message_id(),
    )


async def store_listings(
    store: MessageStore, stage: int, reads: int, store_pid: int
) -> dict[str, Any]:
    """The store's part of a listing (in process, no API): p50/p99 per mailbox, and the
    store's CPU per listing (what a loaded machine distorts least)."""
    found = {}
    for name, mailbox in (("empty", "nobody"), ("50", "fifty"), ("full", "full")):
        took = []
        cpu = cpu_seconds(store_pid)
        for _ in range(reads):
            started = time.perf_counter()
            await store.list_mailbox(f"{mailbox}{stage}@mx.test")
            took.append((time.perf_counter() - started) * 1000)
        found[f"store_list_{name}"] = {
            "p50_ms": round(median(took), 2),
            "p99_ms": round(percentile(took, 0.99), 2),
            "store_cpu_ms": round((cpu_seconds(store_pid) - cpu) / reads * 1000, 2),
        }
    return found


async def upkeep(uri: str, stage: int, expiring: int, reads: int, store_pid: int) -> dict[str, Any]:
    """The store's part of the listings, then a trim and a retention sweep timed in
    process, per message removed."""
    store = await MessageStore.open(StoreConfig(uri=uri, timeout=60))
    brief = await MessageStore.open(StoreConfig(uri=uri, timeout=60, retention=1))
    try:
        listings = await store_listings(store, stage, reads, store_pid)
        started = time.perf_counter()
        trimmed = await store.trim_mailbox(f"full{stage}@mx.test", TRIM_KEEP)
        trim_s = time.perf_counter() - started
        await asyncio.gather(
            *(brief.insert(message(f"x{stage}.{n}@mx.test")) for n in range(expiring))
        )
        await asyncio.sleep(2.1)  # every one of them expired
        started = time.perf_counter()
        swept = await sweep(store)
        sweep_s = time.perf_counter() - started
        if swept < expiring:
            raise RuntimeError(f"{expiring} expired but {swept} swept")
        return {
            **listings,
            "trimmed": trimmed,
            "trim_us_per_message": round(trim_s / max(1, trimmed) * 1e6),
            "swept": swept,
            "sweep_us_per_message": round(sweep_s / max(1, swept) * 1e6),
        }
    finally:
        await brief.close()
        await store.close()


async def sweep(store: MessageStore) -> int:
    """The sweep's deletes, as `sweep_expired` runs them (without its lease and compaction,
    timed apart)."""
    from mailstore import queries

    now = int(time.time())
    await store._run(queries.expired_entries(now))
    return await store._run(queries.expired_messages(now))


def disk(rig: Rig) -> dict[str, Any]:
    """Bytes on disk per stored message: SQLite's live pages, and by table (the messages,
    their indexes, the mailbox entries, nx-27017's change-stream copies)."""
    path = rig.store.database_path
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        tables = dict(db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
    stored = max(1, rig.stored())
    indexes = sum(v for k, v in tables.items() if k.startswith("idx_messages_"))
    return {
        "live_bytes_per_message": round((pages - free) * size / stored),
        "bytes_per_message": {
            "messages": round(tables.get("messages", 0) / stored),
            "indexes": round(indexes / stored),
            "entries": round(tables.get("mailbox_entries", 0) / stored),
            "change_stream": round(tables.get("_neosqlite_changestream", 0) / stored),
        },
        "file_mb": file_mb(path),
    }


def file_mb(path: Path) -> float:
    """The database file and its write-ahead log, MB."""
    wal = Path(f"{path}-wal")
    return round((path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)) / 2**20, 1)


def wal_mb(path: Path) -> float:
    wal = Path(f"{path}-wal")
    return round((wal.stat().st_size if wal.exists() else 0) / 2**20, 1)


async def retention_frees_space(store_server: EmbeddedStore, count: int) -> dict[str, Any]:
    """Write `count` messages that expire at once, sweep them, and hand the space back.

    The sweep's deletes are copied into nx-27017's change-stream table while the API
    follows the stream, which works through them at most 101 per poll (its polls are 0.1 s
    apart when nothing it wants arrives) and then drops them; only then are their pages
    free too. The compaction runs one sweep interval (30 s) later, as the next sweep's
    would."""
    uri, path = store_server.uri, store_server.database_path
    store = await MessageStore.open(StoreConfig(uri=uri, timeout=120))
    brief = await MessageStore.open(StoreConfig(uri=uri, timeout=120, retention=1))
    try:
        before = file_mb(path)
        for start in range(0, count, 2000):
            batch = [message(f"r{n}@mx.test") for n in range(start, min(count, start + 2000))]
            await asyncio.gather(*(brief.insert(m) for m in batch))
        written = file_mb(path)
        await asyncio.sleep(2.1)
        swept = await sweep(store)
        after_sweep = file_mb(path)
        await asyncio.sleep(30)  # the API's change stream works through the copies
        freed = await store.compact()
        return {
            "messages": count,
            "swept": swept,
            "file_mb_before": before,
            "file_mb_written": written,
            "file_mb_swept": after_sweep,
            "file_mb_compacted": file_mb(path),
            "wal_mb_compacted": wal_mb(path),
            "compact_freed_mb": round(freed / 2**20, 1),
        }
    finally:
        await brief.close()
        await store.close()


def run(quick: bool = False) -> dict[str, Any]:
    if not Path(SMTP_SOURCE).exists():
        return {"skipped": "Postfix's smtp-source is missing (FLOODGATE_INSTALL_TOOLS=1)"}
    sizes = QUICK_SIZES if quick else SIZES
    deadline = time.monotonic() + budget()
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        server = EmbeddedStore(workdir / "store")
        uri = server.start()
        services = []
        check: MongoClient[dict[str, Any]] = MongoClient(uri)
        stages: list[dict[str, Any]] = []
        try:
            receiver = start_service("receiver", {"FLOODGATE_MONGODB_URI": uri, **ENV}, workdir)
            services.append(receiver)
            api = start_service("api", {"FLOODGATE_MONGODB_URI": uri}, workdir)
            services.append(api)
            rig = Rig(server, receiver.pid, receiver.port, api.http_url, check, workdir)
            send(rig.smtp_port, 200, "warm@mx.test")  # indexes, caches, connections
            chunk = 0
            for stage, target in enumerate(sizes):
                fill_started, filled = time.perf_counter(), 0
                while rig.stored() < target and time.monotonic() < deadline:
                    count = min(FILL_CHUNK, target - rig.stored())
                    send(rig.smtp_port, count, f"f{chunk}@mx.test")
                    chunk += 1
                    filled += count
                reached = rig.stored()
                print(f"bench scale: {reached:,} messages stored", flush=True)
                row: dict[str, Any] = {"target": target, "stored": reached}
                if filled:
                    row["fill_per_s"] = round(filled / (time.perf_counter() - fill_started))
                row.update(window(rig, stage, QUICK_WINDOW if quick else WINDOW))
                row.update(readers(rig, stage, QUICK_READS if quick else READS))
                reads = QUICK_READS if quick else READS
                expiring = QUICK_SWEEP if quick else SWEEP
                row.update(asyncio.run(upkeep(uri, stage, expiring, reads, rig.store_pid())))
                row.update(disk(rig))
                stages.append(row)
                if reached < target:
                    break  # out of time: the size reached is the last one measured
            last = len(stages) - 1
            mx = readers_and_the_mx(rig, last, 50 if quick else 200)
            # Enough to pass the compaction's threshold (8 MB free) in either mode.
            space = asyncio.run(retention_frees_space(server, 10_000 if quick else 20_000))
        finally:
            check.close()
            for service in services:
                service.stop()
            server.stop()
    return {
        "stages": stages,
        "readers_and_the_mx": mx,
        "retention_space": space,
        "goals": goals(stages),
    }


def goals(stages: list[dict[str, Any]]) -> dict[str, Any]:
    first, last = stages[0], stages[-1]
    rate = last["stored_per_s"] / max(1, first["stored_per_s"])
    cpu = last["store_cpu_us"] / max(1, first["store_cpu_us"])
    store_side = [k for k in ("store_list_empty", "store_list_50", "store_list_full") if k in last]
    return {
        "at": last["stored"],
        "store_listing_p50_ms": max((last[k]["p50_ms"] for k in store_side), default=None),
        "listing_p50_ms": max(last[k]["p50_ms"] for k in ("list_empty", "list_50", "list_full")),
        "listing_met": all(
            last[k]["p50_ms"] <= LISTING_P50_GOAL_MS for k in ("list_empty", "list_50", "list_full")
        ),
        "rate_ratio": round(rate, 2),
        "rate_met": rate >= RATE_GOAL,
        "store_cpu_ratio": round(cpu, 2),
        "store_cpu_met": cpu <= CPU_GOAL,
        "trim_ratio": round(last["trim_us_per_message"] / max(1, first["trim_us_per_message"]), 2),
        "sweep_ratio": round(
            last["sweep_us_per_message"] / max(1, first["sweep_us_per_message"]), 2
        ),
    }


def markdown(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"### Scale\n\nSkipped: {result['skipped']}\n"
    lines = [
        "### The store at scale (embedded store, filled through the receiver)",
        "",
        "Listings through the API (HTTP, FastAPI and the summaries included); the store's "
        "own part, in process, in the second table.",
        "",
        "| stored | msg/s | receiver CPU µs/msg | store CPU µs/msg | list empty p50/p99 ms "
        "| list 50 p50/p99 ms | list full p50/p99 ms | read p50/p99 ms | trim µs/msg "
        "| sweep µs/msg | bytes/msg (live) | file MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["stages"]:

        def pair(key: str, r: dict[str, Any] = r) -> str:
            return f"{r[key]['p50_ms']} / {r[key]['p99_ms']}"

        lines.append(
            f"| {r['stored']:,} | {r['stored_per_s']:,} | {r['receiver_cpu_us']:,} | "
            f"{r['store_cpu_us']:,} | {pair('list_empty')} | {pair('list_50')} | "
            f"{pair('list_full')} | {pair('read')} | {r['trim_us_per_message']:,} | "
            f"{r['sweep_us_per_message']:,} | {r['live_bytes_per_message']:,} | {r['file_mb']} |"
        )
    if "store_list_empty" in result["stages"][0]:
        lines += [
            "",
            "| stored | store: list empty p50/p99 ms (store CPU ms) | list 50 | list full |",
            "| ---: | ---: | ---: | ---: |",
        ]
        for r in result["stages"]:
            cells = [
                f"{r[k]['p50_ms']} / {r[k]['p99_ms']} ({r[k].get('store_cpu_ms', '?')})"
                for k in ("store_list_empty", "store_list_50", "store_list_full")
            ]
            lines.append(f"| {r['stored']:,} | " + " | ".join(cells) + " |")
    s, g = result["retention_space"], result["goals"]
    last = result["stages"][-1]["bytes_per_message"]
    mx = result["readers_and_the_mx"]
    lines += [
        "",
        f"Another sender's final dot to 250 at {result['stages'][-1]['stored']:,} messages, "
        f"one message at a time: alone p50/p99 {mx['alone']['p50_ms']} / "
        f"{mx['alone']['p99_ms']} ms; while 8 readers list a mailbox of 50 "
        f"({mx['listings_per_s']}/s): {mx['with_readers']['p50_ms']} / "
        f"{mx['with_readers']['p99_ms']} ms.",
    ]
    lines += [
        "",
        "Bytes per stored message at the last size, by table: "
        + ", ".join(f"{k} {v:,}" for k, v in last.items())
        + ".",
        "",
        f"Retention frees space: {s['messages']:,} messages written and expired: file "
        f"{s['file_mb_before']} → {s['file_mb_written']} MB; swept ({s['swept']:,}): "
        f"{s['file_mb_swept']} MB; compacted: {s['file_mb_compacted']} MB (of which "
        f"{s.get('wal_mb_compacted', '?')} MB write-ahead log).",
        "",
        f"Goals at {g['at']:,} messages against the empty store: listing p50 <= "
        f"{LISTING_P50_GOAL_MS:g} ms: worst {g['listing_p50_ms']} ms through the API "
        f"({'met' if g['listing_met'] else 'NOT met'}; the store's part "
        f"{g.get('store_listing_p50_ms')} ms); stored msg/s >= {RATE_GOAL}x: "
        f"{g['rate_ratio']}x ({'met' if g['rate_met'] else 'NOT met'}); store CPU/msg <= "
        f"{CPU_GOAL}x: {g['store_cpu_ratio']}x ({'met' if g['store_cpu_met'] else 'NOT met'}); "
        f"trim and sweep per message removed: {g['trim_ratio']}x and {g['sweep_ratio']}x.",
    ]
    return "\n".join(lines) + "\n"
