"""Each reader's share of the read side: a rate of reads, a number of reads worked on at
once, a number of body downloads at once, and a deadline on every write to its socket.

A client is an IPv4 address or an IPv6 /64 (`api.push.client_key`). In public-inbox mode
the read token is public, so every sender is a reader too: without these, one client's
reads could keep everyone else's waiting, and a socket that never reads could hold a
whole message in the API's memory for as long as it stays open.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from typing import NoReturn

from fastapi import HTTPException, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.fairqueue import Busy, FairQueue, OverShare
from api.push import client_key

__all__ = [
    "CHUNK",
    "HELD_PER_CLIENT",
    "MAX_CLIENTS",
    "Held",
    "ReadRate",
    "SendTimeout",
    "Slots",
    "client",
    "download_slot",
    "read_share",
    "read_turn",
    "read_turns",
    "refuse",
]

MAX_CLIENTS = 65_536  # buckets kept (least recently used out: an idle bucket is full anyway)
CHUNK = 64 * 1024  # bytes per write: the transport buffers one chunk, not a whole message
# Refusals of one client held at once (`ReadRate.refused`: past its reads a second, its
# renders waiting or its downloads); past it they are answered at once, so a client holds
# no more than this many sleeping requests for its refusals.
HELD_PER_CLIENT = 32
# Reads worked on at once, all clients together (`read_turns`): past them a read waits for
# its client's turn. Each client may have `WAITING_PER_CLIENT` reads waiting (a page's
# hundred inline images fit), `WAITING` in all; past them, 429 and 503.
TURNS = 32
WAITING_PER_CLIENT = 128
WAITING = 2_048
RETRY = {"Retry-After": "1"}


class ReadRate:
    """A token bucket per client: `rate` reads a second, at most `burst` at once; and the
    refusals being held (`hold` seconds each, at most `HELD_PER_CLIENT` per client)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        hold: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate, self.burst, self.hold, self.clock = rate, burst, hold, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.held = Slots(HELD_PER_CLIENT)

    async def refused(self, client: str) -> None:
        """Wait out a refusal's hold, unless `client` has its share of refusals held."""
        if self.hold <= 0 or not self.held.acquire(client):
            return
        try:
            await asyncio.sleep(self.hold)
        finally:
            self.held.release(client)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> float:
        """0 if `client` may read now (one token taken), else the seconds until it may."""
        now = self.clock()
        tokens, then = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)
        return wait


def retry_after(seconds: float) -> str:
    """A Retry-After value (RFC 9110 10.2.3: whole seconds), at least 1."""
    return str(max(1, math.ceil(seconds)))


class Slots:
    """Things in progress per client, at most `limit` each: body downloads, refusals held."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._by_client: Counter[str] = Counter()

    def __len__(self) -> int:
        return sum(self._by_client.values())

    def held_by(self, client: str) -> int:
        return self._by_client[client]

    def acquire(self, client: str) -> bool:
        if self._by_client[client] >= self.limit:
            return False
        self._by_client[client] += 1
        return True

    def release(self, client: str) -> None:
        self._by_client[client] -= 1
        if self._by_client[client] <= 0:
            del self._by_client[client]


class SendTimeout:
    """ASGI middleware: a response body goes out in `CHUNK`-sized writes, each of which
    must be taken by the reader within `seconds`; past it the response ends there (the
    server closes the connection) and what it held is freed."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stalled = False

        async def timed(message: Message) -> None:
            nonlocal stalled
            if stalled:
                raise Stalled()
            try:
                for piece in _pieces(message):
                    async with asyncio.timeout(self.seconds):
                        await send(piece)
            except TimeoutError:
                stalled = True
                raise Stalled() from None

        try:
            await self.app(scope, receive, timed)
        except Exception:
            # However the layers between wrapped it: the reader stalled, the answer ends
            # here (the server then closes the connection).
            if not stalled:
                raise


class Stalled(Exception):
    """The reader took nothing within the send timeout."""


def _pieces(message: Message) -> Iterator[Message]:
    """`message`, its body cut in `CHUNK`-sized pieces (one at a time: no second copy)."""
    body = message.get("body", b"")
    if message["type"] != "http.response.body" or len(body) <= CHUNK:
        yield message
        return
    more = message.get("more_body", False)
    for start in range(0, len(body), CHUNK):
        end = start + CHUNK
        yield {
            "type": "http.response.body",
            "body": body[start:end],
            "more_body": more or end < len(body),
        }


def client(request: Request) -> str:
    """Who is asking, as shares are counted: an IPv4 address or an IPv6 /64."""
    return client_key(request.client.host if request.client else "")


async def refuse(request: Request, detail: str, retry: str = "1") -> NoReturn:
    """429 to a client past one of its shares (reads a second, renders waiting, downloads),
    answered after the hold (`ReadRate.refused`): a client that asks past its share on many
    connections waits for each refusal instead of making the API answer them all at once."""
    rate: ReadRate = request.app.state.read_rate
    await rate.refused(client(request))
    raise HTTPException(status_code=429, detail=detail, headers={"Retry-After": retry})


async def read_share(request: Request) -> None:
    """A read (GET or HEAD) takes a token from its client's bucket, or is 429."""
    if request.method not in ("GET", "HEAD"):
        return
    rate: ReadRate = request.app.state.read_rate
    wait = rate.take(client(request))
    if wait > 0:
        await refuse(request, "too many reads from this client; retry later", retry_after(wait))


def read_turns(per_client: int) -> FairQueue[int]:
    """The API's `TURNS` turns, `per_client` of them held by one client at most."""
    turns: FairQueue[int] = FairQueue(WAITING, WAITING_PER_CLIENT, min(per_client, TURNS))
    for turn in range(TURNS):
        turns.put(turn)
    return turns


async def read_turn(request: Request) -> AsyncIterator[None]:
    """A mailbox or message read is worked on in its client's turn: one client's many
    connections get `FLOODGATE_READS_AT_ONCE` of the API's attention at once, and the
    others' reads are served in turn with them (`api.fairqueue`), not behind them. Held
    while the answer is made (store, render, serialisation: a dependency of scope
    "function"), not while it is sent (downloads have their own share)."""
    turns: FairQueue[int] = request.app.state.read_turns
    who = client(request)
    try:
        place = turns.reserve(who)
    except OverShare:
        await refuse(request, "too many reads at once from this client; retry later")
    except Busy:
        raise HTTPException(
            status_code=503, detail="too many reads waiting; retry later", headers=RETRY
        ) from None
    turn = await turns.wait(who, place)
    try:
        yield
    finally:
        turns.put(turn, who)


class Held(Response):
    """A message body being downloaded: its client's download slot is given back once the
    answer is sent, or its reader went away or stalled (`api.shares.SendTimeout`)."""

    release: Callable[[], None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.release is not None:
                self.release()
                self.release = None


async def download_slot(request: Request) -> Callable[[], None]:
    """One of the client's download slots (429 when it has them all), and its release."""
    downloads: Slots = request.app.state.downloads
    who = client(request)
    if not downloads.acquire(who):
        await refuse(
            request,
            f"more than {downloads.limit} downloads at once from this client; "
            "retry when one is done",
        )
    return lambda: downloads.release(who)
