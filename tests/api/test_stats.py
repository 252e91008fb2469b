"""`GET /v1/stats` through real processes: a client that only opens and closes connections
(never refused, never sending mail) is named by its connections, in the API and in
`floodgate top`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.support.processes import clean_environ
from tests.support.smtp import RawClient

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
KNOCKER = "127.0.35.1"


def test_a_connect_and_close_flood_is_named_within_ten_seconds(
    make_receiver: ServiceFactory, make_api: ServiceFactory, tmp_path: Path
) -> None:
    receiver = make_receiver()  # default limits: 60 connections in seconds are all admitted
    api = make_api()
    started = time.monotonic()
    for _ in range(60):
        client = RawClient(receiver.host, receiver.port, source=KNOCKER)
        assert client.reply().code == 220
        client.close()
    flooded = time.monotonic() - started
    assert flooded < 5, flooded
    named: dict[str, int] = {}
    while time.monotonic() - started < 10:
        stats = httpx.get(f"{api.http_url}/v1/stats", headers=AUTH).json()
        named = dict(stats["overall"]["windows"]["1m"]["connections"])
        if named.get(KNOCKER, 0) >= 60:
            break
        time.sleep(0.25)
    assert named.get(KNOCKER) == 60, stats
    window = stats["overall"]["windows"]["1m"]
    assert window["refusals"] == [] and window["error_bound"]["connections"] == 0
    assert stats["clients"][KNOCKER] == {"blocked": False, "source": None, "expires_at": None}

    env = {**clean_environ(), "FLOODGATE_ADMIN_TOKEN": ADMIN_TOKEN, "COLUMNS": "140"}
    env["FLOODGATE_DATA_DIR"] = str(tmp_path / "var")
    top = subprocess.run(
        [sys.executable, "-m", "floodgate", "top", "--once", "--api", api.http_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert top.returncode == 0, top.stderr
    row = next(line for line in top.stdout.splitlines() if KNOCKER in line)
    assert "60" in row.split(), row
