"""`floodgate top` against a real receiver and API: one frame with `--once`, and the
interactive view in a pseudo-terminal, where `b` bans the selected client and `q` quits."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient
from tests.support.terminal import Top, top_env

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NOISY = "127.0.34.1"


def _noise(receiver: ServiceProcess, api: ServiceProcess) -> None:
    """Refusals from one address, until the API's stats name it (within 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        for _ in range(8):
            RawClient(receiver.host, receiver.port, source=NOISY).close()
        stats = httpx.get(f"{api.http_url}/v1/stats", headers=AUTH).json()
        if any(key == NOISY for key, _ in stats["overall"]["windows"]["1m"]["refusals"]):
            return
        assert time.monotonic() < deadline, stats
        time.sleep(0.5)


def test_top_shows_receivers_and_the_noisy_client_and_bans_with_a_key(
    make_receiver: ServiceFactory, make_api: ServiceFactory, tmp_path: Path
) -> None:
    receiver = make_receiver(connection_rate="2", autoban_threshold="0")
    api = make_api()
    _noise(receiver, api)

    once = subprocess.run(
        [sys.executable, "-m", "floodgate", "top", "--once", "--api", api.http_url],
        env=top_env(tmp_path / "var"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert once.returncode == 0, once.stderr
    assert NOISY in once.stdout and f"127.0.0.1:{receiver.port}" in once.stdout

    top = Top(api.http_url, tmp_path / "var")
    try:
        top.read_until(NOISY.encode(), 20)
        top.press(b"b")  # the noisy client is the first (selected) row
        top.read_until(b"banned 127.0.34.1", 10)
        entry = httpx.get(f"{api.http_url}/v1/blocklist/{NOISY}", headers=AUTH)
        assert entry.status_code == 200 and entry.json()["reason"] == "banned from floodgate top"
        top.press(b"q")
        assert top.process.wait(10) == 0
    finally:
        top.close()
