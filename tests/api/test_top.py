"""`floodgate top` against a real receiver and API: one frame with `--once`, and the
interactive view in a pseudo-terminal, where `b` bans the selected client and `q` quits."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.support.processes import ServiceProcess, clean_environ
from tests.support.smtp import RawClient

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


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **clean_environ(),
        "FLOODGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "FLOODGATE_DATA_DIR": str(tmp_path / "var"),
        "COLUMNS": "140",
        "LINES": "40",
        "TERM": "xterm",
    }


def test_top_shows_receivers_and_the_noisy_client_and_bans_with_a_key(
    make_receiver: ServiceFactory, make_api: ServiceFactory, tmp_path: Path
) -> None:
    receiver = make_receiver(connection_rate="2", autoban_threshold="0")
    api = make_api()
    _noise(receiver, api)

    once = subprocess.run(
        [sys.executable, "-m", "floodgate", "top", "--once", "--api", api.http_url],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert once.returncode == 0, once.stderr
    assert NOISY in once.stdout and f"127.0.0.1:{receiver.port}" in once.stdout

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "floodgate", "top", "--api", api.http_url, "--interval", "0.5"],
        env=_env(tmp_path),
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    screen = b""

    def read_until(needle: bytes, within: float) -> None:
        nonlocal screen
        deadline = time.monotonic() + within
        while needle not in screen:
            assert time.monotonic() < deadline, screen[-2000:]
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    screen += os.read(leader, 65536)
                except OSError:
                    break

    try:
        read_until(NOISY.encode(), 20)
        os.write(leader, b"b")  # the noisy client is the first (selected) row
        read_until(b"banned 127.0.34.1", 10)
        entry = httpx.get(f"{api.http_url}/v1/blocklist/{NOISY}", headers=AUTH)
        assert entry.status_code == 200 and entry.json()["reason"] == "banned from floodgate top"
        os.write(leader, b"q")
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        os.close(leader)
