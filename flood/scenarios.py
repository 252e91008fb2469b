"""The scenarios. Each runs until the shared stop event, its own count limit, or both.

Every socket operation has a timeout; every loop is bounded by the stop event, which the
runner sets at `--duration` (or on Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from flood.smtp import Closed, Connection, message, transaction
from flood.stats import CLOSED, CONNECT_REFUSED, CONNECT_TIMEOUT, HELD, TIMEOUT, Stats


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    domain: str
    timeout: float
    bind_sources: bool  # False for remote targets: loopback sources cannot reach them


@dataclass(frozen=True)
class Sources:
    """`count` client addresses starting at `first` (IPv4, consecutive)."""

    first: str
    count: int

    def addresses(self) -> list[str]:
        a, b, c, d = (int(p) for p in self.first.split("."))
        base = (a << 24) | (b << 16) | (c << 8) | d
        out = []
        for n in range(self.count):
            value = base + n
            out.append(".".join(str((value >> s) & 255) for s in (24, 16, 8, 0)))
        return out


def _error_outcome(error: BaseException) -> str:
    if isinstance(error, ConnectionRefusedError):
        return CONNECT_REFUSED
    if isinstance(error, TimeoutError):
        return TIMEOUT
    return CLOSED


async def _open(target: Target, source: str | None) -> tuple[Connection | None, str]:
    """A connection from `source`, or None and the outcome that prevented it."""
    try:
        conn = await Connection.open(
            target.host, target.port, source if target.bind_sources else None, target.timeout
        )
    except TimeoutError:
        return None, CONNECT_TIMEOUT
    except OSError as error:
        return None, _error_outcome(error)
    return conn, ""


@contextlib.asynccontextmanager
async def _greeted(
    target: Target, stats: Stats, stop: asyncio.Event, scenario: str, source: str
) -> AsyncIterator[Connection | None]:
    """A connection from `source` that got its 220 and said EHLO, closed afterwards; None
    (the refusal recorded, after a short pause) when it did not get that far. A failure
    inside the block is recorded too, as the scenario's outcome."""
    conn, failure = await _open(target, source)
    if conn is None:
        stats.record(scenario, failure)
        await _wait(stop, 0.05)
        yield None
        return
    try:
        greeting = await conn.reply(target.timeout)
        if not greeting.ok:
            stats.record(scenario, greeting.key)
            await _wait(stop, 0.05)
            yield None
            return
        await conn.command("EHLO flood.test", target.timeout)
        yield conn
    except (Closed, TimeoutError, OSError) as error:
        stats.record(scenario, _error_outcome(error))
    finally:
        await conn.close()


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True if the run is over."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


# -- idle --------------------------------------------------------------------------------


async def idle(
    target: Target, stats: Stats, stop: asyncio.Event, sockets: int, sources: Sources, rate: float
) -> None:
    """Open `sockets` connections spread over the sources at `rate`/s and stay silent."""
    addresses = sources.addresses()
    tasks: list[asyncio.Task[None]] = []

    async def hold(source: str) -> None:
        conn, failure = await _open(target, source)
        if conn is None:
            stats.record("idle", failure)
            return
        try:
            greeting = await conn.reply(target.timeout)
            stats.record("idle", greeting.key)
            if not greeting.ok:
                return
            # Silent from here on; whatever the server says next ends the hold.
            reader = asyncio.ensure_future(conn.reply(3600))
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                try:
                    stats.note("idle", f"closed after 220 with {reader.result().key}")
                except (Closed, TimeoutError):
                    stats.note("idle", "closed after 220")
            else:
                stats.note("idle", HELD)
            for task in (reader, stopper):
                task.cancel()
        except (Closed, TimeoutError, OSError) as error:
            stats.record("idle", _error_outcome(error))
        finally:
            await conn.close()

    interval = 1.0 / rate if rate > 0 else 0.0
    for n in range(sockets):
        if stop.is_set():
            break
        tasks.append(asyncio.create_task(hold(addresses[n % len(addresses)])))
        if interval and await _wait(stop, interval):
            break
        if not interval and n % 100 == 99:
            await asyncio.sleep(0)
    await asyncio.gather(*tasks, return_exceptions=True)


# -- slowloris ---------------------------------------------------------------------------


async def slowloris(
    target: Target,
    stats: Stats,
    stop: asyncio.Event,
    connections: int,
    sources: Sources,
    interval: float,
    phase: str,
) -> None:
    """Trickle one byte every `interval` seconds inside a command or inside DATA."""
    addresses = sources.addresses()

    async def trickle(source: str, serial: int) -> None:
        conn, failure = await _open(target, source)
        if conn is None:
            stats.record("slowloris", failure)
            return
        started = time.monotonic()
        try:
            greeting = await conn.reply(target.timeout)
            if not greeting.ok:
                stats.record("slowloris", greeting.key)
                return
            await conn.command("EHLO slow.flood.test", target.timeout)
            if phase == "data":
                for line in (
                    f"MAIL FROM:<slow{serial}@flood.test>",
                    f"RCPT TO:<slow{serial}@{target.domain}>",
                    "DATA",
                ):
                    reply = await conn.command(line, target.timeout)
                    if reply.code >= 400:
                        stats.record("slowloris", reply.key)
                        return
                payload = itertools.cycle(b"Subject: slow\r\n\r\n" + b"x" * 60 + b"\r\n")
            else:
                payload = itertools.cycle(f"MAIL FROM:<slow{serial}@flood.test>".encode())
            reader = asyncio.ensure_future(conn.reply(3600))
            while not stop.is_set() and not reader.done():
                conn.send(bytes([next(payload)]))
                await asyncio.wait({reader}, timeout=interval)
            if reader.done():
                try:
                    outcome = reader.result().key
                except (Closed, TimeoutError):
                    outcome = CLOSED
                stats.record("slowloris", outcome)
                stats.note("slowloris", f"lasted {int(time.monotonic() - started)}s")
            else:
                reader.cancel()
                stats.record("slowloris", HELD)
        except (Closed, TimeoutError, OSError) as error:
            stats.record("slowloris", _error_outcome(error))
        finally:
            await conn.close()

    await asyncio.gather(
        *(trickle(addresses[n % len(addresses)], n) for n in range(connections)),
        return_exceptions=True,
    )


# -- connect churn -----------------------------------------------------------------------


async def connect(
    target: Target,
    stats: Stats,
    stop: asyncio.Event,
    workers: int,
    sources: Sources,
    rate: float,
    limit: int,
) -> None:
    """Connect, read the greeting, QUIT; as fast as allowed (or at `rate`/s in all)."""
    addresses = sources.addresses()
    counter = itertools.count()
    per_worker_interval = workers / rate if rate > 0 else 0.0

    async def worker(index: int) -> None:
        source = addresses[index % len(addresses)]
        while not stop.is_set() and next(counter) < limit:
            began = time.monotonic()
            conn, failure = await _open(target, source)
            if conn is None:
                stats.record("connect", failure)
                await _wait(stop, 0.01)
                continue
            try:
                greeting = await conn.reply(target.timeout)
                stats.record("connect", greeting.key)
                if greeting.ok:
                    conn.send(b"QUIT\r\n")
            except (Closed, TimeoutError, OSError) as error:
                stats.record("connect", _error_outcome(error))
            finally:
                await conn.close()
            if per_worker_interval:
                await _wait(stop, max(0.0, per_worker_interval - (time.monotonic() - began)))

    await asyncio.gather(*(worker(i) for i in range(workers)), return_exceptions=True)


# -- message flood and legit senders -----------------------------------------------------


async def messages(
    target: Target,
    stats: Stats,
    stop: asyncio.Event,
    workers: int,
    sources: Sources,
    size: int,
    limit: int,
) -> None:
    """Back-to-back messages on persistent connections, reconnecting when refused."""
    addresses = sources.addresses()
    counter = itertools.count()

    async def worker(index: int) -> None:
        source = addresses[index % len(addresses)]
        sender = f"flood{index}@flood.test"
        while not stop.is_set():
            async with _greeted(target, stats, stop, "messages", source) as conn:
                if conn is None:
                    continue
                while not stop.is_set():
                    serial = next(counter)
                    if serial >= limit:
                        return
                    recipient = f"box{serial % 1000}@{target.domain}"
                    reply = await transaction(
                        conn,
                        sender,
                        recipient,
                        message(sender, recipient, size, serial),
                        target.timeout,
                    )
                    stats.record("messages", reply.key)
                    if reply.code == 421:
                        break

    await asyncio.gather(*(worker(i) for i in range(workers)), return_exceptions=True)


async def legit(
    target: Target,
    stats: Stats,
    stop: asyncio.Event,
    rate: float,
    sources: Sources,
    size: int,
    limit: int,
    tls: bool = False,
) -> None:
    """A steady stream of well-behaved senders: one connection per message, `rate`/s;
    with `tls`, each uses STARTTLS when offered (and goes on in clear on 454, as an
    opportunistic sender does)."""
    addresses = sources.addresses()
    tasks: set[asyncio.Task[None]] = set()

    async def send(serial: int) -> None:
        source = addresses[serial % len(addresses)]
        sender = f"sender{serial % len(addresses)}@legit.test"
        recipient = f"user{serial % 50}@{target.domain}"
        started = time.monotonic()
        conn, failure = await _open(target, source)
        if conn is None:
            stats.legit(failure, 0.0)
            return
        try:
            greeting = await conn.reply(target.timeout)
            if not greeting.ok:
                stats.legit(greeting.key, 0.0)
                return
            hello = await conn.command("EHLO legit.test", target.timeout)
            if tls and "STARTTLS" in hello.text.split("\n"):
                if (await conn.starttls(target.timeout)).code == 220:
                    stats.note("legit", "over TLS")
                    await conn.command("EHLO legit.test", target.timeout)
            reply = await transaction(
                conn, sender, recipient, message(sender, recipient, size, serial), target.timeout
            )
            stats.legit(reply.key, time.monotonic() - started)
            conn.send(b"QUIT\r\n")
        except (Closed, TimeoutError, OSError) as error:
            stats.legit(_error_outcome(error), 0.0)
        finally:
            await conn.close()

    interval = 1.0 / rate
    next_at = time.monotonic()
    for serial in range(limit):
        if stop.is_set():
            break
        task = asyncio.create_task(send(serial))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_at += interval
        if await _wait(stop, max(0.0, next_at - time.monotonic())):
            break
    # Messages already under way finish (bounded by the per-reply timeout).
    await asyncio.gather(*tasks, return_exceptions=True)


# -- TLS handshake flood -----------------------------------------------------------------

HANDSHAKE = "handshake done"


async def tls_handshakes(
    target: Target,
    stats: Stats,
    stop: asyncio.Event,
    workers: int,
    sources: Sources,
    limit: int,
) -> None:
    """Full STARTTLS handshakes back to back, then QUIT: the server's costliest cheap work.
    Outcomes: `handshake done`, or the refusal (454 when the handshake budget is spent)."""
    addresses = sources.addresses()
    counter = itertools.count()

    async def worker(index: int) -> None:
        source = addresses[index % len(addresses)]
        while not stop.is_set() and next(counter) < limit:
            async with _greeted(target, stats, stop, "tls", source) as conn:
                if conn is None:
                    continue
                reply = await conn.starttls(target.timeout)
                stats.record("tls", HANDSHAKE if reply.code == 220 else reply.key)
                if reply.code == 220:
                    conn.send(b"QUIT\r\n")
                else:
                    await _wait(stop, 0.05)

    await asyncio.gather(*(worker(i) for i in range(workers)), return_exceptions=True)
