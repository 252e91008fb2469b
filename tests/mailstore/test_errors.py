"""Why a write failed, cause first: what the operator sees in store_down and /readyz."""

from __future__ import annotations

from pymongo.errors import (
    AutoReconnect,
    ExecutionTimeout,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from mailstore.errors import cause


def test_a_full_disk_is_named_on_mongodb_and_on_the_embedded_store() -> None:
    mongod = OperationFailure("Commit failed: out of disk space", code=14031)
    sqlite = OperationFailure("database or disk is full")
    enospc = AutoReconnect("[Errno 28] No space left on device")
    for error in (mongod, sqlite, enospc):
        assert cause(error, 5).startswith("disk full: "), error


def test_a_refused_or_dropped_connection_and_a_timeout_are_named() -> None:
    refused = ServerSelectionTimeoutError(
        "127.0.0.1:9: [Errno 111] Connection refused (configured timeouts: ...)"
    )
    assert cause(refused, 1) == "refused: the store does not accept connections"
    lost = AutoReconnect("127.0.0.1:9: Connection is closed")
    assert cause(lost, 1) == "lost: the store closed the connection"
    for error in (NetworkTimeout("timed out"), ExecutionTimeout("operation exceeded", code=50)):
        assert cause(error, 1) == "timeout: no durable write within 1s"
    assert cause(TimeoutError(), 0.5, "answer") == "timeout: no answer within 0.5s"
    other = OperationFailure("not primary", code=10107)
    assert cause(other, 1) == "OperationFailure: not primary"
