"""IP access lists (the blocklist and the allowlist): entries, the local cache each receiver
answers from, and their sync from MongoDB.

The parts that talk to MongoDB load on first use: a command that only parses entries
(`floodgate block`) does not pay for the driver."""

import importlib
from typing import TYPE_CHECKING, Any

from blocklist.cache import BlocklistCache
from blocklist.entries import Entry, InvalidEntry, Net, normalize, parse_address, parse_network
from blocklist.index import PrefixIndex

if TYPE_CHECKING:
    from blocklist.local import LocalAllowlist, LocalBlocklist, LocalConfig, LocalList
    from blocklist.repository import BlocklistRepository, BulkResult
    from blocklist.sync import BlocklistSync

_WITH_THE_DRIVER = {
    "LocalAllowlist": "blocklist.local",
    "LocalBlocklist": "blocklist.local",
    "LocalConfig": "blocklist.local",
    "LocalList": "blocklist.local",
    "BlocklistRepository": "blocklist.repository",
    "BulkResult": "blocklist.repository",
    "BlocklistSync": "blocklist.sync",
}


def __getattr__(name: str) -> Any:
    module = _WITH_THE_DRIVER.get(name)
    if module is None:
        raise AttributeError(f"module 'blocklist' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "BlocklistCache",
    "BlocklistRepository",
    "BlocklistSync",
    "BulkResult",
    "Entry",
    "InvalidEntry",
    "LocalAllowlist",
    "LocalBlocklist",
    "LocalConfig",
    "LocalList",
    "Net",
    "PrefixIndex",
    "normalize",
    "parse_address",
    "parse_network",
]
