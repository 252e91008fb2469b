"""Which statements of the embedded store's SQL trace read a whole table: the statements
the server traced since a mark (`EmbeddedStore(trace_sql=...)`), each planned again with
SQLite's `EXPLAIN QUERY PLAN` on a read-only connection to the store's file."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from mailstore.embedded import EmbeddedStore


class Plans:
    """The trace of `server`, for statements on `tables` (a scan of one of them, with or
    without an index, reads every row; a scan of json_each reads one document's array)."""

    def __init__(self, server: EmbeddedStore, tables: tuple[str, ...]) -> None:
        assert server.trace_sql is not None, "start the store with trace_sql"
        self.trace: Path = server.trace_sql
        self.database = server.database_path
        self.tables = tables
        self.scan = re.compile(rf"^SCAN ({'|'.join(tables)})\b")

    def mark(self) -> int:
        return self.trace.stat().st_size if self.trace.exists() else 0

    def statements(self, since: int) -> list[str]:
        with self.trace.open(encoding="utf-8") as lines:
            lines.seek(since)
            return [line.strip() for line in lines if self._is_query(line)]

    def scans(self, since: int) -> dict[str, list[str]]:
        """Each traced query statement that scans one of the tables, with its plan."""
        found = {}
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True) as db:
            for statement in self.statements(since):
                plan = [str(row[3]) for row in db.execute("EXPLAIN QUERY PLAN " + statement)]
                if any(self.scan.match(step) for step in plan):
                    found[statement[:300]] = plan
        return found

    def _is_query(self, line: str) -> bool:
        words = line.split(maxsplit=1)
        if not words or words[0] not in ("SELECT", "DELETE", "UPDATE"):
            return False
        return any(re.search(rf"\b{table}\b", line) for table in self.tables)
