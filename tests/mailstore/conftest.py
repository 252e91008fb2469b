"""Fixtures of the store's own tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailstore.embedded import EmbeddedStore


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedStore]:
    """An embedded store of the test's own that traces every SQL statement it runs
    (tests.support.plans reads the trace)."""
    server = EmbeddedStore(tmp_path / "store", trace_sql=tmp_path / "trace.sql")
    server.start()
    yield server
    server.stop()
