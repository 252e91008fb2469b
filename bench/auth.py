"""Authentication verdicts: what SPF, DKIM, DMARC and ARC cost per message.

- **Time to 250** (final dot sent to the `250` read), p50/p99, with the checks off, on with
  cold caches (every message from a sender domain not seen before: its SPF record, DKIM key
  and DMARC record are looked up), on with warm caches (the same messages again), and on
  with a resolver that never answers the message's lookups (the per-message deadline,
  `FLOODGATE_AUTH_TIMEOUT`, set to 0.5 s here, is what the sender waits at most).
- **Receiver CPU per message** (from /proc), and the verification workers' CPU beside it
  (the RSA work moved off the event loop, not away). Off and on run side by side, rounds
  alternating, and each figure is the median of its rounds: the machine is shared.

Every message is DKIM-signed (RSA 2048, relaxed/relaxed) by its own domain, published with
SPF and DMARC (p=reject) by a DNS responder on loopback in its own process; nothing leaves
loopback. 10 connections send at once, messages one after the other on each.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds, embedded_store, metric, percentile, start_service
from bench.throughput import RECEIVER_ENV

CONCURRENCY = 10
SOURCE = "127.0.0.2"
SELECTOR = "b1"
DEADLINE = 0.5
PACED_RATE = 200.0  # msg/s: below what either receiver takes here, so both see the same load


def _key() -> tuple[bytes, str]:
    from tests.support.dkimkeys import rsa_key

    key = rsa_key()
    return key.private_pem, key.record


def _serve(ports: Any, record: str) -> None:
    """SPF, DMARC and the key for every d<N>.bench.test; names under `silent.test` are
    never answered; the rest NXDOMAIN."""
    from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord

    chunks = [record[i : i + 255].encode() for i in range(0, len(record), 255)]

    class Responder(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

        def datagram_received(self, data: bytes, addr: Any) -> None:
            query = DNSRecord.parse(data)
            name = str(query.q.qname).rstrip(".").lower()
            if name.endswith("silent.test"):
                return
            reply = query.reply()
            text: list[bytes] | None = None
            if query.q.qtype == QTYPE.TXT and name.endswith(".bench.test"):
                if name.startswith("_dmarc."):
                    text = [b"v=DMARC1; p=reject"]
                elif name.startswith(f"{SELECTOR}._domainkey."):
                    text = chunks
                elif name.count(".") == 2:
                    text = [b"v=spf1 ip4:127.0.0.0/8 -all"]
            if text is None:
                reply.header.rcode = RCODE.NXDOMAIN
            else:
                reply.add_answer(RR(name, QTYPE.TXT, rdata=TXT(text), ttl=300))
            self.transport.sendto(reply.pack(), addr)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Responder, local_addr=("127.0.0.1", 0))
        ports.put(transport.get_extra_info("sockname")[1])
        await asyncio.Event().wait()

    asyncio.run(main())


def _messages(count: int, offset: int, zone: str, private: bytes) -> list[tuple[str, bytes]]:
    """(sender, signed message) for `count` distinct domains of `zone`."""
    import dkim

    out = []
    for n in range(offset, offset + count):
        domain = f"d{n}.{zone}"
        raw = (
            f"From: Shop <noreply@{domain}>\r\nTo: user@mx.test\r\nSubject: Code {n}\r\n"
            f"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{n}@{domain}>\r\n\r\n"
            f"Your code is {n:06d}.\r\n" + "Some text of a sign-up mail.\r\n" * 20
        ).encode()
        signature = dkim.sign(
            raw,
            SELECTOR.encode(),
            domain.encode(),
            private,
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
            canonicalize=(b"relaxed", b"relaxed"),
        )
        out.append((f"bounce@{domain}", signature + raw))
    return out


async def _line(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await reader.readline()
        if line[3:4] != b"-":
            return line


async def _session(
    port: int,
    batch: list[tuple[str, bytes]],
    seconds: list[float],
    rcpt: str,
    pace: tuple[float, float] | None = None,
) -> None:
    """One connection sending `batch`; with `pace` (first start, interval), its k-th
    message starts no earlier than first + k * interval."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(SOURCE, 0))
    try:
        await _line(reader)
        writer.write(b"EHLO mail.bench.test\r\n")
        await _line(reader)
        for k, (sender, raw) in enumerate(batch):
            if pace is not None:
                await asyncio.sleep(max(0.0, pace[0] + k * pace[1] - time.perf_counter()))
            writer.write(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
            for _ in range(3):
                await _line(reader)
            writer.write(raw + b".\r\n")
            started = time.perf_counter()
            reply = await _line(reader)
            seconds.append(time.perf_counter() - started)
            if not reply.startswith(b"250"):
                raise ConnectionError(f"after the dot: {reply!r}")
        writer.write(b"QUIT\r\n")
        await _line(reader)
    finally:
        writer.close()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


_PASSES = iter(range(1 << 30))


def _send(
    receiver: Any, messages: list[tuple[str, bytes]], rate: float | None = None
) -> dict[str, Any]:
    # A mailbox of its own for each pass: the same bytes from the same sender to another
    # recipient are a new message, never a sender's retry (receiver.delivery.fp),
    # so every pass stores every message and no pass takes the duplicate path.
    rcpt = f"pass{next(_PASSES)}@mx.test"
    workers = _children(receiver.pid)
    before = cpu_seconds(receiver.pid)
    before_workers = sum(cpu_seconds(w) for w in workers)
    seconds: list[float] = []
    batches = [messages[i::CONCURRENCY] for i in range(CONCURRENCY)]

    async def all_sessions() -> None:
        paces: list[tuple[float, float] | None] = [None] * CONCURRENCY
        if rate is not None:  # open loop: the same messages per second whatever the checks
            first = time.perf_counter() + 0.05
            paces = [(first + i / rate, CONCURRENCY / rate) for i in range(CONCURRENCY)]
        await asyncio.gather(
            *(
                _session(receiver.port, b, seconds, rcpt, p)
                for b, p in zip(batches, paces, strict=True)
            )
        )

    asyncio.run(all_sessions())
    count = len(messages)
    return {
        "p50_ms": round(percentile(seconds, 0.5) * 1000, 2),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 2),
        "cpu_us": round((cpu_seconds(receiver.pid) - before) / count * 1e6),
        "worker_cpu_us": round(
            (sum(cpu_seconds(w) for w in workers) - before_workers) / count * 1e6
        ),
    }


def _dkim_passes(receiver: Any) -> float:
    return metric(receiver.http_url, "floodgate_auth_results_total", method="dkim", result="pass")


def _start_verifier(receiver: Any, private: bytes) -> float:
    """Send signed messages until one passes: the receiver's verification workers start
    at its first signature, and the runs below measure them at work, not starting. The
    DKIM passes counted so far (the runs' are those past it)."""
    deadline = time.monotonic() + 30
    for n in range(100):
        _send(receiver, _messages(1, 800_000 + n, "bench.test", private))
        if _dkim_passes(receiver) >= 1:
            return _dkim_passes(receiver)
        if time.monotonic() > deadline:
            break
    raise RuntimeError("the verification workers did not start")


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: sorted(row[key] for row in rows)[len(rows) // 2] for key in rows[0]}


def run(quick: bool = False) -> dict[str, Any]:
    count = 60 if quick else 1000
    rounds = 1 if quick else 3
    private, record = _key()
    ports: Any = multiprocessing.Queue()
    responder = multiprocessing.Process(target=_serve, args=(ports, record), daemon=True)
    responder.start()
    warmup = _messages(30 if quick else 100, 900_000, "bench.test", private)
    batches = [_messages(count, k * count, "bench.test", private) for k in range(rounds)]
    silent = _messages(count // 10, 0, "silent.test", private)
    measured: dict[str, list[dict[str, Any]]] = {
        "off": [],
        "cold": [],
        "warm": [],
        "off_paced": [],
        "warm_paced": [],
    }
    try:
        dns_port = ports.get(timeout=10)
        with tempfile.TemporaryDirectory() as directory, embedded_store(Path(directory)) as uri:
            env = {"FLOODGATE_MONGODB_URI": uri, **RECEIVER_ENV}
            auth_env = {
                **env,
                "FLOODGATE_AUTH_CHECKS": "1",
                "FLOODGATE_DNS_SERVERS": f"127.0.0.1:{dns_port}",
                "FLOODGATE_AUTH_TIMEOUT": str(DEADLINE),
                "FLOODGATE_DNS_RATE": "1000000",
            }
            plain = start_service("receiver", env, Path(directory))
            checked = start_service("receiver", auth_env, Path(directory))
            try:
                primed = _start_verifier(checked, private)
                _send(plain, warmup)  # indexes, store connections
                _send(checked, warmup)
                # Off and on alternate, round after round: a shared machine's load drifts,
                # and each figure is the median of its rounds.
                for batch in batches:
                    measured["off"].append(_send(plain, batch))
                    measured["cold"].append(_send(checked, batch))  # domains never seen
                    measured["warm"].append(_send(checked, batch))  # the same again
                    # At one fixed rate for both: an event loop's CPU per message falls as
                    # its load rises, and the checks' few milliseconds of waiting lower the
                    # load 10 closed-loop clients make; a fixed rate compares the work.
                    measured["off_paced"].append(_send(plain, batch, PACED_RATE))
                    measured["warm_paced"].append(_send(checked, batch, PACED_RATE))
                on_silent = _send(checked, silent)
                url = checked.http_url
                passed = _dkim_passes(checked) - primed
                temperror = metric(
                    url, "floodgate_auth_results_total", method="spf", result="temperror"
                )
            finally:
                checked.stop()
                plain.stop()
    finally:
        responder.terminate()
        responder.join(10)
    off, cold, warm, off_paced, warm_paced = (
        _median_row(measured[k]) for k in ("off", "cold", "warm", "off_paced", "warm_paced")
    )
    return {
        "messages": count,
        "warmup": len(warmup),
        "rounds": rounds,
        "silent_messages": len(silent),
        "concurrency": CONCURRENCY,
        "deadline_s": DEADLINE,
        "off": off,
        "cold": cold,
        "warm": warm,
        "silent": on_silent,
        "added_cpu_us_by_round": [
            w["cpu_us"] - o["cpu_us"]
            for o, w in zip(measured["off"], measured["warm"], strict=True)
        ],
        "dkim_pass": int(passed),
        "spf_temperror": int(temperror),
        "added_cpu_us_warm": warm["cpu_us"] - off["cpu_us"],
        "paced_rate": PACED_RATE,
        "off_paced": off_paced,
        "warm_paced": warm_paced,
        "added_cpu_us_warm_paced": warm_paced["cpu_us"] - off_paced["cpu_us"],
    }


def markdown(result: dict[str, Any]) -> str:
    rows = [
        ("off", result["off"]),
        ("on, cold caches", result["cold"]),
        ("on, warm caches", result["warm"]),
        (f"on, resolver silent ({result['silent_messages']} messages)", result["silent"]),
    ]
    if "off_paced" in result:
        rate = f"{result['paced_rate']:.0f} msg/s"
        rows += [(f"off, {rate}", result["off_paced"]), (f"on, warm, {rate}", result["warm_paced"])]
    lines = [
        "### Authentication verdicts",
        "",
        f"{result['messages']} DKIM-signed messages (RSA 2048) from as many sender domains, "
        f"each with SPF and DMARC published by a DNS responder on loopback; "
        f"{result['concurrency']} connections at once; deadline {result['deadline_s']} s; "
        f"medians of {result['rounds']} rounds, off and on alternating.",
        "",
        "| checks | time to 250 p50 | p99 | receiver CPU / message | worker CPU / message |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {name} | {r['p50_ms']} ms | {r['p99_ms']} ms | {r['cpu_us']} µs | "
        f"{r['worker_cpu_us']} µs |"
        for name, r in rows
    ]
    lines += [
        "",
        f"- Receiver CPU added per message with warm caches: "
        f"**{result['added_cpu_us_warm']} µs** (target: at most 150 µs; by round: "
        f"{', '.join(str(x) for x in result['added_cpu_us_by_round'])} µs).",
        *(
            [
                f"- At the same {result['paced_rate']:.0f} msg/s for both (the work itself, "
                f"not the load the closed-loop clients make): "
                f"**{result['added_cpu_us_warm_paced']} µs** added with warm caches."
            ]
            if "off_paced" in result
            else []
        ),
        f"- DKIM passes counted: {result['dkim_pass']}; SPF temperrors "
        f"(the silent resolver's): {result['spf_temperror']}.",
    ]
    return "\n".join(lines) + "\n"
