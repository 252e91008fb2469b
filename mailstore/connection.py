"""One way to reach MongoDB: an `AsyncMongoClient` with durable writes and bounded waits."""

from __future__ import annotations

import asyncio
from typing import Any

from pymongo import AsyncMongoClient, WriteConcern
from pymongo.asynchronous.database import AsyncDatabase

Document = dict[str, Any]

# Every write waits for a majority of the replica set and the journal: a 250 is only sent
# once the message survives the loss of the primary.
DURABLE = WriteConcern(w="majority", j=True)


def connect(
    uri: str, *, timeout: float = 5.0, app_name: str = "floodgate"
) -> AsyncMongoClient[Document]:
    """A client for `uri` whose server selection and connects give up after `timeout` s."""
    ms = max(1, int(timeout * 1000))
    return AsyncMongoClient(
        uri,
        appname=app_name,
        retryWrites=True,
        retryReads=True,
        w="majority",
        journal=True,
        tz_aware=True,
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        maxPoolSize=50,
    )


def database(client: AsyncMongoClient[Document], name: str) -> AsyncDatabase[Document]:
    """The named database with the durable write concern applied to every collection."""
    return client.get_database(name, write_concern=DURABLE)


def stop_if_cancelled(error: BaseException) -> None:
    """Raise `CancelledError` when the running task has been asked to stop. PyMongo's
    async server selection, cancelled while the store is away, raises its own error
    instead (`ServerSelectionTimeoutError`, or `RuntimeError` from its lock): a retry loop
    that takes it for the store's and carries on never stops, and its process hangs at
    shutdown until it is killed. Every loop that retries store errors calls this first."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from error
