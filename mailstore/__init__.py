"""Messages in MongoDB: schema and indexes, durable insert, inbox queries, retention, and the
embedded store launcher.

The driver-free parts (the message type, errors, ids, the header scan, the envelope
grammar) import no MongoDB code, so the receiver can use them without loading the
driver; the driver-bound names below are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mailstore.errors import StoreBusy, StoreError, StoreRejected, StoreTimeout
from mailstore.headers import HeaderScan, scan_headers
from mailstore.ids import is_message_id, new_message_id
from mailstore.message import MessageDocument, MessageKey, TlsInfo, utcnow

if TYPE_CHECKING:
    from mailstore.connection import Document, connect, database
    from mailstore.embedded import EmbeddedStore
    from mailstore.store import MessageStore, StoreConfig

_DRIVER_BOUND = {
    "Document": "mailstore.connection",
    "connect": "mailstore.connection",
    "database": "mailstore.connection",
    "EmbeddedStore": "mailstore.embedded",
    "MessageStore": "mailstore.store",
    "StoreConfig": "mailstore.store",
}


def __getattr__(name: str) -> Any:
    module = _DRIVER_BOUND.get(name)
    if module is None:
        raise AttributeError(f"module 'mailstore' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "Document",
    "EmbeddedStore",
    "HeaderScan",
    "MessageDocument",
    "MessageKey",
    "MessageStore",
    "StoreBusy",
    "StoreConfig",
    "StoreError",
    "StoreRejected",
    "StoreTimeout",
    "TlsInfo",
    "connect",
    "database",
    "is_message_id",
    "new_message_id",
    "scan_headers",
    "utcnow",
]
