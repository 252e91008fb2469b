"""Entry point that runs the nx-27017 server with its per-command logging turned down.

nx-27017 logs every wire command at INFO; at a thousand messages a second that is a
log line per insert and a measurable share of the store's CPU. Warnings still reach the log.

`--trace-sql FILE` (ours, taken off before nx-27017 reads its arguments) appends every SQL
statement the server runs to FILE, one a line: what the query-plan tests check (each
statement's `EXPLAIN QUERY PLAN`), and how to see why a query is slow.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
from typing import Any, TextIO

TRACE_FLAG = "--trace-sql"


def main() -> None:
    """Run nx-27017 exactly as its own console script would, logging at WARNING."""
    trace = _trace_argument(sys.argv)
    if trace is not None:
        _trace_connections(open(trace, "a", buffering=1, encoding="utf-8"))
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


def _trace_connections(out: TextIO) -> None:
    """Every SQLite connection opened from now on writes its statements to `out`."""
    lock = threading.Lock()
    connect = sqlite3.connect

    def write(statement: str) -> None:
        with lock:
            out.write(" ".join(statement.split()) + "\n")

    def traced(*args: Any, **kwargs: Any) -> Any:
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(write)
        return connection

    setattr(sqlite3, "connect", traced)  # noqa: B010 (mypy: connect is an overload)


if __name__ == "__main__":
    main()
