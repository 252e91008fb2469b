"""Which engine answers: MongoDB, or the embedded nx-27017 (SQLite underneath).

Asked once per store, by `buildInfo` (no privileges needed on MongoDB). Four things
differ, and only these: a TTL index is declared only on MongoDB (nx-27017 implements one
as a comparison of dates over every document, run before every read of the collection);
space freed by deletes is handed back to the file system only on the embedded store
(SQLite keeps freed pages in its file; MongoDB's WiredTiger reuses them itself); and
message bytes are compressed by us only for the embedded store (it keeps them as base64
text in JSON; WiredTiger compresses its blocks itself); and the embedded store runs one
command at a time per database (a lock around each), so readers queued there are a wait
for the receivers' inserts: a process sends it few reads at once.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import pymongo
from pymongo import AsyncMongoClient


class Engine(StrEnum):
    MONGODB = "mongodb"
    EMBEDDED = "nx-27017"

    @property
    def expires_by_itself(self) -> bool:
        """Whether a TTL index deletes expired documents without anyone reading."""
        return self is Engine.MONGODB

    @property
    def compresses_documents(self) -> bool:
        """Whether the engine compresses what it stores (WiredTiger's block compression)."""
        return self is Engine.MONGODB

    @property
    def serializes_commands(self) -> bool:
        """Whether every command waits for the one before it (nx-27017's lock per
        database), inserts behind reads included."""
        return self is Engine.EMBEDDED

    @property
    def keeps_freed_pages(self) -> bool:
        """Whether deleted documents' space stays in the file until compacted."""
        return self is Engine.EMBEDDED


async def detect(client: AsyncMongoClient[Any], within: float) -> Engine:
    with pymongo.timeout(within):
        info = await client.admin.command("buildInfo")
    return Engine.EMBEDDED if info.get("process") == "nx_27017" else Engine.MONGODB
