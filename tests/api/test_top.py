"""`floodgate top` against a real receiver and API: one frame with `--once`, and the
interactive view in a pseudo-terminal, where `b` bans the selected client and `q` quits."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.support.processes import ServiceProcess, start_service
from tests.support.smtp import RawClient, wait_for
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


def test_top_keeps_the_last_snapshot_while_the_api_is_away_and_retries(
    make_receiver: ServiceFactory, make_api: ServiceFactory, tmp_path: Path
) -> None:
    """`floodgate top` outlives the API: the last snapshot stays under "API unreachable
    since ...", and once an API answers on the same address again, a key works again."""
    receiver = make_receiver(connection_rate="2", autoban_threshold="0")
    api = make_api()
    _noise(receiver, api)
    top = Top(api.http_url, tmp_path / "var")
    try:
        top.read_until(NOISY.encode(), 20)
        api.stop()
        top.read_until(b"API unreachable since", 10)
        away = top.screen.rindex(b"API unreachable since")
        # Redrawn after it, the receiver still listed: the last snapshot stays.
        row = f"127.0.0.1:{receiver.port}".encode()
        assert wait_for(lambda: _more(top) and row in top.screen[away:], 10), top.screen[-2000:]
        assert top.process.poll() is None

        again = start_service("api", {**api.env}, tmp_path, wait=False)
        try:
            wait_healthy_at(again, api.http_port)
            top.read_until(b"banned", 20, meanwhile=lambda: top.press(b"b"))
        finally:
            again.stop()
    finally:
        top.close()


def wait_healthy_at(service: ServiceProcess, port: int) -> None:
    """`service` answering on `port` (it took the address of the one it replaces)."""
    url = f"http://127.0.0.1:{port}/healthz"

    def healthy() -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    assert wait_for(healthy, 30), service.log()


def _more(top: Top) -> bool:
    """Whatever `top` drew since the last read (True: keep polling)."""
    ready, _, _ = select.select([top.leader], [], [], 0.2)
    if ready:
        top.screen += os.read(top.leader, 65536)
    return True
