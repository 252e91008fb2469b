"""The command line: every command is there, and none depends on a guarded import (a typo
in our own code must fail at start, never remove a command or a route in silence)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from floodgate.cli import build_parser
from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.support.metrics import sample
from tests.support.processes import ServiceProcess, clean_environ, start_service
from tests.support.smtp import RawClient, send_message, wait_for

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("floodgate", "receiver", "blocklist", "mailstore", "api", "flood", "webhooks")


def test_every_command_is_registered() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands is not None
    assert {"run", "receiver", "api", "flood", "block", "allow", "top"} <= set(commands)


def test_no_import_of_our_own_code_is_guarded() -> None:
    guarded = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Try):
                    continue
                catches = {ast.unparse(handler.type) for handler in node.handlers if handler.type}
                if not catches & {"ImportError", "ModuleNotFoundError"}:
                    continue
                for statement in ast.walk(node):
                    if isinstance(statement, ast.ImportFrom) and statement.module:
                        if statement.module.split(".")[0] in PACKAGES:
                            guarded.append(f"{path.relative_to(REPO)}:{statement.lineno}")
                    elif isinstance(statement, ast.Import):
                        names = [alias.name.split(".")[0] for alias in statement.names]
                        if set(names) & set(PACKAGES):
                            guarded.append(f"{path.relative_to(REPO)}:{statement.lineno}")
    assert guarded == []


def test_receiver_workers_takes_the_settings_range() -> None:
    parser = build_parser()
    assert parser.parse_args(["receiver", "--workers", "4"]).workers == 4
    assert parser.parse_args(["receiver"]).workers is None  # FLOODGATE_WORKERS decides
    for wrong in ("0", "65", "two"):
        with pytest.raises(SystemExit):
            parser.parse_args(["receiver", "--workers", wrong])


def test_make_flood_aims_at_the_receiver_and_api_the_settings_name(
    make_receiver: ServiceFactory, make_api: ServiceFactory, tmp_path: Path
) -> None:
    """`make flood` against a `make run` whose FLOODGATE_SMTP_LISTEN and FLOODGATE_API_LISTEN
    are not the defaults: its legit mail reaches that receiver, and its ban report reads
    that API with the token from FLOODGATE_DATA_DIR. (FLOOD_ARGS shortens the incident.)"""
    receiver = make_receiver()
    api = make_api()
    data = tmp_path / "var"
    data.mkdir()
    (data / "admin-token").write_text(ADMIN_TOKEN)
    report = tmp_path / "flood.json"
    short = f"--duration 3 --idle 5 --messages 0 --slowloris 0 --quiet --json {report} "
    short += f"--plot {tmp_path / 'flood.png'}"
    result = subprocess.run(
        ["make", "-s", "flood", f"FLOOD_ARGS={short}"],
        cwd=REPO,
        env={
            **clean_environ(),
            "FLOODGATE_SMTP_LISTEN": f"{receiver.host}:{receiver.port}",
            "FLOODGATE_API_LISTEN": f"127.0.0.1:{api.http_port}",
            "FLOODGATE_DATA_DIR": str(data),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    flood = json.loads(report.read_text())
    assert flood["target"] == f"{receiver.host}:{receiver.port}"
    assert flood["legit"]["accepted"] > 0 and flood["legit"]["success_pct"] == 100.0
    assert flood["bans"]["checked"] is True, flood["bans"]  # the API was asked, and answered
    stored = sample(receiver.http_url, "floodgate_messages_total", outcome="stored")
    assert stored == flood["legit"]["accepted"]


def test_flood_defaults_follow_the_settings_and_an_option_given_wins(tmp_path: Path) -> None:
    from floodgate.cli import _reachable

    assert _reachable("0.0.0.0:2600") == "127.0.0.1:2600"
    assert _reachable("[::]:2600") == "[::1]:2600"
    assert _reachable("127.0.0.5:2600") == "127.0.0.5:2600"
    result = subprocess.run(
        [sys.executable, "-m", "floodgate", "flood", "--target", "127.0.0.1:1", "--duration",
         "0.5", "--legit", "1", "--quiet"],
        env={**clean_environ(), "FLOODGATE_SMTP_LISTEN": "10.0.1.11:2525",
             "FLOODGATE_DATA_DIR": str(tmp_path / "var")},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )  # fmt: skip
    # The settings' 10.0.1.11 would need --allow-remote; the given loopback target won.
    assert "outside loopback" not in result.stderr, result.stderr


# What a receiver never needs: the terminal UI and HTTP client (top, block), plots (flood),
# the browser driver (tests) and the API's server stack.
NOT_FOR_A_RECEIVER = ("rich", "httpx", "matplotlib", "selenium", "fastapi", "uvicorn", "starlette")


def ready(receiver: ServiceProcess) -> bool:
    return httpx.get(f"{receiver.http_url}/readyz", timeout=5).status_code == 200


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_receiver_imports_no_terminal_http_plot_browser_or_api_library(
    store_env: dict[str, str], tmp_path: Path, workers: str
) -> None:
    # Python's own import log (-X importtime) of the real `floodgate receiver`, its workers
    # too, through start-up and one message.
    env = {**store_env, "FLOODGATE_WORKERS": workers, "PYTHONPROFILEIMPORTTIME": "1"}
    receiver = start_service("receiver", env, tmp_path)
    try:
        # Healthy is the gate; ready is every worker up (a busy host takes a while).
        assert wait_for(lambda: ready(receiver), timeout=60), receiver.log()[-3000:]
        client = RawClient(receiver.host, receiver.port, timeout=30)
        client.hello()
        assert send_message(client, "a@example.org", ["lean@mx.test"], b"x\r\n").code == 250
        client.cmd("QUIT")
    finally:
        assert receiver.stop() == 0
    imports = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", receiver.log(), re.M)
    imported = set(imports)
    assert {"floodgate.cli", "floodgate.receiver_app", "receiver.runtime.host"} <= imported
    # Each process logs its own imports: the host, and each worker process (which runs
    # floodgate.worker_app as __main__, importing the receiver's settings from there).
    processes = 1 if workers == "1" else 1 + int(workers)
    assert imports.count("floodgate.receiver_app") == processes
    heavy = sorted(name for name in imported if name.split(".")[0] in NOT_FOR_A_RECEIVER)
    assert heavy == []
