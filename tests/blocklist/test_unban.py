"""An unban unbans: every way an operator removes an automatic ban reaches every receiver
within a second (real store, two real receivers, the real API, CLI and `floodgate top`).

A ban lives in one place, the blocklist; these tests would fail if any receiver kept a
second copy of it (as a table of temporary bans once did)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.blocklist.test_enforcement import greeting
from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.support.processes import ServiceProcess, clean_environ
from tests.support.smtp import RawClient, wait_for
from tests.support.terminal import Top

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROPAGATION = 1.0  # seconds: the promise
SLACK = 0.5  # a test machine's scheduling noise on top of it


def _earn_ban(receiver: ServiceProcess, source: str) -> None:
    """One protocol violation (NOOP pipelined behind NOOP); the threshold here is 1."""
    client = RawClient(receiver.host, receiver.port, source=source)
    assert client.hello().code == 250
    client.send(b"NOOP\r\nNOOP\r\n")
    assert client.reply().code == 554  # refused before the first NOOP runs
    client.close()


def _everywhere(receivers: list[ServiceProcess], source: str, code: int, within: float) -> float:
    """Seconds until every receiver greets `source` with `code` (fails past `within`)."""
    started = time.monotonic()
    assert wait_for(
        lambda: all(greeting(r, source).startswith(str(code)) for r in receivers),
        timeout=within,
        interval=0.02,
    ), [greeting(r, source) for r in receivers]
    return time.monotonic() - started


@pytest.fixture
def fleet(
    make_receiver: ServiceFactory, make_api: ServiceFactory
) -> tuple[list[ServiceProcess], ServiceProcess]:
    limits = {"autoban_threshold": "1", "autoban_ttl": "3600"}
    return [make_receiver(**limits), make_receiver(**limits)], make_api()


def _cli(api: ServiceProcess, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**clean_environ(), "FLOODGATE_ADMIN_TOKEN": ADMIN_TOKEN}
    env["FLOODGATE_DATA_DIR"] = str(tmp_path / "cli")
    env["FLOODGATE_API_LISTEN"] = f"127.0.0.1:{api.port}"
    return subprocess.run(
        [sys.executable, "-m", "floodgate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _unban_by_delete(api: ServiceProcess, source: str, tmp_path: Path) -> None:
    answer = httpx.delete(
        f"{api.http_url}/v1/blocklist/{quote(source + '/32', safe='')}", headers=AUTH
    )
    assert answer.status_code == 204, answer.text


def _unban_by_cli(api: ServiceProcess, source: str, tmp_path: Path) -> None:
    done = _cli(api, tmp_path, "block", "rm", "--source", "auto")
    assert done.returncode == 0, done.stderr


def _unban_by_allowlist(api: ServiceProcess, source: str, tmp_path: Path) -> None:
    added = httpx.post(
        f"{api.http_url}/v1/allowlist", json={"cidr": source, "reason": "test"}, headers=AUTH
    )
    assert added.status_code == 201 and added.json()["lifted"] == [f"{source}/32"], added.text
    removed = httpx.delete(
        f"{api.http_url}/v1/allowlist/{quote(source + '/32', safe='')}", headers=AUTH
    )
    assert removed.status_code == 204  # and the ban it lifted stays lifted


@pytest.mark.parametrize(
    "unban",
    [_unban_by_delete, _unban_by_cli, _unban_by_allowlist],
    ids=["delete", "cli-rm-source-auto", "allowlist-added-then-removed"],
)
def test_an_automatic_ban_is_shared_and_its_removal_reaches_every_receiver_within_a_second(
    fleet: tuple[list[ServiceProcess], ServiceProcess],
    tmp_path: Path,
    unban: Callable[[ServiceProcess, str, Path], None],
) -> None:
    receivers, api = fleet
    source = "127.0.61.1"
    _earn_ban(receivers[0], source)
    # Applied at once where it was earned, and shared with the other receiver.
    assert greeting(receivers[0], source).startswith("554")
    _everywhere(receivers, source, 554, within=5)
    assert wait_for(
        lambda: httpx.get(f"{api.http_url}/v1/blocklist/check/{source}", headers=AUTH).json()[
            "blocked"
        ],
        timeout=5,
    )
    unban(api, source, tmp_path)
    took = _everywhere(receivers, source, 220, within=PROPAGATION + SLACK)
    assert took <= PROPAGATION + SLACK
    # And it stays lifted: nothing else remembered the ban (wait past a resync poll).
    time.sleep(1.0)
    assert all(greeting(r, source).startswith("220") for r in receivers)


def test_an_open_session_ends_at_its_next_command_once_its_client_is_banned(
    fleet: tuple[list[ServiceProcess], ServiceProcess],
) -> None:
    receivers, _ = fleet
    source = "127.0.61.2"
    open_session = RawClient(receivers[1].host, receivers[1].port, source=source)
    assert open_session.hello().code == 250
    _earn_ban(receivers[0], source)  # banned on the other receiver
    _everywhere(receivers, source, 554, within=5)
    answer = open_session.cmd("NOOP")
    assert (answer.code, answer.text[:5]) == (554, "5.7.1")
    assert open_session.closed_by_server()


def test_top_unban_key_reaches_every_receiver(
    fleet: tuple[list[ServiceProcess], ServiceProcess], tmp_path: Path
) -> None:
    receivers, api = fleet
    source = "127.0.61.3"
    _earn_ban(receivers[0], source)
    _everywhere(receivers, source, 554, within=5)
    top = Top(api.http_url, tmp_path / "top")
    try:
        # The banned client keeps knocking, so top lists it as the heaviest refused one.
        def knock() -> None:
            greeting(receivers[0], source)

        top.read_until(source.encode(), 30, knock)
        top.press(b"u")  # the banned client is the first (selected) row
        top.read_until(f"removed {source}/32".encode(), 10, knock)
        _everywhere(receivers, source, 220, within=PROPAGATION + SLACK)
        top.press(b"q")
        assert top.process.wait(10) == 0
    finally:
        top.close()
