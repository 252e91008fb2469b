"""Idle workers handed to waiting jobs fairly between clients.

A lane's jobs wait here for a worker. Each client (an IPv4 address or an IPv6 /64: see
`api.push.client_key`) may have at most `share` jobs waiting, and the lane at most `total`;
a freed worker goes to the waiting clients in turn (round-robin, oldest job first within a
client), so a client with a hundred jobs queued delays another client's one job by at most
one job per worker, not by a hundred.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from typing import Generic, TypeVar

__all__ = ["Busy", "FairQueue", "OverShare"]

T = TypeVar("T")


class Busy(Exception):
    """Every worker of the lane is busy and its queue is full (the API says 503)."""


class OverShare(Exception):
    """This client already has its share of the lane's queue waiting (the API says 429)."""


class FairQueue(Generic[T]):
    """Idle items (workers), and jobs waiting for one, per client, served in turn."""

    def __init__(self, total: int, share: int) -> None:
        self.total, self.share = total, share
        self.waiting = 0
        self._idle: list[T] = []
        self._clients: OrderedDict[str, deque[asyncio.Future[T]]] = OrderedDict()

    @property
    def idle(self) -> int:
        return len(self._idle)

    def waiting_for(self, client: str) -> int:
        return len(self._clients.get(client, ()))

    def full_for(self, client: str) -> bool:
        """True when a job of `client` would be refused now (its share is waiting)."""
        return not self._idle and self.waiting_for(client) >= self.share

    def reserve(self, client: str, check: bool = True) -> asyncio.Future[T]:
        """A place for a job of `client`: a future that is (or will be, in the client's
        turn) an item. With `check`, `Busy` or `OverShare` instead of a place past the
        lane's queue or the client's share (there is always a place when an item is idle).
        Synchronous, so two jobs admitted at once cannot both take the last place."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if self._idle:
            future.set_result(self._idle.pop())
            return future
        if check and self.waiting >= self.total:
            raise Busy()
        if check and self.waiting_for(client) >= self.share:
            raise OverShare()
        self._clients.setdefault(client, deque()).append(future)
        self.waiting += 1
        return future

    async def wait(self, client: str, place: asyncio.Future[T]) -> T:
        """The item `place` (from `reserve`) is given."""
        try:
            return await place
        except asyncio.CancelledError:
            if place.done() and not place.cancelled():
                self.put(place.result())  # handed one as we were cancelled: pass it on
            raise
        finally:
            if place.cancelled():
                self._withdraw(client, place)

    def put(self, item: T) -> None:
        """`item` is free: to the next client in turn, or idle when nobody waits."""
        while self._clients:
            client, jobs = next(iter(self._clients.items()))
            future = jobs.popleft()
            self.waiting -= 1
            if jobs:
                self._clients.move_to_end(client)  # its next job waits for the others
            else:
                del self._clients[client]
            if not future.done():
                future.set_result(item)
                return
        self._idle.append(item)

    def take_idle(self) -> list[T]:
        """Every idle item, removed (at close)."""
        items, self._idle = self._idle, []
        return items

    def _withdraw(self, client: str, future: asyncio.Future[T]) -> None:
        jobs = self._clients.get(client)
        if jobs is None or future not in jobs:
            return  # already taken out by `put`, which counted it
        jobs.remove(future)  # at most `share` long
        self.waiting -= 1
        if not jobs:
            del self._clients[client]
