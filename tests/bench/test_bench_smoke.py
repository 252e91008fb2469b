"""`python -m bench` keeps working: a quick run of the cheapest suite writes both reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.processes import clean_environ


def test_quick_abuse_suite_writes_json_and_markdown(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "abuse", "--quick", "--out", str(tmp_path)],
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert report["quick"] is True and set(report["suites"]) == {"abuse"}
    idle = report["suites"]["abuse"]["idle"]
    assert idle["sockets"] == 2000 and idle["held_during_legit"] == 2000
    assert 0 < idle["rss_per_socket_kb"] < 100
    assert report["suites"]["abuse"]["refusal"]["refusals"] > 0
    header = report["suites"]["abuse"]["header"]
    assert header["reply"].startswith("552 5.3.4") and header["probes"] > 0
    assert header["banner_max_ms"] > 0
    markdown = (tmp_path / "latest.md").read_text()
    assert "KB per socket" in markdown and "Crafted header" in markdown


def test_unknown_suite_is_refused() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "nonsense"],
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "unknown suite nonsense" in result.stderr


def test_quick_push_suite_reports_latency_and_subscribers(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "push", "--quick", "--out", str(tmp_path)],
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    push = json.loads((tmp_path / "latest.json").read_text())["suites"]["push"]
    assert push["latency"]["messages"] == 20 and 0 < push["latency"]["p99_ms"] < 10_000
    assert push["subscribers"]["held"] == 100 and push["subscribers"]["next_status"] == 200


def test_quick_screen_suite_reports_banner_latency_lookups_and_cpu(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "screen", "--quick", "--out", str(tmp_path)],
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    screen = json.loads((tmp_path / "latest.json").read_text())["suites"]["screen"]
    for mode in ("off", "cold", "warm"):
        assert 0 < screen["banner_ms"][mode]["p50"] <= screen["banner_ms"][mode]["p99"] < 1000
    assert screen["lookups"]["per_s"] > 0 and screen["cpu_us"]["screened"] > 0
    assert "Screening before the banner" in (tmp_path / "latest.md").read_text()


def test_quick_auth_suite_reports_time_to_250_and_cpu_with_the_checks_on_and_off(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "auth", "--quick", "--out", str(tmp_path)],
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    auth = json.loads((tmp_path / "latest.json").read_text())["suites"]["auth"]
    for mode in ("off", "cold", "warm", "off_paced", "warm_paced"):
        assert 0 < auth[mode]["p50_ms"] <= auth[mode]["p99_ms"] < 1000
    # Signed every one, verified every one (cold, warm, warm at the fixed rate); the silent
    # resolver's messages were held for the deadline, not longer, and none was refused.
    assert auth["dkim_pass"] == auth["warmup"] + 3 * auth["messages"]
    assert auth["spf_temperror"] == auth["silent_messages"]
    assert auth["deadline_s"] * 1000 <= auth["silent"]["p99_ms"] < auth["deadline_s"] * 1000 + 500
    assert auth["warm"]["worker_cpu_us"] > 0
    assert "Authentication verdicts" in (tmp_path / "latest.md").read_text()


def test_quick_attacks_suite_measures_a_bystander_alone_and_during_each_attack(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "attacks", "--quick", "--out", str(tmp_path)],
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    # Exit status 0: no bystander was refused and no receiver died (a quick run's p99 of a
    # dozen samples is reported, not judged).
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    attacks = json.loads((tmp_path / "latest.json").read_text())["suites"]["attacks"]
    rows = {row["attack"]: row for row in attacks["rows"]}
    assert set(rows) == {"S1", "S2", "S3", "S4", "S5", "S8", "S10"}  # no control
    for row in rows.values():
        assert row["attacker"]["actions"] > 0  # the attack really ran beside the bystander
        for phase in ("alone", "attacked"):
            assert row[phase]["samples"] == attacks["samples"] and row[phase]["errors"] == 0
            for part in ("banner", "stored"):
                assert 0 < row[phase][part]["p50"] <= row[phase][part]["p99"] < 5000
    assert "under attack" in (tmp_path / "latest.md").read_text()


def test_the_attacks_goal_is_twice_alone_plus_a_floor_for_sub_millisecond_noise() -> None:
    from bench.attacks import within

    assert within(1.0, 7.0) and not within(1.0, 7.1)  # 2 x 1 ms + 5 ms
    assert within(40.0, 85.0) and not within(40.0, 85.5)  # 2 x 40 ms + 5 ms
