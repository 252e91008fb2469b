"""The flood tool against the real receiver process: each scenario meets the limits it should.

The tool runs as a real subprocess (`python -m floodgate flood ...`) with short durations.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from flood.cli import resolve_target
from flood.scenarios import Sources
from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.support.metrics import sample
from tests.support.processes import ServiceProcess, clean_environ
from tests.support.smtp import wait_for

QUIET = {"autoban_threshold": "0"}


def flood(
    receiver: ServiceProcess | None, tmp_path: Path, *args: str, timeout: float = 60
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    report = tmp_path / f"report-{time.monotonic_ns()}.json"
    target = ["--target", f"{receiver.host}:{receiver.port}"] if receiver else []
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "floodgate",
            "flood",
            "--quiet",
            "--json",
            str(report),
            *target,
            *args,
        ],
        env=clean_environ(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
    )
    data = json.loads(report.read_text()) if report.exists() else None
    return result, data


def adds_up(report: dict[str, Any]) -> None:
    for name, scenario in report["scenarios"].items():
        assert sum(scenario["outcomes"].values()) == scenario["attempts"], name


def test_idle_beyond_the_per_ip_cap_sees_421(make_receiver: ServiceFactory, tmp_path: Path) -> None:
    receiver = make_receiver(max_connections_per_ip="3", **QUIET)
    result, report = flood(receiver, tmp_path, "--idle", "20", "--idle-ips", "2", "--duration", "3")
    assert result.returncode == 0, result.stderr
    assert report is not None
    idle = report["scenarios"]["idle"]
    assert idle["outcomes"] == {"220": 6, "421 4.7.0": 14}
    assert idle["notes"] == {"held to the end": 6}
    adds_up(report)
    assert "421 4.7.0" in result.stdout  # the table names the reply codes


def test_message_flood_meets_the_rate_limit_while_legit_mail_flows(
    make_receiver: ServiceFactory,
    tmp_path: Path,
    mongo: MongoClient[dict[str, Any]],
    db_name: str,
) -> None:
    receiver = make_receiver(message_rate="20", **QUIET)
    result, report = flood(
        receiver,
        tmp_path,
        "--messages",
        "2",
        "--messages-ips",
        "1",
        "--legit",
        "4",
        "--legit-ips",
        "4",
        "--duration",
        "4",
        "--require-legit",
        "100",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert report is not None
    adds_up(report)
    flood_outcomes = report["scenarios"]["messages"]["outcomes"]
    # The bucket's burst of 20, plus one token per 3 s of refill, then refused.
    assert 20 <= flood_outcomes["250 2.0.0"] <= 22
    assert flood_outcomes["450 4.7.1"] > 0
    legit = report["legit"]
    assert legit["success_pct"] == 100.0 and legit["sent"] >= 12
    assert 0 < legit["latency_ms"]["p50"] <= legit["latency_ms"]["p99"]
    # Every 250 the tool counted is a message the store really holds.
    stored = mongo[db_name]["messages"].count_documents({})
    assert stored == flood_outcomes["250 2.0.0"] + legit["accepted"]


def test_connection_churn_meets_the_connection_rate(
    make_receiver: ServiceFactory, tmp_path: Path
) -> None:
    receiver = make_receiver(connection_rate="30", **QUIET)
    result, report = flood(
        receiver, tmp_path, "--connect", "2", "--connect-ips", "1", "--duration", "2"
    )
    assert result.returncode == 0, result.stderr
    assert report is not None
    outcomes = report["scenarios"]["connect"]["outcomes"]
    assert 30 <= outcomes["220"] <= 31 and outcomes["421 4.7.0"] > 0  # burst + refill
    adds_up(report)


def test_slowloris_is_closed_by_the_deadlines(
    make_receiver: ServiceFactory, tmp_path: Path
) -> None:
    receiver = make_receiver(idle_timeout="1", session_timeout="2", **QUIET)
    result, report = flood(
        receiver,
        tmp_path,
        "--slowloris",
        "3",
        "--slowloris-interval",
        "0.2",
        "--slowloris-phase",
        "command",
        "--duration",
        "6",
    )
    assert result.returncode == 0, result.stderr
    assert report is not None
    assert report["scenarios"]["slowloris"]["outcomes"] == {"421 4.4.2": 3}


def test_json_schema_plot_and_require_legit(make_receiver: ServiceFactory, tmp_path: Path) -> None:
    receiver = make_receiver(domains="elsewhere.test", **QUIET)  # every RCPT gets 550
    plot = tmp_path / "run.png"
    result, report = flood(
        receiver,
        tmp_path,
        "--legit",
        "5",
        "--duration",
        "2",
        "--require-legit",
        "50",
        "--plot",
        str(plot),
    )
    assert result.returncode == 1 and "below the required 50.0%" in result.stderr
    assert report is not None
    assert set(report) == {
        "schema",
        "target",
        "started_at",
        "duration_s",
        "interrupted",
        "settings",
        "scenarios",
        "legit",
        "timeline",
        "bans",
    }
    assert report["schema"] == "floodgate.flood/1"
    # No admin token where this runs: the ban report says it did not look.
    assert report["bans"] == {"checked": False, "note": "no admin token: bans not checked"}
    assert set(report["legit"]) == {"sent", "accepted", "success_pct", "latency_ms"}
    assert report["legit"]["success_pct"] == 0.0
    assert report["scenarios"]["legit"]["outcomes"] == {"550 5.7.1": report["legit"]["sent"]}
    assert set(report["timeline"][0]) == {
        "t",
        "accepted",
        "refused",
        "legit_ok",
        "legit_failed",
        "legit_p50_ms",
        "legit_p99_ms",
    }
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def open_connections(receiver: ServiceProcess) -> float:
    return sample(receiver.http_url, "floodgate_connections_open")


def test_duration_bounds_the_run_and_ctrl_c_still_reports(
    make_receiver: ServiceFactory, tmp_path: Path
) -> None:
    receiver = make_receiver(max_connections_per_ip="50", **QUIET)
    started = time.monotonic()
    result, report = flood(receiver, tmp_path, "--idle", "40", "--duration", "1.5")
    assert result.returncode == 0 and report is not None
    assert 1.4 <= report["duration_s"] < 4
    assert time.monotonic() - started < 15

    assert wait_for(lambda: open_connections(receiver) == 0, timeout=10)  # the first run's
    out = tmp_path / "interrupted.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "floodgate",
            "flood",
            "--quiet",
            "--json",
            str(out),
            "--target",
            f"{receiver.host}:{receiver.port}",
            "--idle",
            "10",
            "--duration",
            "60",
        ],
        env=clean_environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Under way: the receiver holds every idle socket.
    assert wait_for(lambda: open_connections(receiver) >= 10, timeout=20)
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=20)
    assert process.returncode == 130
    interrupted = json.loads(out.read_text())
    assert interrupted["interrupted"] is True and interrupted["duration_s"] < 20
    assert interrupted["scenarios"]["idle"]["attempts"] == 10
    assert "interrupted" in stdout


def test_remote_targets_are_refused_before_any_packet(tmp_path: Path) -> None:
    for target in ("192.0.2.1:25", "example.com:25", "[2001:db8::1]:25", "10.0.0.1:2525"):
        started = time.monotonic()
        result, report = flood(None, tmp_path, "--target", target, "--legit", "1")
        assert result.returncode == 2, target
        assert "--allow-remote" in result.stderr and report is None
        assert time.monotonic() - started < 10
    assert resolve_target("localhost:2525", False) == ("127.0.0.1", 2525, True)
    assert resolve_target("[::1]:25", False) == ("::1", 25, True)
    assert resolve_target("127.9.9.9:25", False)[2] is True
    assert resolve_target("192.0.2.1:25", True) == ("192.0.2.1", 25, False)


def test_sources_spread_over_consecutive_addresses() -> None:
    assert Sources("127.0.10.254", 4).addresses() == [
        "127.0.10.254",
        "127.0.10.255",
        "127.0.11.0",
        "127.0.11.1",
    ]


def test_allowlisted_legit_senders_pass_a_rate_that_throttles_the_others(
    make_receiver: ServiceFactory, make_api: ServiceFactory, tmp_path: Path
) -> None:
    receiver = make_receiver(message_rate="2", **QUIET)
    api = make_api()
    legit = ("--legit", "10", "--legit-ips", "1", "--duration", "2")
    result, plain = flood(receiver, tmp_path, *legit)
    assert result.returncode == 0 and plain is not None, result.stderr
    assert "450 4.7.1" in plain["scenarios"]["legit"]["outcomes"]  # throttled as anyone
    token = ("--api", api.http_url, "--admin-token", ADMIN_TOKEN)
    result, allowed = flood(receiver, tmp_path, *legit, "--legit-allowlisted", *token)
    assert result.returncode == 0 and allowed is not None, result.stderr
    outcomes = allowed["scenarios"]["legit"]["outcomes"]
    assert set(outcomes) == {"250 2.0.0"} and outcomes["250 2.0.0"] >= 10, outcomes
    left = httpx.get(
        f"{api.http_url}/v1/allowlist", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ).json()["entries"]
    assert left == []  # removed at the end of the run


def test_a_handshake_flood_leaves_legit_tls_senders_their_250(
    make_receiver: ServiceFactory, tmp_path: Path
) -> None:
    # A handshake budget small enough that the flood fills it: the flood hears 454 (or
    # no STARTTLS offer) while the legit senders, one connection per message, keep
    # delivering, over TLS whenever a handshake slot is free and in clear otherwise.
    receiver = make_receiver(tls_max_handshakes="4", tls_handshake_rate="0", **QUIET)
    result, report = flood(
        receiver,
        tmp_path,
        "--tls-handshakes",
        "12",
        "--tls-ips",
        "4",
        "--legit",
        "5",
        "--legit-tls",
        "--duration",
        "5",
        "--require-legit",
        "100",
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert report is not None
    tls = report["scenarios"]["tls"]["outcomes"]
    assert tls.get("handshake done", 0) > 20, tls
    assert report["legit"]["success_pct"] == 100.0
    assert report["scenarios"]["legit"]["notes"].get("over TLS", 0) > 0
    adds_up(report)


def test_the_report_names_the_bans_it_caused_and_cleanup_removes_only_those(
    make_receiver: ServiceFactory, make_api: ServiceFactory, tmp_path: Path
) -> None:
    # Banned after 50 refused connections, not the default 1,000: a churn of 3 s on a
    # loaded host once made fewer.
    receiver = make_receiver(
        connection_rate="10", autoban_threshold="5", autoban_refusal_threshold="50"
    )
    api = make_api()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    other = {"cidr": "127.0.99.9", "reason": "someone else's", "ttl_seconds": 3600}
    assert httpx.post(f"{api.http_url}/v1/blocklist", json=other, headers=auth).status_code == 201
    args = ["--connect", "2", "--connect-ips", "1", "--duration", "3"]
    api_args = ["--api", api.http_url, "--admin-token", ADMIN_TOKEN]
    result, report = flood(receiver, tmp_path, *args, *api_args, "--cleanup")
    assert result.returncode == 0, result.stderr
    assert report is not None
    assert report["bans"] == {"checked": True, "banned": ["127.0.30.1/32"], "removed": 1}
    assert "auto-banned by the target during this run: 1 of its addresses" in result.stdout
    left = httpx.get(f"{api.http_url}/v1/blocklist", headers=auth).json()["entries"]
    assert [e["cidr"] for e in left] == ["127.0.99.9/32"]


def test_the_help_states_the_incident_presets_real_duration() -> None:
    from flood.cli import PRESETS, build_parser

    seconds = f"{PRESETS['incident']['duration']:.0f}"
    text = " ".join(build_parser().format_help().split())
    assert f"incident preset {seconds})" in text and f"for {seconds} s" in text


def test_follow_up_rows_stay_under_their_own_scenario() -> None:
    from rich.console import Console

    from flood.report import print_report, scenario_rows

    idle = {"attempts": 6, "outcomes": {"connected": 6}, "notes": {"held to the end": 6}}
    rows = scenario_rows("idle", idle)
    assert [r[1] for r in rows] == ["connected", "[b]total[/b]", "[dim]held to the end[/dim]"]
    assert [r[4] for r in rows] == [False, False, True]  # the section ends after the note
    legit = {"attempts": 2, "outcomes": {"accepted": 2}, "notes": {}}
    report: dict[str, Any] = {
        "target": "127.0.0.1:2525",
        "duration_s": 1,
        "scenarios": {"idle": idle, "legit": legit},
        "legit": {"sent": 0},
        "interrupted": False,
    }
    console = Console(record=True, width=100)
    print_report(report, console)
    lines = console.export_text().splitlines()
    note = next(i for i, line in enumerate(lines) if "held to the end" in line)
    # The rule that closes idle's section comes after its note, before legit's rows.
    assert "─" in lines[note + 1] or "━" in lines[note + 1], lines
    assert "legit" in lines[note + 2], lines
