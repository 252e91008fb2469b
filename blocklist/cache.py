"""The receiver's local blocklist: the prefix index plus a bounded memo of recent verdicts.

Everything here is synchronous and in memory: a lookup never waits on the network. The memo
(a cachetools LRU) maps a recently *blocked* address to the expiry of the entry that blocks
it, so a banned client knocking again and again costs one cache probe. Clean verdicts are not
memoized: the index answers them in about a microsecond anyway, and inserting every new
address would make a flood of distinct addresses churn the LRU for nothing. Any change to
the index empties the memo, so a verdict can never outlive the entry behind it.
"""

from __future__ import annotations

import time

from cachetools import LRUCache

from blocklist.entries import Net, parse_address, parse_network
from blocklist.index import INF, PrefixIndex

DEFAULT_MEMO_SIZE = 65_536


class BlocklistCache:
    def __init__(self, memo_size: int = DEFAULT_MEMO_SIZE) -> None:
        self._index = PrefixIndex()
        self._memo_size = memo_size
        self._memo: LRUCache[str, float] = LRUCache(memo_size)
        self.changes = 0  # bumped on every change; the snapshot writer compares it

    def __len__(self) -> int:
        return len(self._index)

    @property
    def index(self) -> PrefixIndex:
        return self._index

    def _changed(self) -> None:
        self.changes += 1
        if self._memo.currsize:
            self._memo = LRUCache(self._memo_size)

    def check(self, ip: str, now: float | None = None) -> bool:
        """True when an unexpired entry covers `ip`. Raises `InvalidEntry` on a non-address."""
        now = time.time() if now is None else now
        expires = self._memo.get(ip)
        if expires is not None and expires > now:
            return True
        expires = self._index.expiry(ip, now)
        if not expires:
            return False
        self._memo[ip] = expires
        return True

    def match(self, ip: str, now: float | None = None) -> tuple[Net, float] | None:
        """The most specific unexpired entry covering `ip`, with its expiry (`inf` = never)."""
        version, address = parse_address(ip)
        return self._index.match(version, address, time.time() if now is None else now)

    def upsert(self, cidr: str | Net, expires: float = INF) -> None:
        net = cidr if isinstance(cidr, Net) else parse_network(cidr)
        if self._index.get(net) != expires:
            self._index.add(net, expires)
            self._changed()

    def delete(self, cidr: str | Net) -> bool:
        net = cidr if isinstance(cidr, Net) else parse_network(cidr)
        removed = self._index.remove(net)
        if removed:
            self._changed()
        return removed

    def replace(self, index: PrefixIndex) -> None:
        """Swap in a freshly built index (a full resync or a snapshot)."""
        self._index = index
        self._changed()

    def sweep(self, now: float | None = None) -> int:
        dropped = self._index.sweep(time.time() if now is None else now)
        if dropped:
            self._changed()
        return dropped
