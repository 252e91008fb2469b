"""deploy/prometheus and deploy/grafana: the alert rules and Alertmanager config pass
Prometheus's own tools, the rules' unit tests (one alert per incident, after `for:`) pass,
and every metric the dashboard and rules name is one the code exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from api.app import ApiMetrics
from receiver.door.screen import ScreenMetrics
from receiver.telemetry.metrics import DoorMetrics, WorkerMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
METRIC = re.compile(r"\bfloodgate_[a-z_]+\b")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} missing (Debian: prometheus, prometheus-alertmanager); CI installs it")
    return path


def run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    promtool = tool("promtool")
    assert "SUCCESS: 12 rules found" in run(promtool, "check", "rules", "alerts.yml")
    run(promtool, "test", "rules", "alerts_test.yml")
    run(promtool, "check", "config", "prometheus.yml")


def test_alertmanager_config_groups_and_inhibits() -> None:
    out = run(tool("amtool"), "check-config", "alertmanager.yml")
    assert "2 inhibit rules" in out


def exported() -> set[str]:
    names: set[str] = set()
    screen = CollectorRegistry()
    ScreenMetrics(screen, ("zen.example",))
    registries: list[CollectorRegistry] = [
        DoorMetrics().registry,
        WorkerMetrics().registry,
        ApiMetrics().registry,
        screen,
    ]
    for registry in registries:
        for family in registry.collect():
            names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def test_every_metric_named_exists() -> None:
    names = exported()
    dashboard = json.loads((DEPLOY / "grafana" / "floodgate.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions.append((PROMETHEUS / "alerts.yml").read_text())
    used = {m for expr in expressions for m in METRIC.findall(expr)}
    assert used, "no metric found"
    assert used <= names, sorted(used - names)
    assert len(dashboard["panels"]) >= 12
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
