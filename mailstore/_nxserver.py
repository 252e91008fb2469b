"""Entry point that runs the nx-27017 server with its per-command logging turned down.

nx-27017 logs every wire command at INFO; at a thousand messages a second that is a
log line per insert and a measurable share of the store's CPU. Warnings still reach the log.

`--trace-sql FILE` (ours, taken off before nx-27017 reads its arguments) appends every SQL
statement the server runs to FILE, one a line: what the query-plan tests check (each
statement's `EXPLAIN QUERY PLAN`), and how to see why a query is slow.

Every SQLite connection it opens gets a journal size limit: SQLite keeps its write-ahead
log at its largest size after a checkpoint unless told otherwise, so a retention sweep
that freed the database file's pages (`MessageStore.compact`) would leave as much again
in the log.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
from typing import Any, TextIO

TRACE_FLAG = "--trace-sql"
JOURNAL_SIZE_LIMIT = 8 * 1024 * 1024  # bytes the write-ahead log keeps after a checkpoint


def main() -> None:
    """Run nx-27017 exactly as its own console script would, logging at WARNING."""
    trace = _trace_argument(sys.argv)
    _configure_connections(open(trace, "a", buffering=1, encoding="utf-8") if trace else None)
    from nx_27017.nx_27017 import main as nx_main

    original = logging.basicConfig

    def quiet_basic_config(**kwargs: Any) -> None:
        kwargs["level"] = logging.WARNING
        original(**kwargs)

    logging.basicConfig = quiet_basic_config
    nx_main()


def _trace_argument(argv: list[str]) -> str | None:
    if TRACE_FLAG not in argv:
        return None
    at = argv.index(TRACE_FLAG)
    path = argv[at + 1]
    del argv[at : at + 2]
    return path


def _configure_connections(trace: TextIO | None) -> None:
    """Every SQLite connection opened from now on gets the journal size limit, and writes
    its statements to `trace` if given."""
    lock = threading.Lock()
    connect = sqlite3.connect

    def write(statement: str) -> None:
        assert trace is not None
        with lock:
            trace.write(" ".join(statement.split()) + "\n")

    def configured(*args: Any, **kwargs: Any) -> Any:
        connection = connect(*args, **kwargs)
        connection.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
        if trace is not None:
            connection.set_trace_callback(write)
        return connection

    setattr(sqlite3, "connect", configured)  # noqa: B010 (mypy: connect is an overload)


if __name__ == "__main__":
    main()
