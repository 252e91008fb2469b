"""Blocklist benchmark: lookup cost by list size, snapshot load time, propagation latency.

* lookups at 10k / 100k / 1M entries, a realistic mix of exact addresses and CIDRs over
  IPv4 and IPv6, probed with 100,000 distinct addresses half of which are covered: the index
  alone (string parse + one dict probe per populated prefix length), the receiver's check
  (index + memo of blocked verdicts) on those distinct addresses, and the same check when
  1,000 clients keep coming back (the memo's case: banned clients retrying);
* the snapshot of 1M entries: written, then loaded (median of several);
* propagation: 100 adds through a real API process, each timed until a real receiver
  process refuses a connection from that address with 554 (p50/p99).

Targets (issue 4): <= 2 us per lookup at 1M, snapshot of 1M loaded in <= 3 s,
propagation p99 <= 1 s.
"""

from __future__ import annotations

import functools
import gc
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import TOKEN, embedded_store, percentile, start_service, wait_http
from blocklist import BlocklistCache, Net, PrefixIndex
from blocklist import snapshot as snapshots

# (version, prefix length, share of entries): exact addresses and long prefixes grow with
# the list...
MIX: list[tuple[int, int, float]] = [
    (4, 32, 0.45),
    (4, 28, 0.05),
    (4, 24, 0.18),
    (6, 128, 0.14),
    (6, 64, 0.12),
    (6, 56, 0.03),
    (6, 48, 0.03),
]
# ... while short prefixes (whole providers) come in fixed numbers: 2% of a million-entry
# list as /12s would be 20,000 /12s, every IPv4 address there is four times over.
FIXED: list[tuple[int, int, int]] = [(4, 12, 50), (4, 16, 500), (4, 20, 2000), (6, 32, 200)]
SIZES = (10_000, 100_000, 1_000_000)


def build(size: int, rng: random.Random) -> tuple[PrefixIndex, list[Net]]:
    index = PrefixIndex()
    nets: list[Net] = []
    layout = [(v, length, int(size * share)) for v, length, share in MIX] + FIXED
    for version, length, count in layout:
        bits = 32 if version == 4 else 128
        shift = bits - length
        for _ in range(count):
            value = rng.getrandbits(length) << shift
            net = Net(version, length, value)
            index.add(net)
            nets.append(net)
    return index, nets


def probes(nets: list[Net], count: int, rng: random.Random) -> list[str]:
    """Half inside a random entry, half random addresses (almost always outside)."""
    out: list[str] = []
    for i in range(count):
        if i % 2 == 0:
            net = rng.choice(nets)
            host = rng.getrandbits(net.bits - net.prefixlen) if net.prefixlen < net.bits else 0
            version, value = net.version, net.value | host
        else:
            version = 4 if rng.random() < 0.7 else 6
            value = rng.getrandbits(32 if version == 4 else 128)
        if version == 4:
            out.append(socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big")))
        else:
            out.append(socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big")))
    return out


def time_per_call(fn: Any, items: list[str], repeats: int) -> float:
    """Median seconds per call over `repeats` passes over `items` (GC off, as timeit does)."""
    runs = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            started = time.perf_counter()
            for item in items:
                fn(item)
            runs.append((time.perf_counter() - started) / len(items))
    finally:
        gc.enable()
    return statistics.median(runs)


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def covers(index: PrefixIndex, now: float) -> Any:
    return functools.partial(index.expiry, now=now)  # C-level binding: no extra frame


def lookups(quick: bool) -> list[dict[str, Any]]:
    rng = random.Random(4)
    results = []
    for size in SIZES[:2] if quick else SIZES:
        gc.collect()
        before = rss_kb()
        started = time.perf_counter()
        index, nets = build(size, rng)
        built = time.perf_counter() - started
        memory = rss_kb() - before
        items = probes(nets, 20_000 if quick else 100_000, rng)
        now = time.time()
        covered = sum(index.covers(ip, now) for ip in items) / len(items)
        cache = BlocklistCache()
        cache.replace(index)
        repeats = 3 if quick else 5
        results.append(
            {
                "entries": len(index),
                "prefix_lengths": len(list(index.tables())),
                "covered_share": round(covered, 3),
                "index_us": round(time_per_call(covers(index, now), items, repeats) * 1e6, 3),
                "check_distinct_us": round(time_per_call(cache.check, items, repeats) * 1e6, 3),
                "check_repeat_us": round(
                    time_per_call(cache.check, items[:1000] * (len(items) // 1000), repeats) * 1e6,
                    3,
                ),
                "build_s": round(built, 2),
                "rss_mb": round(memory / 1024, 1),
            }
        )
        del index, nets, cache
    return results


def snapshot_load(quick: bool) -> dict[str, Any]:
    size = 100_000 if quick else 1_000_000
    index, _ = build(size, random.Random(7))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "blocklist.snapshot"
        started = time.perf_counter()
        written = snapshots.write(path, index, synced_at=time.time())
        write_s = time.perf_counter() - started
        loads = []
        for _ in range(3):
            gc.collect()
            started = time.perf_counter()
            loaded, _info = snapshots.read(path)
            loads.append(time.perf_counter() - started)
            assert len(loaded) == len(index)
            del loaded
    return {
        "entries": len(index),
        "bytes": written,
        "write_s": round(write_s, 3),
        "load_s": round(statistics.median(loads), 3),
    }


# -- propagation through real processes --------------------------------------------------


def greeting_code(port: int, source: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as s:
        data = s.recv(512)
    return int(data[:3]) if data[:3].isdigit() else 0


def propagation(quick: bool) -> dict[str, Any]:
    adds = 20 if quick else 100
    with tempfile.TemporaryDirectory() as directory, embedded_store(Path(directory)) as uri:
        workdir = Path(directory)
        env = {"FLOODGATE_MONGODB_URI": uri}
        receiver = start_service(
            "receiver",
            {**env, "FLOODGATE_AUTOBAN_THRESHOLD": "0", "FLOODGATE_CONNECTION_RATE": "0"},
            workdir,
        )
        api = start_service("api", env, workdir)
        try:
            wait_http(receiver.http_url + "/readyz")
            client = httpx.Client(
                base_url=api.http_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            )
            latencies = []
            for n in range(adds):
                ip = f"127.0.{60 + n // 250}.{n % 250 + 1}"
                started = time.perf_counter()
                response = client.post("/v1/blocklist", json={"cidr": ip, "reason": "bench"})
                response.raise_for_status()
                while greeting_code(receiver.port, ip) != 554:
                    if time.perf_counter() - started > 10:
                        raise RuntimeError(f"ban of {ip} did not arrive within 10 s")
                    time.sleep(0.002)
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)
            return {
                "adds": adds,
                "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
                "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
                "max_ms": round(max(latencies) * 1000, 1),
            }
        finally:
            receiver.stop()
            api.stop()


def run(quick: bool = False) -> dict[str, Any]:
    lookup = lookups(quick)
    snap = snapshot_load(quick)
    prop = propagation(quick)
    largest = lookup[-1]
    return {
        "lookups": lookup,
        "snapshot": snap,
        "propagation": prop,
        "targets": {
            "lookup_us_at_largest": {
                "value": largest["index_us"],
                "target": 2.0,
                "met": largest["index_us"] <= 2.0,
            },
            "snapshot_load_s": {
                "value": snap["load_s"],
                "target": 3.0,
                "met": snap["load_s"] <= 3.0,
            },
            "propagation_p99_ms": {
                "value": prop["p99_ms"],
                "target": 1000.0,
                "met": prop["p99_ms"] <= 1000.0,
            },
        },
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "### Blocklist",
        "",
        "| entries | prefix lengths | index lookup (us) | receiver check, distinct (us) "
        "| receiver check, 1,000 repeat visitors (us) | build (s) | RSS (MB) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in result["lookups"]:
        lines.append(
            f"| {row['entries']:,} | {row['prefix_lengths']} | {row['index_us']} | "
            f"{row['check_distinct_us']} | {row['check_repeat_us']} | {row['build_s']} | "
            f"{row['rss_mb']} |"
        )
    snap, prop = result["snapshot"], result["propagation"]
    lines += [
        "",
        f"Snapshot of {snap['entries']:,} entries ({snap['bytes'] / 1e6:.1f} MB): "
        f"written in {snap['write_s']} s, loaded in {snap['load_s']} s (median of 3).",
        "",
        f"Propagation API -> receiver refusing with 554 over {prop['adds']} adds: "
        f"p50 {prop['p50_ms']} ms, p99 {prop['p99_ms']} ms, max {prop['max_ms']} ms.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import json

    outcome = run(quick="--quick" in sys.argv)
    print(json.dumps(outcome, indent=2))
    print(markdown(outcome))
