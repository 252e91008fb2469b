"""Live push: new messages of a mailbox as Server-Sent Events.

One change stream per API process follows inserts into `messages` and fans each new
message out in memory to the subscribers of its mailboxes. Everything is bounded and
shared fairly: the number of subscribers in all (503 beyond), per client (an IPv4 address
or an IPv6 /64), per client on one mailbox, per network (an IPv4 /24 or an IPv6 /48) and per
mailbox (429 beyond), so neither one client nor one network can take every slot, nor keep a
mailbox's owner out of it; each
subscriber's queue (a reader too slow to keep up is dropped and its slot freed at once,
never buffered forever) and each write (`WRITE_TIMEOUT`); and the catch-up a reconnecting
client gets from `Last-Event-ID` (the id of the last message it saw).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from api.limits import DEFAULTS, ApiLimits
from mailstore.connection import stop_if_cancelled
from mailstore.message import MessageDocument, MessageKey

log = logging.getLogger("floodgate.api")

MAX_SUBSCRIBERS = 1_000
QUEUE = 100  # events a subscriber may fall behind before it is dropped
HEARTBEAT = 15.0  # seconds between comments that keep proxies from closing the stream
POLL = 0.1  # the embedded store answers an empty getMore at once: pace empty polls
CATCH_UP = 100  # messages replayed after a Last-Event-ID
WRITE_TIMEOUT = 10.0  # seconds one write may wait for a reader before it is dropped
CLIENT_V6_PREFIX = 64  # an IPv6 client is its /64: one host usually holds the whole /64
# A network is an IPv4 /24 or an IPv6 /48: what one site or one cloud tenant commonly holds
# (RFC 6177 suggests a /48 per site), so fifty addresses of it are one network.
NETWORK_V4_PREFIX, NETWORK_V6_PREFIX = 24, 48

Summary = Callable[[MessageDocument], dict[str, Any]]


def client_key(host: str) -> str:
    """The client an address counts as: an IPv4 address, or the /64 of an IPv6 one."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, CLIENT_V6_PREFIX), strict=False))
    return str(address)


def network_key(client: str) -> str:
    """The network a client (`client_key`) belongs to: its IPv4 /24 or IPv6 /48."""
    try:
        network = ipaddress.ip_network(client, strict=False)
    except ValueError:
        return client
    prefix = NETWORK_V4_PREFIX if network.version == 4 else NETWORK_V6_PREFIX
    return str(network.supernet(new_prefix=prefix)) if network.prefixlen > prefix else client


class Subscriber:
    __slots__ = ("client", "dropped", "mailbox", "queue")

    def __init__(self, mailbox: str, client: str) -> None:
        self.mailbox = mailbox
        self.client = client
        self.queue: asyncio.Queue[MessageDocument] = asyncio.Queue(QUEUE)
        self.dropped = False


class Full(Exception):
    """No slot for this subscriber: `status` 503 (all slots taken) or 429 (its share)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class Hub:
    """Subscribers by mailbox, and the change stream that feeds them."""

    def __init__(self, limits: ApiLimits = DEFAULTS, total: int = MAX_SUBSCRIBERS) -> None:
        self._by_mailbox: dict[str, set[Subscriber]] = {}
        self._by_client: Counter[str] = Counter()
        self._by_network: Counter[str] = Counter()
        self._by_client_mailbox: Counter[tuple[str, str]] = Counter()
        self.limits = limits
        self.total = total
        self.count = 0
        self.events = 0

    def subscribe(self, mailbox: str, client: str) -> Subscriber:
        """A slot for `client` (see `client_key`) on `mailbox`, or `Full`."""
        if self.count >= self.total:
            raise Full(503, "too many live subscribers; retry later")
        if self._by_client[client] >= self.limits.push_per_client:
            raise Full(429, "too many live streams from this client")
        if self._by_client_mailbox[client, mailbox] >= self.limits.push_per_client_mailbox:
            raise Full(429, "too many live streams from this client on this mailbox")
        if self._by_network[network_key(client)] >= self.limits.push_per_network:
            raise Full(429, "too many live streams from this client's network")
        if len(self._by_mailbox.get(mailbox, ())) >= self.limits.push_per_mailbox:
            raise Full(429, "too many live streams on this mailbox")
        subscriber = Subscriber(mailbox, client)
        self._by_mailbox.setdefault(mailbox, set()).add(subscriber)
        for counter, key in self._counted(subscriber):
            counter[key] += 1
        self.count += 1
        return subscriber

    def _counted(self, subscriber: Subscriber) -> list[tuple[Counter[Any], Any]]:
        client, mailbox = subscriber.client, subscriber.mailbox
        return [
            (self._by_client, client),
            (self._by_client_mailbox, (client, mailbox)),
            (self._by_network, network_key(client)),
        ]

    def unsubscribe(self, subscriber: Subscriber) -> None:
        group = self._by_mailbox.get(subscriber.mailbox)
        if group is not None and subscriber in group:
            group.discard(subscriber)
            self.count -= 1
            for counter, key in self._counted(subscriber):
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]
            if not group:
                del self._by_mailbox[subscriber.mailbox]

    def publish(self, message: MessageDocument) -> None:
        """One stored message, to every subscriber of each of its mailboxes."""
        for mailbox in message.rcpt:
            for subscriber in list(self._by_mailbox.get(mailbox, ())):
                try:
                    subscriber.queue.put_nowait(message)
                except asyncio.QueueFull:
                    # Too slow: its slot is free at once (its stream ends when it next
                    # wakes); the client reconnects with Last-Event-ID.
                    subscriber.dropped = True
                    self.unsubscribe(subscriber)
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
                        if isinstance(document, dict) and MessageKey.ID in document:
                            self.publish(MessageDocument.read(document))
            except PyMongoError as error:
                stop_if_cancelled(error)
                log.warning("push: change stream lost (%s); reconnecting", type(error).__name__)
                await asyncio.sleep(1.0)


def frame(message: MessageDocument, summary: Summary) -> bytes:
    data = json.dumps(summary(message), default=str)
    return f"id: {message.id}\nevent: message\ndata: {data}\n\n".encode()


async def events(
    hub: Hub,
    subscriber: Subscriber,
    backlog: list[MessageDocument],
    summary: Summary,
    heartbeat: float = HEARTBEAT,
) -> AsyncIterator[bytes]:
    """The event stream of one subscriber: the catch-up, then live messages."""
    try:
        yield b"retry: 2000\n\n"
        seen = set()
        for message in backlog:
            seen.add(message.id)
            yield frame(message, summary)
        while not subscriber.dropped:
            try:
                message = await asyncio.wait_for(subscriber.queue.get(), heartbeat)
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            if message.id not in seen:
                yield frame(message, summary)
    finally:
        hub.unsubscribe(subscriber)


async def start(hub: Hub, messages: AsyncCollection[Any]) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(hub.follow(messages), name="push")


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel the follower and wait for it. Cut off in the middle of a driver call (the
    store away: a server selection waiting), the driver may raise instead of the
    cancellation (`RuntimeError: cannot wait on un-acquired lock`): said, and the shutdown
    goes on (the render workers and the store's client are closed after this)."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception as error:
        log.info("event=push_stopped error=%s", type(error).__name__)
