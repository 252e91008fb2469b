"""What can be validated here without the production hosts: HAProxy's own check, systemd's
own verifier, the compose file's structure (and `docker compose config` when available)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import HAPROXY_MISSING

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REPO = DEPLOY.parent


def test_haproxy_config_is_valid_with_defaults_and_with_test_addresses() -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip(HAPROXY_MISSING)
    for env in ({}, {"SMTP_BIND": "127.0.0.1:2600", "MX1": "127.0.0.1:1", "MX1_CHECK": "2"}):
        result = subprocess.run(
            [haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Configuration file is valid" in result.stdout + result.stderr
    text = (DEPLOY / "haproxy.cfg").read_text()
    assert "send-proxy-v2" in text and "httpchk GET /readyz" in text and "mode tcp" in text


def test_systemd_units_verify_and_are_hardened(tmp_path: Path) -> None:
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert [u.name for u in units] == ["floodgate-api.service", "floodgate-receiver.service"]
    for unit in units:
        text = unit.read_text()
        for setting in (
            "DynamicUser=yes",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "StateDirectory=",
            "EnvironmentFile=/etc/floodgate/floodgate.env",
        ):
            assert setting in text, (unit.name, setting)
    receiver = (DEPLOY / "systemd" / "floodgate-receiver.service").read_text()
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in receiver
    nofile = int(receiver.split("LimitNOFILE=")[1].split()[0])
    assert nofile >= 10_000 + 1024  # the default FLOODGATE_MAX_CONNECTIONS plus the pool

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not available on this machine")
    # Verify copies whose ExecStart points at this checkout's real executable.
    rendered = []
    for unit in units:
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/floodgate/.venv", str(REPO / ".venv")))
        rendered.append(str(copy))
    result = subprocess.run(
        [analyze, "verify", *rendered], capture_output=True, text=True, timeout=60
    )
    problems = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "floodgate" in line and "Documentation" not in line
    ]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def test_compose_describes_a_three_member_replica_set_behind_haproxy() -> None:
    services = compose()["services"]
    members = [name for name in services if name.startswith("mongo") and name[-1].isdigit()]
    assert members == ["mongo1", "mongo2", "mongo3"]
    for name in members:
        command = " ".join(services[name]["entrypoint"])
        assert "--replSet rs0" in command and "--keyFile" in command
        assert services[name]["healthcheck"]["test"]
    init = services["mongo-init"]
    assert init["network_mode"] == "service:mongo1"  # localhost exception for the first user
    assert init["environment"]["RS_MEMBERS"] == "mongo1:27017,mongo2:27017,mongo3:27017"
    assert all(init["depends_on"][m]["condition"] == "service_healthy" for m in members)

    haproxy_ip = services["haproxy"]["networks"]["backend"]["ipv4_address"]
    receivers = [name for name in services if name.startswith("receiver")]
    assert len(receivers) == 2
    for name in receivers:
        env = services[name]["environment"]
        assert env["FLOODGATE_PROXY_PROTOCOL"] == "1"
        assert env["FLOODGATE_TRUSTED_PROXIES"] == f"{haproxy_ip}/32"
        assert services[name]["command"] == ["receiver"]
        assert services[name]["depends_on"]["mongo-init"]["condition"] == (
            "service_completed_successfully"
        )
    backends = {services["haproxy"]["environment"][k].split(":")[0] for k in ("MX1", "MX2")}
    assert backends == set(receivers)
    assert services["api"]["command"] == ["api"]
    script = (DEPLOY / "mongo" / "init-replica-set.js").read_text()
    assert "rs.initiate" in script and "NotYetInitialized" in script  # idempotent


def test_env_example_names_the_whole_replica_set() -> None:
    settings = dict(
        line.split("=", 1)
        for line in (DEPLOY / "floodgate.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    uri = settings["FLOODGATE_MONGODB_URI"]
    assert "replicaSet=rs0" in uri and uri.count("mongo") >= 4  # scheme + three members
    from floodgate.settings import Settings

    Settings(
        **{
            k[len("FLOODGATE_") :].lower(): v
            for k, v in settings.items()
            if k.startswith("FLOODGATE_")
        }
    )


def test_docker_compose_config_when_available(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed on this machine")
    workdir = tmp_path / "deploy"
    shutil.copytree(DEPLOY, workdir)
    shutil.copy(workdir / "floodgate.env.example", workdir / ".env")
    (workdir / "mongo-keyfile").write_text("x" * 64)
    result = subprocess.run(
        [docker, "compose", "-f", str(workdir / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
