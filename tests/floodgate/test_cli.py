"""The command line: every command is there, and none depends on a guarded import (a typo
in our own code must fail at start, never remove a command or a route in silence)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from floodgate.cli import build_parser

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
