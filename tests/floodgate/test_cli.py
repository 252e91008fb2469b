"""The command line: every command is there, and none depends on a guarded import (a typo
in our own code must fail at start, never remove a command or a route in silence)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import httpx
import pytest

from floodgate.cli import build_parser
from tests.support.processes import ServiceProcess, start_service
from tests.support.smtp import RawClient, send_message, wait_for

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("floodgate", "receiver", "blocklist", "mailstore", "api", "flood")


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
    imported = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", receiver.log(), re.M))
    assert {"floodgate.cli", "floodgate.receiver_app", "receiver.server"} <= imported
    if workers == "2":
        assert "receiver.worker" in imported  # the workers ran (as __main__)
    heavy = sorted(name for name in imported if name.split(".")[0] in NOT_FOR_A_RECEIVER)
    assert heavy == []
