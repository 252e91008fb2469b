"""Live push: new messages of a mailbox as Server-Sent Events.

One change stream per API process follows inserts into `messages` and fans each new
message out in memory to the subscribers of its mailboxes. Everything is bounded: the
number of subscribers (503 beyond), each subscriber's queue (a reader too slow to keep up
is dropped, never buffered forever), and the catch-up a reconnecting client gets from
`Last-Event-ID` (the id of the last message it saw).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

log = logging.getLogger("floodgate.api")

MAX_SUBSCRIBERS = 1_000
QUEUE = 100  # events a subscriber may fall behind before it is dropped
HEARTBEAT = 15.0  # seconds between comments that keep proxies from closing the stream
POLL = 0.1  # the embedded store answers an empty getMore at once: pace empty polls
CATCH_UP = 100  # messages replayed after a Last-Event-ID

Summary = Callable[[dict[str, Any]], dict[str, Any]]


class Subscriber:
    __slots__ = ("dropped", "mailbox", "queue")

    def __init__(self, mailbox: str) -> None:
        self.mailbox = mailbox
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE)
        self.dropped = False


class Hub:
    """Subscribers by mailbox, and the change stream that feeds them."""

    def __init__(self) -> None:
        self._by_mailbox: dict[str, set[Subscriber]] = {}
        self.count = 0
        self.events = 0

    def subscribe(self, mailbox: str) -> Subscriber | None:
        if self.count >= MAX_SUBSCRIBERS:
            return None
        subscriber = Subscriber(mailbox)
        self._by_mailbox.setdefault(mailbox, set()).add(subscriber)
        self.count += 1
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        group = self._by_mailbox.get(subscriber.mailbox)
        if group is not None and subscriber in group:
            group.discard(subscriber)
            self.count -= 1
            if not group:
                del self._by_mailbox[subscriber.mailbox]

    def publish(self, document: dict[str, Any]) -> None:
        """One stored message, to every subscriber of each of its mailboxes."""
        for mailbox in document.get("rcpt", ()):
            for subscriber in list(self._by_mailbox.get(mailbox, ())):
                try:
                    subscriber.queue.put_nowait(document)
                except asyncio.QueueFull:
                    subscriber.dropped = True  # too slow: it reconnects with Last-Event-ID
        self.events += 1

    async def follow(self, messages: AsyncCollection[Any]) -> None:
        """Feed the hub from the store's change stream until cancelled, reconnecting."""
        pipeline = [{"$match": {"operationType": "insert"}}]
        while True:
            try:
                async with await messages.watch(pipeline, max_await_time_ms=500) as stream:
                    while True:
                        change = await stream.try_next()
                        if change is None:
                            await asyncio.sleep(POLL)
                            continue
                        document = change.get("fullDocument")
                        if isinstance(document, dict):
                            self.publish(document)
            except PyMongoError as error:
                log.warning("push: change stream lost (%s); reconnecting", type(error).__name__)
                await asyncio.sleep(1.0)


def frame(document: dict[str, Any], summary: Summary) -> bytes:
    data = json.dumps(summary(document), default=str)
    return f"id: {document['_id']}\nevent: message\ndata: {data}\n\n".encode()


async def events(
    hub: Hub,
    subscriber: Subscriber,
    backlog: list[dict[str, Any]],
    summary: Summary,
    heartbeat: float = HEARTBEAT,
) -> AsyncIterator[bytes]:
    """The event stream of one subscriber: the catch-up, then live messages."""
    try:
        yield b"retry: 2000\n\n"
        seen = set()
        for document in backlog:
            seen.add(document["_id"])
            yield frame(document, summary)
        while not subscriber.dropped:
            try:
                document = await asyncio.wait_for(subscriber.queue.get(), heartbeat)
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            if document["_id"] not in seen:
                yield frame(document, summary)
    finally:
        hub.unsubscribe(subscriber)


async def start(hub: Hub, messages: AsyncCollection[Any]) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(hub.follow(messages), name="push")


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
