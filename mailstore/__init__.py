"""Messages in MongoDB: schema and indexes, durable insert, inbox queries, retention, and the
embedded store launcher."""

from mailstore.connection import Document, connect, database
from mailstore.documents import IncomingMessage, utcnow
from mailstore.embedded import EmbeddedStore
from mailstore.errors import StoreBusy, StoreError, StoreRejected, StoreTimeout
from mailstore.headers import HeaderScan, scan_headers
from mailstore.ids import is_message_id, new_message_id
from mailstore.store import MessageStore, StoreConfig

__all__ = [
    "Document",
    "EmbeddedStore",
    "HeaderScan",
    "IncomingMessage",
    "MessageStore",
    "StoreBusy",
    "StoreConfig",
    "StoreError",
    "StoreRejected",
    "StoreTimeout",
    "connect",
    "database",
    "is_message_id",
    "new_message_id",
    "scan_headers",
    "utcnow",
]
