"""Each reader's share of the read side: a rate of reads, a number of body downloads at
once, and a deadline on every write to its socket.

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
from collections.abc import Callable, Iterator

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CHUNK", "MAX_CLIENTS", "Downloads", "ReadRate", "SendTimeout"]

MAX_CLIENTS = 65_536  # buckets kept (least recently used out: an idle bucket is full anyway)
CHUNK = 64 * 1024  # bytes per write: the transport buffers one chunk, not a whole message


class ReadRate:
    """A token bucket per client: `rate` reads a second, at most `burst` at once."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

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


class Downloads:
    """Body downloads in progress per client, at most `limit` each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._by_client: Counter[str] = Counter()

    def __len__(self) -> int:
        return sum(self._by_client.values())

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
