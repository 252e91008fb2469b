"""Screening before the banner: what DNS lists cost a client waiting for its banner, and
the receiver's CPU.

- **Banner latency** (connect to the `220` line), p50/p99, with screening off, on with a
  cold cache (every connection from an address not seen before: three list lookups each,
  one per list, concurrently), and on with a warm cache (the same addresses again: their
  passes are cached).
- **Lookups per second** one receiver sustains: cold connections from many clients at
  once, the lookup caps raised out of the way; how many answered, how many timed out.
- **CPU per screened connection**: receiver CPU time (from /proc) per cold screened
  connection, beside the same per unscreened connection.

The lists are served by a minimal DNS responder on loopback in its own process (it copies
the question and answers NXDOMAIN, or 127.0.0.2 for one address in twenty), so the
receiver's side is measured, not a DNS server's. Nothing leaves loopback.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, embedded_store, median, metric, percentile, start_service
from bench.throughput import RECEIVER_ENV

LISTS = ("a.bench.test", "b.bench.test", "c.bench.test")
SCREEN_ENV = {
    "FLOODGATE_DNSBL_SITES": ", ".join(LISTS),
    "FLOODGATE_DNSBL_ACTION": "ignore",  # every client is greeted: latency is comparable
    "FLOODGATE_DNS_MAX_IN_FLIGHT": "100000",
    "FLOODGATE_DNS_RATE": "1000000",
}


class _Responder(asyncio.DatagramProtocol):
    """NXDOMAIN for every question, 127.0.0.2 for addresses whose last octet is 0 mod 20."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 17:
            return
        end = data.index(b"\x00", 12) + 5  # the question: name, type, class
        first = data[13 : 13 + data[12]]
        listed = first.isdigit() and int(first) % 20 == 0
        if listed:
            header = data[:2] + b"\x85\x80\x00\x01\x00\x01\x00\x00\x00\x00"
            record = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([127, 0, 0, 2])
            self.transport.sendto(header + data[12:end] + record, addr)
        else:
            header = data[:2] + b"\x85\x83\x00\x01\x00\x00\x00\x00\x00\x00"
            self.transport.sendto(header + data[12:end], addr)


def _serve(ports: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(_Responder, local_addr=("127.0.0.1", 0))
        ports.put(transport.get_extra_info("sockname")[1])
        await asyncio.Event().wait()

    asyncio.run(main())


async def _banner(port: int, source: str) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        line = await reader.readline()
        elapsed = time.perf_counter() - started
        if not line.startswith(b"220 "):
            raise ConnectionError(f"banner {line!r}")
        writer.write(b"QUIT\r\n")
        await reader.readline()
        return elapsed
    finally:
        writer.close()


async def _banners(port: int, sources: list[str], concurrency: int) -> tuple[list[float], float]:
    """Banner latencies of one connection per source, `concurrency` at a time."""
    queue = iter(sources)
    seconds: list[float] = []

    async def worker() -> None:
        for source in queue:
            seconds.append(await _banner(port, source))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return seconds, time.perf_counter() - started


def _sources(count: int, offset: int) -> list[str]:
    """Distinct client addresses in 127.64.0.0/10 (never .0 or .255)."""
    out: list[str] = []
    n = offset
    while len(out) < count:
        a, b, c = 64 + (n >> 16) % 64, (n >> 8) & 0xFF, n & 0xFF
        if 0 < c < 255:
            out.append(f"127.{a}.{b}.{c}")
        n += 1
    return out


def _measure(receiver: Any, count: int, concurrency: int, offset: int) -> dict[str, Any]:
    cold = _sources(count, offset)
    before = cpu_seconds(receiver.pid)
    cold_s, cold_elapsed = asyncio.run(_banners(receiver.port, cold, concurrency))
    cpu = cpu_seconds(receiver.pid) - before
    warm_s, _ = asyncio.run(_banners(receiver.port, cold, concurrency))
    return {
        "cold": cold_s,
        "warm": warm_s,
        "cpu_us": cpu / count * 1e6,
        "per_s": count / cold_elapsed,
    }


def run(quick: bool = False) -> dict[str, Any]:
    count = 200 if quick else 2000
    burst = 400 if quick else 4000
    ports: Any = multiprocessing.Queue()
    responder = multiprocessing.Process(target=_serve, args=(ports,), daemon=True)
    responder.start()
    try:
        dns_port = ports.get(timeout=10)
        with tempfile.TemporaryDirectory() as directory, embedded_store(Path(directory)) as uri:
            env = {"FLOODGATE_MONGODB_URI": uri, **RECEIVER_ENV}
            plain = start_service("receiver", env, Path(directory))
            try:
                asyncio.run(_banners(plain.port, _sources(200, 900_000), 10))  # warm up
                off = _measure(plain, count, 10, 0)
            finally:
                plain.stop()
            # Sources are packed into a few /24s; the per-network budget would refuse most of
            # them (that budget has its own tests). Here the cost of screening is measured.
            screen_env = {
                **env,
                **SCREEN_ENV,
                "FLOODGATE_DNS_SERVERS": f"127.0.0.1:{dns_port}",
                "FLOODGATE_DNS_NETWORK_RATE": "0",
            }
            screened = start_service("receiver", screen_env, Path(directory))
            try:
                asyncio.run(_banners(screened.port, _sources(200, 900_000), 10))
                on = _measure(screened, count, 10, 0)
                url = screened.http_url
                asked = metric(url, "floodgate_screen_lookups_total")
                started = time.perf_counter()
                asyncio.run(_banners(screened.port, _sources(burst, 300_000), 100))
                elapsed = time.perf_counter() - started
                lookups = metric(url, "floodgate_screen_lookups_total") - asked
                # Over the whole run, every lookup of every measure above.
                timeouts = metric(url, "floodgate_screen_lookups_total", outcome="timeout")
                throttled = metric(url, "floodgate_screen_lookups_total", outcome="throttled")
            finally:
                screened.stop()
    finally:
        responder.terminate()
        responder.join(10)

    def ms(values: list[float], share: float) -> float:
        return round(percentile(values, share) * 1000, 2)

    return {
        "connections_per_run": count,
        "lists": len(LISTS),
        "banner_ms": {
            "off": {"p50": ms(off["cold"], 0.5), "p99": ms(off["cold"], 0.99)},
            "cold": {"p50": ms(on["cold"], 0.5), "p99": ms(on["cold"], 0.99)},
            "warm": {"p50": ms(on["warm"], 0.5), "p99": ms(on["warm"], 0.99)},
        },
        "cpu_us": {"off": round(off["cpu_us"]), "screened": round(on["cpu_us"])},
        "lookups": {
            "connections": burst,
            "concurrency": 100,
            "per_s": round(lookups / elapsed),
            "connections_per_s": round(burst / elapsed),
            "timeouts": int(timeouts),
            "throttled": int(throttled),
            "median_banner_ms": round(median(on["cold"]) * 1000, 2),
        },
    }


def markdown(result: dict[str, Any]) -> str:
    b, cpu, lk = result["banner_ms"], result["cpu_us"], result["lookups"]
    return (
        "\n".join(
            [
                "### Screening before the banner",
                "",
                f"{result['lists']} DNS lists, answered by a minimal responder on loopback "
                f"(one address in twenty listed, action `ignore`); "
                f"{result['connections_per_run']} connections, 10 at a time, connect to `220`.",
                "",
                "| screening | banner p50 | banner p99 |",
                "| --- | ---: | ---: |",
                f"| off | {b['off']['p50']} ms | {b['off']['p99']} ms |",
                f"| on, cold cache | {b['cold']['p50']} ms | {b['cold']['p99']} ms |",
                f"| on, warm cache | {b['warm']['p50']} ms | {b['warm']['p99']} ms |",
                "",
                f"- Receiver CPU per connection: {cpu['off']} µs unscreened, "
                f"{cpu['screened']} µs screened (cold: {result['lists']} lookups).",
                f"- Lookups one receiver sustains: **{lk['per_s']:,}/s** "
                f"({lk['connections_per_s']:,} cold connections/s, {lk['connections']} "
                f"connections {lk['concurrency']} at a time); lookups timed out in the whole run: "
                f"{lk['timeouts']}, throttled: {lk['throttled']}.",
            ]
        )
        + "\n"
    )
