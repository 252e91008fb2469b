"""What can be validated here without the production hosts: HAProxy's own check, systemd's
own verifier, the compose file's structure (and `docker compose config` when available)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


def environment_file(path: Path) -> dict[str, str]:
    """Variables as systemd's EnvironmentFile= reads them: KEY=VALUE lines; blank lines and
    lines starting with # or ; ignored; a value in matching quotes loses them; nothing
    after a value is a comment. Anything else fails here, as it would fail there."""
    variables = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        assert sep and key.strip().isidentifier(), f"systemd cannot read: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        variables[key.strip()] = value
    return variables


def unit_environment(unit: Path) -> dict[str, str]:
    """The unit's own `Environment=KEY=VALUE` lines (one assignment each, as ours are)."""
    lines = unit.read_text().splitlines()
    pairs = [line.removeprefix("Environment=") for line in lines if line.startswith("Environment=")]
    return dict(pair.split("=", 1) for pair in pairs)


@pytest.mark.parametrize("unit", ["floodgate-receiver.service", "floodgate-api.service"])
def test_env_example_passes_the_settings_check_as_each_unit_loads_it(
    unit: str, tmp_path: Path
) -> None:
    """deploy/README copies the example to /etc/floodgate/floodgate.env for the units: the
    process each unit starts must accept it (a refused setting exits 2, and systemd's
    Restart=always would restart it for ever)."""
    settings = environment_file(DEPLOY / "floodgate.env.example")
    uri = settings["FLOODGATE_MONGODB_URI"]
    assert "replicaSet=rs0" in uri and uri.count("mongo") >= 4  # scheme + three members
    assert "FLOODGATE_DB_PASSWORD" not in settings  # credentials live in the URI
    environ = {**settings, **unit_environment(DEPLOY / "systemd" / unit)}
    environ["FLOODGATE_DATA_DIR"] = str(tmp_path / "state")  # systemd's StateDirectory
    check = "from floodgate.settings import load; load()"
    result = subprocess.run(
        [sys.executable, "-c", check],
        env={"PATH": os.environ["PATH"], **environ},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_the_init_script_takes_the_application_password_from_the_uri() -> None:
    script = (DEPLOY / "mongo" / "init-replica-set.js").read_text()
    assert "FLOODGATE_DB_PASSWORD" not in script and "FLOODGATE_MONGODB_URI" in script


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


def test_production_install_has_no_dev_tools_and_the_runbook_uses_it() -> None:
    """`make install` puts the project and its runtime dependencies in .venv, never the
    [dev] extras (pytest, mypy, selenium, ...) that `make setup` adds."""
    dry = subprocess.run(
        ["make", "-n", "install"], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert dry.returncode == 0, dry.stderr
    installs = [line for line in dry.stdout.splitlines() if "pip install" in line]
    assert installs and not any("[dev]" in line or " -e " in line for line in installs)
    runbook = (DEPLOY / "README.md").read_text()
    assert "make install" in runbook and "make setup" not in runbook
    for unit in (DEPLOY / "systemd").glob("*.service"):
        assert "ExecStart=/opt/floodgate/.venv/bin/floodgate " in unit.read_text()
