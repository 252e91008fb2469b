"""README's "Try it on one machine": every recipe run exactly as written.

A recipe is the `sh` block after a `<!-- recipe: NAME -->` marker. It runs with `sh -e`
(a failing step fails the test), with the environment activated as README asks (.venv/bin
first on PATH) and as if from the checkout (PYTHONPATH: `python -m tests.support...`
finds it), in a directory of its own (its `var/` is not the checkout's) and in a network
namespace of its own: the recipe's fixed ports (2525, 8025, 8026, 5300 on 127.0.0.1) are
private to it, so it meets nothing else on this machine and no packet leaves. Whatever it
leaves running is ended by pid when the namespace goes (tests/support/netns.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from receiver.delivery.spool import segment_paths
from tests.support import netns
from tests.support.processes import clean_environ

REPO = Path(__file__).resolve().parents[1]
RECIPE = re.compile(r"<!-- recipe: (\w+) -->\n```sh\n(.*?)```", re.S)
WITHIN = 120.0


def recipes() -> dict[str, str]:
    found = dict(RECIPE.findall((REPO / "README.md").read_text()))
    assert found, "README has lost its recipes"
    return found


def run(name: str, workdir: Path) -> str:
    """The recipe's output (its exit status must be 0)."""
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"a recipe runs in a network namespace of its own: {reason}")
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (README's recipes use it)")
    env = clean_environ()
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env["VIRTUAL_ENV"] = str(REPO / ".venv")
    env["PYTHONPATH"] = str(REPO)
    output = workdir / "recipe.out"
    with netns.Lan() as lan, open(output, "wb") as out:
        host = lan.host("recipe")
        process = host.popen(
            ["sh", "-e", "-c", recipes()[name]],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            status = process.wait(WITHIN)
        except subprocess.TimeoutExpired:
            status = None
        # A recipe stops what it starts (the sweep when the namespace goes is the net).
        left = netns.inside(host.netns)
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = netns.inside(host.netns)
    said = output.read_text(errors="replace")
    logs = "".join(
        f"\n--- {path.name}\n{path.read_text(errors='replace')[-2000:]}"
        for path in sorted(workdir.glob("*.log"))
    )
    assert status == 0, f"recipe {name}: exit {status}\n{said}{logs}"
    assert not left, f"recipe {name} left processes running: {left}"
    return said


def test_every_recipe_is_tested() -> None:
    assert set(recipes()) == {"spool", "screening"}


def test_the_spool_recipe(tmp_path: Path) -> None:
    said = run("spool", tmp_path)
    assert "spooling: 1 messages" in said, said  # /readyz while the store is away
    assert "spool: 1 messages" in said, said  # floodgate spool status
    stored = json.loads(said.strip().splitlines()[-1])["messages"]
    assert [(m["to"], m["subject"]) for m in stored] == [("spool@mx.test", "spooled")]
    assert segment_paths(tmp_path / "var" / "spool") == []  # all replayed


def test_the_screening_and_verdicts_recipe(tmp_path: Path) -> None:
    said = run("screening", tmp_path)
    assert "521 5.7.1 Service unavailable; client [127.0.0.2] blocked using list.example" in said
    verdicts = json.loads(said[said.rindex("\n{\n") :])
    assert verdicts["spf"]["result"] == "pass"
    assert [d["result"] for d in verdicts["dkim"]] == ["pass"]
    assert verdicts["dmarc"]["result"] == "pass" and verdicts["dmarc"]["policy"] == "reject"
