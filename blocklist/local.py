"""Access lists as one receiver sees them: local cache + snapshot + sync from MongoDB.

`LocalList` is the shared machinery; `LocalBlocklist` adds a bounded auto-ban writer and
`LocalAllowlist` the static entries from settings. `is_blocked` / `is_allowed` are what the
receiver calls before the greeting: memory only, microseconds.
`ban` is the admission controls' auto-ban hook: the ban applies locally at once and is
written to the shared collection (source `auto`) in the background, so every other receiver
enforces it within a change-stream round trip. Writes are queued in a bounded queue; if the
store is down and the queue fills, further bans stay local (and are counted), never blocking.

A ban lives in one place, this cache: there is no second table of bans in the receiver. Until
the store confirms a ban's write, a full resync keeps it (`pending`); from then on the store
is the only truth, so a removal or expiry there (API, CLI, console, an allowlist entry that
lifts it) reaches every receiver through the change stream or the next resync.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from blocklist.cache import DEFAULT_MEMO_SIZE, BlocklistCache
from blocklist.entries import Entry, InvalidEntry, Net, parse_network
from blocklist.repository import (
    ALLOWLIST,
    ALLOWLIST_AUDIT,
    AUDIT_COLLECTION,
    COLLECTION,
    BlocklistRepository,
)
from blocklist.sync import BlocklistSync
from mailstore.connection import stop_if_cancelled

log = logging.getLogger("floodgate.blocklist")

MAX_PENDING_BANS = 1000


@dataclass(frozen=True)
class LocalConfig:
    snapshot_path: Path | None
    resync_interval: float = 30.0
    change_stream: bool = True
    memo_size: int = DEFAULT_MEMO_SIZE
    actor: str = "receiver"
    timeout: float = 5.0


class LocalList:
    """One access list (`collection` in the store) as this receiver holds it."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        config: LocalConfig,
        *,
        collection: str = COLLECTION,
        audit: str = AUDIT_COLLECTION,
        overlay: Callable[[], Iterable[tuple[Net, float]]] = tuple,
    ) -> None:
        self.config = config
        self.name = collection
        self.cache = BlocklistCache(config.memo_size)
        self.repository = BlocklistRepository(
            db, timeout=config.timeout, collection=collection, audit=audit
        )
        self.sync = BlocklistSync(
            db[collection],
            self.cache,
            snapshot_path=config.snapshot_path,
            resync_interval=config.resync_interval,
            change_stream=config.change_stream,
            overlay=overlay,
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.sync.load_snapshot()
        self.sync.start()
        self._tasks.append(asyncio.create_task(self._ensure_indexes(), name=f"{self.name}-indexes"))

    async def _ensure_indexes(self) -> None:
        # The TTL index lets the store drop expired entries even if no API ever runs.
        for attempt in range(10):
            try:
                await self.repository.ensure_indexes()
                return
            except PyMongoError:
                await asyncio.sleep(min(60.0, 2.0**attempt))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)  # bounded: see BlocklistSync.stop
        await self.sync.stop()

    def contains(self, ip: str) -> bool:
        """Whether an unexpired entry covers `ip` (False for anything not an address)."""
        try:
            return self.cache.check(ip)
        except InvalidEntry:
            return False

    def staleness(self) -> float:
        return self.sync.staleness()

    def entries(self) -> int:
        return len(self.cache)

    def generation(self) -> int:
        """A number that changes whenever the list does (open sessions look again then)."""
        return self.cache.changes


class LocalAllowlist(LocalList):
    """Senders that are never throttled or auto-banned: stored entries, plus the static
    ones from settings (`FLOODGATE_ALLOWLIST`), which no resync can remove."""

    def __init__(
        self,
        db: AsyncDatabase[dict[str, Any]],
        config: LocalConfig,
        static: tuple[str, ...] = (),
    ) -> None:
        super().__init__(db, config, collection=ALLOWLIST, audit=ALLOWLIST_AUDIT)
        self.static = BlocklistCache(memo_size=1024)
        for cidr in static:
            self.static.upsert(cidr)

    def is_allowed(self, ip: str) -> bool:
        try:
            return self.static.check(ip) or self.cache.check(ip)
        except InvalidEntry:
            return False

    def entries(self) -> int:
        return len(self.cache) + len(self.static)


class LocalBlocklist(LocalList):
    """The blocklist, and this receiver's auto-bans written to it in the background."""

    def __init__(self, db: AsyncDatabase[dict[str, Any]], config: LocalConfig) -> None:
        super().__init__(db, config, overlay=self._unconfirmed)
        self._bans: asyncio.Queue[Entry] | None = None
        self.bans_dropped = 0
        # Bans made here whose write the store has not confirmed: network -> expiry.
        self.pending: OrderedDict[Net, float] = OrderedDict()

    async def start(self) -> None:
        self._bans = asyncio.Queue(MAX_PENDING_BANS)
        self._tasks.append(asyncio.create_task(self._write_bans(), name="blocklist-bans"))
        await super().start()

    def is_blocked(self, ip: str) -> bool:
        return self.contains(ip)

    def ban(self, key: str, reason: str, ttl: float) -> None:
        """Auto-ban a client key (`203.0.113.7` or `2001:db8:1:2::/64`) for `ttl` seconds."""
        try:
            entry = Entry.new(key, reason=reason, source="auto", ttl_seconds=ttl, actor="auto")
        except InvalidEntry as error:
            log.warning("auto-ban of %s not recorded: %s", key, error)
            return
        expires = entry.expires_at.timestamp() if entry.expires_at else time.time() + ttl
        net = parse_network(entry.cidr)
        current = self.cache.index.get(net)
        if current is None or current < expires:
            self.cache.upsert(net, expires)
        self.pending[net] = expires
        while len(self.pending) > MAX_PENDING_BANS:
            self.pending.popitem(last=False)
        if self._bans is None:
            return
        try:
            self._bans.put_nowait(entry)
        except asyncio.QueueFull:
            self.bans_dropped += 1

    def hold(self, key: str, ttl: float) -> None:
        """Apply a ban decided on this host and written by another process (a worker's,
        written by its host's gate) to this cache only: the store stays the truth, so a
        removal there reaches this cache as any other change does."""
        try:
            net = parse_network(key)
        except InvalidEntry:
            return
        expires = time.time() + ttl
        current = self.cache.index.get(net)
        if current is None or current < expires:
            self.cache.upsert(net, expires)

    async def _write_bans(self) -> None:
        assert self._bans is not None
        while True:
            entry = await self._bans.get()
            for attempt in range(3):
                try:
                    existing = await self.repository.get(entry.cidr)
                    if existing is None or not _outranks(existing, entry):
                        # (else a manual, permanent or longer ban already covers it)
                        await self.repository.add(entry, self.config.actor)
                except PyMongoError as error:
                    stop_if_cancelled(error)
                    log.warning("auto-ban of %s not yet stored: %s", entry.cidr, error)
                    await asyncio.sleep(0.5 * 2**attempt)
                else:
                    # The store holds it now: from here on only the store decides.
                    self.pending.pop(parse_network(entry.cidr), None)
                    break

    def _unconfirmed(self) -> list[tuple[Net, float]]:
        now = time.time()
        for net in [net for net, expires in self.pending.items() if expires <= now]:
            del self.pending[net]
        return list(self.pending.items())


def _outranks(existing: Entry, ban: Entry) -> bool:
    """A manual, permanent or longer-lived entry is never replaced by an auto-ban."""
    if existing.source == "manual" or existing.expires_at is None:
        return True
    return ban.expires_at is not None and existing.expires_at >= ban.expires_at
