"""The attacks of `python -m bench attacks`: for each, the receiver settings that turn its
dependency on, the records a hostile DNS server on loopback publishes for it, and the
attacker, a coroutine that runs in a process of its own until told to stop.

Each attacker is paced (a fixed number of connections or messages per second, or a fixed
number of closed-loop connections): the receiver, the store, the DNS server, the attacker
and the bystander share the host's cores, so an unpaced Python client would measure how
much CPU it takes from everyone rather than what the receiver lets it cost others.
"""

from __future__ import annotations

import asyncio
import base64
import faulthandler
import itertools
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from tests.support import dkimkeys
from tests.support.dnsserver import Record, listed

ZONE = "zen.bench.test"  # the DNS list of the screening attacks
CLEAN = "clean.bench.test"  # the bystander's domain: SPF, a DKIM key, DMARC
SELECTOR = "s1"
SIGNER = "sig.bench.test"  # S8: a valid key, 8 signatures over a large body
HUGE = "huge.bench.test"  # S8: a key whose public exponent is 1001 bits (RFC 8301 says no)
HOSTILE_DOMAINS = 1500  # S1: fresh sender domains, so no SPF result is ever cached
SCREEN = {"FLOODGATE_DNSBL_SITES": ZONE, "FLOODGATE_DNSBL_ACTION": "drop"}
AUTH = {"FLOODGATE_AUTH_CHECKS": "1"}

Runner = Callable[[int, bool, "Counter"], Coroutine[Any, Any, None]]


@dataclass
class Counter:
    """What the attacker got done, for the report (attacker-side, not the receiver's)."""

    actions: int = 0
    errors: int = 0
    # Loops end by this flag, not by cancellation alone: Python 3.11's wait_for can
    # swallow a cancel that meets a completed read (S5's loops do, hundreds of times a
    # second), and a loop that swallowed one would run on for ever.
    stopped: bool = False


@dataclass(frozen=True)
class Attack:
    key: str
    title: str
    pace: str  # how hard the attacker pushes, for the report
    env: dict[str, str]
    runner: Runner
    records: dict[str, Record] = field(default_factory=dict)
    # Work done before the attacker process forks (and inherits it), not in its time.
    prepare: Callable[[bool], object] | None = None
    control: bool = False  # no attack: the load of one, reported and not judged


# --- SMTP as the attackers speak it ----------------------------------------------------


async def reply(reader: asyncio.StreamReader) -> bytes:
    """One reply, the last line of a multi-line one."""
    while True:
        line = await asyncio.wait_for(reader.readline(), 30)
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return line


async def paced(rate: float, step: Callable[[int], Awaitable[None]], counter: Counter) -> None:
    """Start `step(n)` `rate` times a second (open loop: a slow answer does not slow the
    attacker down), for ever; at most 2 s of steps in flight."""
    tasks: set[asyncio.Task[None]] = set()
    started = time.perf_counter()

    async def one(n: int) -> None:
        try:
            await step(n)
            counter.actions += 1
        except (OSError, ConnectionError, TimeoutError):
            counter.errors += 1

    for n in itertools.count():
        if counter.stopped:
            break
        await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
        if len(tasks) < 2 * rate:
            task = asyncio.create_task(one(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)


async def connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def knock(port: int, source: str) -> None:
    """Connect, read whatever comes first (banner or refusal), say QUIT if greeted."""
    reader, writer = await connect(port, source)
    try:
        first = await reply(reader)
        if first.startswith(b"220"):
            writer.write(b"QUIT\r\n")
            await reply(reader)
    finally:
        writer.close()


async def send_mail(port: int, source: str, sender: str, rcpt: str, raw: bytes) -> None:
    reader, writer = await connect(port, source)
    try:
        await reply(reader)
        writer.write(b"EHLO attacker.bench.test\r\n")
        await reply(reader)
        writer.write(f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        for _ in range(3):
            await reply(reader)
        writer.write(raw + b".\r\n")
        await reply(reader)
        writer.write(b"QUIT\r\n")
        await reply(reader)
    finally:
        writer.close()


def spread(n: int, second: int) -> str:
    """The n-th address of 127.<second>.0.0/16, never .0 or .255."""
    return f"127.{second}.{(n // 254) % 256}.{n % 254 + 1}"


# --- S1: SPF macro chains and oversized answers -----------------------------------------

# Messages a second: 100 of plain mail alone already stretch the bystander's 250 tail
# tenfold on this shared 2-core host (C1, the same load without the attack, shows it).
S1_RATE = 30
# A 900-octet term of sender macros (about 57 KB if expanded) and a 16 KB TXT answer.
MACRO_RECORD = "v=spf1 exists:" + "%{s}." * 178 + "x -all"
BIG_RECORD = "v=spf1 " + "ip4:192.0.2.1 " * 1150 + "-all"


def _s1_records() -> dict[str, Record]:
    records = {}
    for n in range(HOSTILE_DOMAINS):
        records[f"TXT:m{n}.macro.bench.test"] = Record.txt(MACRO_RECORD)
        records[f"TXT:b{n}.big.bench.test"] = Record.txt(BIG_RECORD)
    return records


async def _s1(port: int, quick: bool, counter: Counter) -> None:
    raw = dkimkeys.message(author="x <x@macro.bench.test>", to="victim@mx.test")
    local = "x" * 64

    async def step(n: int) -> None:
        domain = f"m{n % HOSTILE_DOMAINS}.macro" if n % 2 else f"b{n % HOSTILE_DOMAINS}.big"
        await send_mail(
            port, spread(n % 8, 81), f"{local}@{domain}.bench.test", f"a{n}@mx.test", raw
        )

    await paced(S1_RATE, step, counter)


async def _c1(port: int, quick: bool, counter: Counter) -> None:
    """S1's pace and path with clean mail: what the same load costs without the attack."""
    raw = dkimkeys.message(author=f"x <x@{CLEAN}>", to="victim@mx.test")

    async def step(n: int) -> None:
        await send_mail(port, spread(n % 8, 81), f"x@{CLEAN}", f"c{n}@mx.test", raw)

    await paced(S1_RATE, step, counter)


# --- S2, S3: a hostile DNS answering the screen's lookups ------------------------------


def _screen_records(second: int, count: int, record: Callable[[int], Record]) -> dict[str, Record]:
    return {listed(spread(n, second), ZONE): record(n) for n in range(count)}


async def _screen_flood(port: int, second: int, rate: float, counter: Counter) -> None:
    async def step(n: int) -> None:
        await knock(port, spread(n, second))

    await paced(rate, step, counter)


def _stray(n: int) -> Record:
    # 200 datagrams carrying the query's id and another question, then "listed".
    return Record("stray", ("127.0.0.2",))


def _forged(n: int) -> Record:
    # "You query too much" (which, believed, would turn the list off) or "not listed"
    # with a day's negative TTL (which, believed for that long, would mint a day's pass).
    return Record.a("127.255.255.254") if n % 2 else Record("nxdomain", ("86400",))


async def _s2(port: int, quick: bool, counter: Counter) -> None:
    await _screen_flood(port, 70, 20, counter)


async def _s3(port: int, quick: bool, counter: Counter) -> None:
    await _screen_flood(port, 71, 50, counter)


# --- S4: one listed /24 spending the lookup budget --------------------------------------


async def _s4(port: int, quick: bool, counter: Counter) -> None:
    async def flood(n: int) -> None:
        await knock(port, f"127.0.73.{n % 254 + 1}")

    async def others(n: int) -> None:
        await knock(port, f"127.0.74.{n % 254 + 1}")

    await asyncio.gather(paced(300, flood, counter), paced(10, others, counter))


# --- S5: reconnecting at once after 221, two workers ------------------------------------


async def _s5(port: int, quick: bool, counter: Counter) -> None:
    async def loop(source: str) -> None:
        while not counter.stopped:
            try:
                await knock(port, source)
                counter.actions += 1
            except (OSError, ConnectionError, TimeoutError):
                counter.errors += 1
                await asyncio.sleep(0.01)  # a refused bind fails without yielding

    await asyncio.gather(*(loop(f"127.0.53.{k}") for k in range(1, 3)))


# --- S8: holding the verification workers ----------------------------------------------


@cache
def _huge_exponent_record() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    numbers = rsa.RSAPublicNumbers((1 << 1000) | 1, (1 << 2047) | 1)
    der = numbers.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


@cache
def heavy_messages(quick: bool) -> tuple[bytes, bytes]:
    """Eight signatures over a large body by a valid key, and the same by a key whose
    exponent no verifier should use."""
    body = ("x" * 998 + "\r\n") * (128 if quick else 1024)  # 128 KB or 1 MB
    out = []
    for domain in (SIGNER, HUGE):
        raw = dkimkeys.message(author=f"x <x@{domain}>", to="victim@mx.test", body=body)
        for _ in range(8):
            raw = dkimkeys.sign(raw, domain, SELECTOR, dkimkeys.rsa_key())
        out.append(raw)
    return out[0], out[1]


C8_RATE = 7.0  # messages a second: what S8's two closed loops reach on this host


@cache
def plain_messages(quick: bool) -> tuple[bytes, bytes]:
    """S8's bodies with no signature: what receiving them costs without the checks' work."""
    body = ("x" * 998 + "\r\n") * (128 if quick else 1024)
    raw = dkimkeys.message(author=f"x <x@{SIGNER}>", to="victim@mx.test", body=body)
    return raw, raw


async def _s8(port: int, quick: bool, counter: Counter) -> None:
    await _heavy_loops(port, heavy_messages(quick), counter)


async def _c8(port: int, quick: bool, counter: Counter) -> None:
    """S8's messages unsigned at the pace S8's loops reach (closed loops here would send
    ten times as many: nothing to verify holds them back)."""
    raw, _ = plain_messages(quick)

    async def step(n: int) -> None:
        await send_mail(port, "127.0.82.1", f"x@{SIGNER}", f"p{n}@mx.test", raw)

    await paced(C8_RATE, step, counter)


async def _heavy_loops(port: int, messages: tuple[bytes, bytes], counter: Counter) -> None:
    signed, huge = messages
    serial = itertools.count()

    async def loop(k: int) -> None:
        while not counter.stopped:
            n = next(serial)
            raw, domain = (signed, SIGNER) if n % 2 else (huge, HUGE)
            try:
                await send_mail(port, "127.0.82.1", f"x@{domain}", f"h{n}@mx.test", raw)
                counter.actions += 1
            except (OSError, ConnectionError, TimeoutError):
                counter.errors += 1
                await asyncio.sleep(0.01)

    await asyncio.gather(*(loop(k) for k in range(2)))


# --- S10: half PROXY headers from a trusted proxy ---------------------------------------


async def _s10(port: int, quick: bool, counter: Counter) -> None:
    held: list[asyncio.StreamWriter] = []

    async def step(n: int) -> None:
        _, writer = await connect(port, "127.0.43.1")
        writer.write(b"PROXY TCP4 198.51.100.")  # and never the rest
        held.append(writer)
        if len(held) > 1000:  # the receiver drops those past its cap; let go of the oldest
            held.pop(0).close()

    await paced(100, step, counter)


def attacks() -> list[Attack]:
    key = dkimkeys.rsa_key()
    proxied = {
        "FLOODGATE_PROXY_PROTOCOL": "1",
        "FLOODGATE_TRUSTED_PROXIES": "127.0.43.0/24",
        "FLOODGATE_PROXY_PROTOCOL_TIMEOUT": "30",
    }
    s2 = _screen_records(70, 1500, _stray)
    s3 = _screen_records(71, 1500, _forged) | {
        listed("127.0.0.2", ZONE): Record.a("127.0.0.2")  # the list's test entry: it works
    }
    s4 = {
        listed(f"127.0.{c}.{n}", ZONE): Record.a("127.0.0.2")
        for c in (73, 74)
        for n in range(1, 255)
    }
    return [
        Attack(
            "S1",
            "SPF macro chains (900 octets) and 16 KB answers",
            "30 msg/s",
            AUTH,
            _s1,
            _s1_records(),
        ),
        Attack("C1", "control: clean mail at S1's pace", "30 msg/s", AUTH, _c1, control=True),
        Attack(
            "S2",
            "200 datagrams with the pending id before each answer",
            "20 conn/s",
            SCREEN,
            _s2,
            s2,
        ),
        Attack("S3", "forged 127.255.255.254 and day-long NXDOMAIN", "50 conn/s", SCREEN, _s3, s3),
        Attack(
            "S4",
            "a listed /24 spending its lookup budget, another listed /24 beside",
            "300 + 10 conn/s",
            {**SCREEN, "FLOODGATE_DNS_NETWORK_RATE": "60"},
            _s4,
            s4,
        ),
        Attack(
            "S5",
            "reconnects right after 221, 2 workers, cap 1 per address",
            "2 closed loops",
            {"FLOODGATE_WORKERS": "2", "FLOODGATE_MAX_CONNECTIONS_PER_IP": "1"},
            _s5,
        ),
        Attack(
            "S8",
            "8 signatures over a 1 MB body, and a 1001-bit exponent key",
            "2 closed loops",
            AUTH,
            _s8,
            {
                f"{SELECTOR}._domainkey.{SIGNER}": Record.txt(key.record),
                f"{SELECTOR}._domainkey.{HUGE}": Record.txt(_huge_exponent_record()),
            },
            heavy_messages,
        ),
        Attack(
            "C8",
            "control: S8's 1 MB messages unsigned, at S8's pace",
            "7 msg/s",
            AUTH,
            _c8,
            prepare=plain_messages,
            control=True,
        ),
        Attack("S10", "half PROXY headers from a trusted proxy, held", "100 conn/s", proxied, _s10),
    ]


def bystander_records() -> dict[str, Record]:
    key = dkimkeys.rsa_key()
    return {
        f"TXT:{CLEAN}": Record.txt("v=spf1 ip4:127.0.0.0/8 -all"),
        f"{SELECTOR}._domainkey.{CLEAN}": Record.txt(key.record),
        f"_dmarc.{CLEAN}": Record.txt("v=DMARC1; p=reject"),
    }


def run_attacker(attack: Attack, port: int, quick: bool, stop: Any, done: Any) -> None:
    """A child process's body: run the attack until `stop` is set, then report counts.
    SIGUSR1 prints its stacks (the parent's question when it does not stop)."""
    faulthandler.register(signal.SIGUSR1)
    counter = Counter()

    async def main() -> None:
        task = asyncio.create_task(attack.runner(port, quick, counter))
        while not stop.is_set():
            await asyncio.sleep(0.05)
        counter.stopped = True
        await asyncio.wait({task}, timeout=5)
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)

    asyncio.run(main())
    done.put((counter.actions, counter.errors))
