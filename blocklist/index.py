"""The in-memory lookup index: which entry (if any) covers an address, in microseconds.

One hash table per (family, prefix length) that has entries, mapping the network integer
shifted past its host bits to the entry's expiry (POSIX seconds, `inf` for never). A lookup
shifts the address once per populated prefix length, longest first, so it costs one dict
probe per distinct prefix length in use (a handful in real lists), independent of the number
of entries. Expired entries stop matching at their expiry even before a sync removes them.

Most lookups find nothing, and a miss pays for every populated length. A summary per family
cuts that: the set of /24s (IPv4) or /48s (IPv6) that contain any entry at least that long.
One probe of the summary answers for all the long tables at once (/32, /28, /24 ... or
/128, /64, /48 ...), so a miss costs one probe plus one per short prefix length in use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from socket import AF_INET, AF_INET6, inet_pton

from blocklist.entries import InvalidEntry, Net, parse_address

INF = math.inf
Table = dict[int, float]
Getter = Callable[[int], float | None]
SUMMARY_LENGTH = {4: 24, 6: 48}
_V4_MAPPED = bytes(10) + b"\xff\xff"


class PrefixIndex:
    """Exact addresses and prefixes of any length, IPv4 and IPv6; not thread-safe."""

    __slots__ = ("_bitmap", "_count", "_long", "_short", "_summary", "_tables")

    def __init__(self) -> None:
        # (version, prefixlen) -> table. _long[version] / _short[version]: [(shift,
        # table.get), ...] longest first, for lengths at or above / below the summary length
        # (bound `get` methods: no attribute lookup inside the hot loop). _summary[version]:
        # summary key -> number of long entries under it.
        self._tables: dict[tuple[int, int], Table] = {}
        self._long: dict[int, list[tuple[int, Getter]]] = {4: [], 6: []}
        self._short: dict[int, list[tuple[int, Getter]]] = {4: [], 6: []}
        self._summary: dict[int, dict[int, int]] = {4: {}, 6: {}}
        # The IPv4 summary as a bitmap too (one bit per /24, 2 MiB): testing a bit touches
        # one byte of a small array instead of a large hash table.
        self._bitmap = bytearray(1 << 21)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def _table(self, version: int, prefixlen: int, create: bool) -> Table | None:
        table = self._tables.get((version, prefixlen))
        if table is None and create:
            table = self._tables[(version, prefixlen)] = {}
            self._reorder(version)
        return table

    def _reorder(self, version: int) -> None:
        bits = 32 if version == 4 else 128
        order = [
            (length, bits - length, table.get)
            for (v, length), table in sorted(self._tables.items(), key=lambda kv: -kv[0][1])
            if v == version
        ]
        cut = SUMMARY_LENGTH[version]
        self._long[version] = [(shift, get) for length, shift, get in order if length >= cut]
        self._short[version] = [(shift, get) for length, shift, get in order if length < cut]

    def _summarize(self, version: int, prefixlen: int, keys: Iterable[int], step: int) -> None:
        """Count (`step` = 1) or uncount (-1) long entries under their summary keys."""
        cut = SUMMARY_LENGTH[version]
        if prefixlen < cut:
            return
        summary = self._summary[version]
        bitmap = self._bitmap if version == 4 else None
        for key in keys:
            top = key >> (prefixlen - cut)
            left = summary.get(top, 0) + step
            if left:
                summary[top] = left
            else:
                del summary[top]
            if bitmap is not None:
                if left:
                    bitmap[top >> 3] |= 1 << (top & 7)
                else:
                    bitmap[top >> 3] &= ~(1 << (top & 7)) & 0xFF

    def add(self, net: Net, expires: float = INF) -> bool:
        """Insert or update; True when the network was not present before."""
        table = self._table(net.version, net.prefixlen, create=True)
        assert table is not None
        key = net.key
        new = key not in table
        table[key] = expires
        if new:
            self._count += 1
            self._summarize(net.version, net.prefixlen, (key,), 1)
        return new

    def add_table(self, version: int, prefixlen: int, table: Table) -> None:
        """Adopt a whole prefix table at once (snapshot load); replaces any existing one."""
        old = self._tables.get((version, prefixlen))
        if old:
            self._count -= len(old)
            self._summarize(version, prefixlen, old, -1)
        self._count += len(table)
        self._summarize(version, prefixlen, table, 1)
        self._tables[(version, prefixlen)] = table
        self._reorder(version)

    def remove(self, net: Net) -> bool:
        table = self._table(net.version, net.prefixlen, create=False)
        if table is None or table.pop(net.key, None) is None:
            return False
        self._count -= 1
        self._summarize(net.version, net.prefixlen, (net.key,), -1)
        if not table:
            del self._tables[(net.version, net.prefixlen)]
            self._reorder(net.version)
        return True

    def get(self, net: Net) -> float | None:
        """The expiry stored for exactly `net`, or None."""
        table = self._tables.get((net.version, net.prefixlen))
        return None if table is None else table.get(net.key)

    def match(self, version: int, address: int, now: float) -> tuple[Net, float] | None:
        """The most specific unexpired entry covering the address, with its expiry."""
        bits = 32 if version == 4 else 128
        order = self._short[version]
        if address >> (bits - SUMMARY_LENGTH[version]) in self._summary[version]:
            order = self._long[version] + order
        for shift, get in order:
            expires = get(address >> shift)
            if expires is not None and expires > now:
                return Net(version, bits - shift, address >> shift << shift), expires
        return None

    def covers(self, ip: str, now: float) -> bool:
        """True when an unexpired entry covers `ip` (a literal address)."""
        return self.expiry(ip, now) > 0.0

    def expiry(self, ip: str, now: float) -> float:
        """Expiry of the most specific unexpired entry covering `ip`; 0.0 when none."""
        if ":" in ip:
            try:  # inlined too; zone ids, mapped IPv4 and errors take the general path
                packed = inet_pton(AF_INET6, ip)
            except OSError:
                packed = b""
            if packed and packed[:12] != _V4_MAPPED:
                version, address = 6, int.from_bytes(packed, "big")
            else:
                version, address = parse_address(ip)
        else:  # the common case, inlined: about a third of the cost of a lookup
            try:
                version, address = 4, int.from_bytes(inet_pton(AF_INET, ip), "big")
            except OSError:
                raise InvalidEntry(f"{ip!r} is not an IPv4 or IPv6 address") from None
        if (
            self._bitmap[address >> 11] & (1 << ((address >> 8) & 7))
            if version == 4
            else address >> 80 in self._summary[6]
        ):
            for shift, get in self._long[version]:
                expires = get(address >> shift)
                if expires is not None and expires > now:
                    return expires
        for shift, get in self._short[version]:
            expires = get(address >> shift)
            if expires is not None and expires > now:
                return expires
        return 0.0

    def sweep(self, now: float) -> int:
        """Drop entries that expired at or before `now`; return how many."""
        dropped = 0
        for (version, length), table in list(self._tables.items()):
            stale = [key for key, expires in table.items() if expires <= now]
            for key in stale:
                del table[key]
            self._summarize(version, length, stale, -1)
            dropped += len(stale)
            if not table:
                del self._tables[(version, length)]
                self._reorder(version)
        self._count -= dropped
        return dropped

    def tables(self) -> Iterator[tuple[int, int, Table]]:
        """(version, prefixlen, table) for every populated prefix length."""
        for (version, length), table in sorted(self._tables.items()):
            yield version, length, table

    def networks(self) -> Iterator[tuple[Net, float]]:
        for version, length, table in self.tables():
            shift = (32 if version == 4 else 128) - length
            for key, expires in table.items():
                yield Net(version, length, key << shift), expires
