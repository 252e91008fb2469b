"""IP access lists (the blocklist and the allowlist): entries, the local cache each receiver
answers from, and their sync from MongoDB."""

from blocklist.cache import BlocklistCache
from blocklist.entries import Entry, InvalidEntry, Net, normalize, parse_address, parse_network
from blocklist.index import PrefixIndex
from blocklist.local import LocalAllowlist, LocalBlocklist, LocalConfig, LocalList
from blocklist.repository import BlocklistRepository, BulkResult
from blocklist.sync import BlocklistSync

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
