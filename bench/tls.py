"""STARTTLS: what a handshake costs the receiver, what legit senders see during a handshake
flood, and stored throughput over STARTTLS beside cleartext from the same run.

- **Handshakes per receiver CPU-second**: clients do connect, EHLO, STARTTLS, a full
  handshake (no session resumption), QUIT; the receiver's CPU time (from /proc) over the
  run divided into the handshakes completed.
- **Legit latency over STARTTLS** (connect to the final 250, one connection per message),
  p50/p99, alone and while `floodgate flood --tls-handshakes` runs from four other
  addresses. The receiver's handshake rate limit is off here, so the flood is held back by
  the concurrency cap alone: the worst case.
- **Stored throughput over STARTTLS**, one connection per message, 20 clients, 1 KB, with
  the same client in cleartext in the same run: the ratio is the headline (absolute rates
  drift on this machine). Every run checks the store holds every message.

The client is Python (asyncio + OpenSSL) in the benchmark process: smtp-source has no TLS.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench.common import cpu_seconds, embedded_store, median, percentile, start_service
from bench.throughput import RECEIVER_ENV
from flood.smtp import CLIENT_TLS

TLS_ENV = {
    **RECEIVER_ENV,
    "FLOODGATE_TLS_HANDSHAKE_RATE": "0",
    "FLOODGATE_TLS_MAX_HANDSHAKES_PER_IP": "10000",
    "FLOODGATE_TLS_MAX_HANDSHAKES": "256",
}
HEAD = b"From: <bench@client.test>\r\nTo: <inbox@mx.test>\r\nSubject: tls bench %d\r\n\r\n"
TEXT = (b"x" * 70 + b"\r\n") * 12
# Identical bytes from one sender to one recipient are one message (a retry): number them.
SERIAL = itertools.count()


def message(serial: int) -> bytes:
    """The bench's message, number `serial`, without the final dot."""
    return HEAD % serial + TEXT


async def _reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if len(line) < 4:
            raise ConnectionError(f"bad reply {line!r}")
        if line[3:4] != b"-":
            return int(line[:3])


async def _command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> int:
    writer.write(line + b"\r\n")
    return await _reply(reader)


async def session(
    port: int, *, tls: bool, send: bool, source: str = "127.0.0.1", serial: int | None = None
) -> float:
    """One connection: [STARTTLS,] [one message, number `serial` or the next,] QUIT.
    Seconds to the final 250."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        assert await _reply(reader) == 220
        assert await _command(reader, writer, b"EHLO client.test") == 250
        if tls:
            assert await _command(reader, writer, b"STARTTLS") == 220
            await writer.start_tls(CLIENT_TLS)  # the flood tool's: no certificate check
            assert await _command(reader, writer, b"EHLO client.test") == 250
        if send:
            for line in (b"MAIL FROM:<bench@client.test>", b"RCPT TO:<inbox@mx.test>"):
                assert await _command(reader, writer, line) == 250
            assert await _command(reader, writer, b"DATA") == 354
            writer.write(message(next(SERIAL) if serial is None else serial) + b".\r\n")
            code = await _reply(reader)
            if code != 250:
                raise ConnectionError(f"message answered {code}")
        elapsed = time.perf_counter() - started
        writer.write(b"QUIT\r\n")
        return elapsed
    finally:
        writer.close()


async def _many(port: int, count: int, concurrency: int, *, tls: bool, send: bool) -> float:
    """Seconds for `count` sessions, `concurrency` at a time."""
    queue = iter(range(count))

    async def worker() -> None:
        for _ in queue:
            await session(port, tls=tls, send=send)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def _legit(port: int, count: int, rate: float) -> list[float]:
    """`count` messages over STARTTLS at `rate`/s from ten addresses; their latencies."""
    tasks = []
    for n in range(count):
        source = f"127.0.41.{1 + n % 10}"
        tasks.append(asyncio.create_task(session(port, tls=True, send=True, source=source)))
        await asyncio.sleep(1.0 / rate)
    return list(await asyncio.gather(*tasks))


def run(quick: bool = False) -> dict[str, Any]:
    runs = 3 if quick else 5
    handshakes = 300 if quick else 1000
    messages = 300 if quick else 1000
    legit_count = 100 if quick else 200
    with tempfile.TemporaryDirectory() as directory, embedded_store(Path(directory)) as uri:
        receiver = start_service(
            "receiver", {"FLOODGATE_MONGODB_URI": uri, **TLS_ENV}, Path(directory)
        )
        check: MongoClient[dict[str, Any]] = MongoClient(uri)
        stored = check["floodgate"]["messages"]
        try:
            port = receiver.port
            asyncio.run(_many(port, 100, 10, tls=True, send=True))  # warm up
            per_cpu_second = []
            for _ in range(runs):
                before = cpu_seconds(receiver.pid)
                asyncio.run(_many(port, handshakes, 8, tls=True, send=False))
                per_cpu_second.append(handshakes / (cpu_seconds(receiver.pid) - before))

            rates: dict[str, list[float]] = {"clear": [], "tls": []}
            cpu_us: dict[str, list[float]] = {"clear": [], "tls": []}
            for _ in range(runs):
                for mode in ("clear", "tls"):
                    stored.delete_many({})
                    before = cpu_seconds(receiver.pid)
                    elapsed = asyncio.run(_many(port, messages, 20, tls=mode == "tls", send=True))
                    cpu = cpu_seconds(receiver.pid) - before
                    count = stored.count_documents({})
                    if count != messages:
                        raise RuntimeError(f"{messages} sent over {mode} but {count} stored")
                    rates[mode].append(messages / elapsed)
                    cpu_us[mode].append(cpu / messages * 1e6)

            quiet = asyncio.run(_legit(port, legit_count, 10.0))
            flood = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "floodgate",
                    "flood",
                    "--quiet",
                    "--target",
                    f"127.0.0.1:{port}",
                    "--tls-handshakes",
                    "16",
                    "--tls-ips",
                    "4",
                    "--duration",
                    str(legit_count / 10.0 + 10),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                time.sleep(2.0)  # the flood is under way
                loud = asyncio.run(_legit(port, legit_count, 10.0))
            finally:
                flood.terminate()
                flood.wait(30)
        finally:
            check.close()
            receiver.stop()
    clear, tls = median(rates["clear"]), median(rates["tls"])
    return {
        "runs_per_figure": runs,
        "handshakes_per_cpu_second": round(median(per_cpu_second)),
        "handshakes_per_run": handshakes,
        "throughput": {
            "clear_per_s": round(clear),
            "tls_per_s": round(tls),
            "ratio": round(tls / clear, 3),
            "clear_cpu_us": round(median(cpu_us["clear"])),
            "tls_cpu_us": round(median(cpu_us["tls"])),
            "messages_per_run": messages,
        },
        "legit_ms": {
            "quiet_p50": round(percentile(quiet, 0.5) * 1000, 1),
            "quiet_p99": round(percentile(quiet, 0.99) * 1000, 1),
            "flood_p50": round(percentile(loud, 0.5) * 1000, 1),
            "flood_p99": round(percentile(loud, 0.99) * 1000, 1),
            "messages": legit_count,
        },
    }


def markdown(result: dict[str, Any]) -> str:
    t, legit = result["throughput"], result["legit_ms"]
    per_second = result["handshakes_per_cpu_second"]
    return (
        "\n".join(
            [
                "### STARTTLS",
                "",
                f"Median of {result['runs_per_figure']} runs. Client: Python asyncio + OpenSSL.",
                "",
                f"- Full handshakes per receiver CPU-second: **{per_second:,}**"
                f" ({result['handshakes_per_run']} per run, 8 clients, no session resumption).",
                f"- Stored messages, one connection per message, 20 clients, 1 KB: cleartext "
                f"{t['clear_per_s']:,}/s ({t['clear_cpu_us']} µs CPU/msg), STARTTLS "
                f"{t['tls_per_s']:,}/s ({t['tls_cpu_us']} µs CPU/msg): ratio **{t['ratio']}**.",
                f"- Legit senders over STARTTLS, 10 msg/s from 10 addresses, {legit['messages']} "
                f"messages, connect to final 250: p50 {legit['quiet_p50']} ms / p99 "
                f"{legit['quiet_p99']} ms alone; p50 {legit['flood_p50']} ms / p99 "
                f"{legit['flood_p99']} ms during a 16-worker handshake flood from 4 addresses.",
            ]
        )
        + "\n"
    )
