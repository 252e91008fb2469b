"""Idle workers handed to waiting jobs fairly between clients.

A lane's jobs wait here for a worker. Each client (an IPv4 address or an IPv6 /64: see
`api.push.client_key`) may have at most `share` jobs waiting, and the lane at most `total`;
a freed worker goes to the waiting clients in turn (round-robin, oldest job first within a
client), so a client with a hundred jobs queued delays another client's one job by at most
one job per worker, not by a hundred. With `hold`, a client also holds at most that many
workers at once (its next job waits for one of its own to finish, even beside an idle
worker), so the rest of a lane is always there for the other clients: they never wait for
one client's jobs, however slow each is.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict, deque
from typing import Generic, TypeVar

__all__ = ["Busy", "FairQueue", "OverShare"]

T = TypeVar("T")


class Busy(Exception):
    """Every worker of the lane is busy and its queue is full (the API says 503)."""


class OverShare(Exception):
    """This client already has its share of the lane's queue waiting (the API says 429)."""


class FairQueue(Generic[T]):
    """Idle items (workers), and jobs waiting for one, per client, served in turn."""

    def __init__(self, total: int, share: int, hold: int | None = None) -> None:
        self.total, self.share, self.hold = total, share, hold
        self.waiting = 0
        self._idle: list[T] = []
        self._clients: OrderedDict[str, deque[asyncio.Future[T]]] = OrderedDict()
        self._held: Counter[str] = Counter()  # items each client holds now

    @property
    def idle(self) -> int:
        return len(self._idle)

    def waiting_for(self, client: str) -> int:
        return len(self._clients.get(client, ()))

    def held_by(self, client: str) -> int:
        return self._held[client]

    def full_for(self, client: str) -> bool:
        """True when a job of `client` would be refused now (its share is waiting)."""
        return not self._available(client) and self.waiting_for(client) >= self.share

    def _may_hold(self, client: str) -> bool:
        return self.hold is None or self._held[client] < self.hold

    def _available(self, client: str) -> bool:
        return bool(self._idle) and self._may_hold(client)

    def _give(self, client: str, future: asyncio.Future[T], item: T) -> None:
        self._held[client] += 1
        future.set_result(item)

    def reserve(self, client: str, check: bool = True) -> asyncio.Future[T]:
        """A place for a job of `client`: a future that is (or will be, in the client's
        turn) an item. With `check`, `Busy` or `OverShare` instead of a place past the
        lane's queue or the client's share (there is always a place when an item is idle
        and the client holds less than `hold`). Synchronous, so two jobs admitted at once
        cannot both take the last place."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if self._available(client):
            self._give(client, future, self._idle.pop())
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
                self.put(place.result(), client)  # handed one as we were cancelled: pass it on
            raise
        finally:
            if place.cancelled():
                self._withdraw(client, place)

    def put(self, item: T, holder: str | None = None) -> None:
        """`item` is free (given back by `holder`, or new): to the next client in turn that
        may hold one more, or idle when none waits."""
        if holder is not None:
            self._release(holder)
        while (client := self._next()) is not None:
            jobs = self._clients[client]
            future = jobs.popleft()
            self.waiting -= 1
            if jobs:
                self._clients.move_to_end(client)  # its next job waits for the others
            else:
                del self._clients[client]
            if not future.done():
                self._give(client, future, item)
                return
        self._idle.append(item)

    def release(self, holder: str) -> None:
        """`holder` gave up an item without putting it back (a worker that died): a job of
        its that waited beside an idle item for its hold to fall takes that item now."""
        self._release(holder)
        if self._idle and self._next() is not None:
            self.put(self._idle.pop())

    def _release(self, holder: str) -> None:
        self._held[holder] -= 1
        if self._held[holder] <= 0:
            del self._held[holder]

    def _next(self) -> str | None:
        """The first client in turn that waits and may hold one more item."""
        return next((c for c in self._clients if self._may_hold(c)), None)

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
