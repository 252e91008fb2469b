"""What can be validated here without the production hosts: HAProxy's own check, systemd's
own verifier, the compose file's structure (and `docker compose config` when available)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from floodgate.settings import Settings
from tests.support import netns, systemd
from tests.support.fleet import ENV_FILE, certificate, env_file, placeholders
from tests.support.processes import HAPROXY_MISSING, free_port
from tests.support.systemd import Prepared, Root, Unit, environment_file

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REPO = DEPLOY.parent


def test_haproxy_config_is_valid_once_filled_in_and_refuses_to_start_without() -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip(HAPROXY_MISSING)

    def check(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")],
            env={"PATH": os.environ["PATH"], **env},
            capture_output=True,
            text=True,
            timeout=30,
        )

    two = {"MX1_ADDRESS": "10.0.1.11", "MX2_ADDRESS": "10.0.2.11"}
    for env in (two, {**two, "MX3_ADDRESS": "10.0.3.11"}):
        result = check(**env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Configuration file is valid" in result.stdout + result.stderr
    # Not filled in: HAProxy says which and does not start (rather than check ":2525").
    result = check(MX1_ADDRESS="10.0.1.11")
    assert result.returncode != 0 and "MX2_ADDRESS is not set" in result.stderr
    text = (DEPLOY / "haproxy.cfg").read_text()
    assert "send-proxy-v2" in text and "httpchk GET /readyz" in text and "mode tcp" in text


def test_systemd_units_verify_and_are_hardened(tmp_path: Path) -> None:
    units = sorted((DEPLOY / "systemd").glob("*.service"))
    assert [u.name for u in units] == [
        "floodgate-api.service",
        "floodgate-receiver.service",
        "floodgate-webhooks.service",
    ]
    for unit in units:
        text = unit.read_text()
        for setting in (
            "DynamicUser=yes",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "StateDirectory=",
            "EnvironmentFile=/etc/floodgate/floodgate.env",
            "RestartPreventExitStatus=2",  # a setting that can never work: no restart loop
        ):
            assert setting in text, (unit.name, setting)
        # The env file wins over Environment=, and says where to listen: a unit that set it
        # too would only mislead its reader.
        own = Unit.read(unit, dropins=()).values("Environment")
        assert not any("_LISTEN=" in line for line in own), unit.name
    receiver = (DEPLOY / "systemd" / "floodgate-receiver.service").read_text()
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in receiver
    nofile = int(receiver.split("LimitNOFILE=")[1].split()[0])
    assert nofile >= 10_000 + 1024  # the default FLOODGATE_MAX_CONNECTIONS plus the pool

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not available on this machine")
    # Verify copies (with the drop-in beside, as installed) whose ExecStart points at this
    # checkout's real executable; systemd-analyze checks that it exists.
    shutil.copytree(DEPLOY / "systemd", tmp_path / "system")
    rendered = []
    for unit in sorted((tmp_path / "system").glob("*.service")):
        unit.write_text(unit.read_text().replace("/opt/floodgate/.venv", str(REPO / ".venv")))
        rendered.append(str(unit))
    result = subprocess.run(
        [analyze, "verify", "--man=no", *rendered], capture_output=True, text=True, timeout=60
    )
    problems = [
        line for line in (result.stdout + result.stderr).splitlines() if str(tmp_path) in line
    ]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
    dropin = (DEPLOY / "systemd" / "floodgate-receiver.service.d" / "tls.conf").read_text()
    assert "LoadCredential=" in dropin and "FLOODGATE_TLS_KEY=%d/" in dropin


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
    example = environment_file(DEPLOY / "floodgate.env.example")
    assert example["FLOODGATE_PROXY_PROTOCOL"] == "1"  # the env_file's: HAProxy in front
    for name in receivers:
        env = services[name]["environment"]
        assert "FLOODGATE_PROXY_PROTOCOL" not in env
        assert env["FLOODGATE_TRUSTED_PROXIES"] == f"{haproxy_ip}/32"
        assert services[name]["command"] == ["receiver"]
        assert services[name]["depends_on"]["mongo-init"]["condition"] == (
            "service_completed_successfully"
        )
    # Each receiver listens on its own address, where HAProxy checks it (not 0.0.0.0, which
    # would hide a listener in the wrong place), and HAProxy names exactly those.
    addresses = set()
    for name in receivers:
        own = services[name]["networks"]["backend"]["ipv4_address"]
        env = services[name]["environment"]
        assert env["FLOODGATE_SMTP_LISTEN"] == f"{own}:2525"
        assert env["FLOODGATE_RECEIVER_HTTP_LISTEN"] == f"{own}:8026"
        addresses.add(own)
    haproxy_env = services["haproxy"]["environment"]
    assert {haproxy_env["MX1_ADDRESS"], haproxy_env["MX2_ADDRESS"]} == addresses
    assert services["api"]["command"] == ["api"]
    assert services["webhooks"]["command"] == ["webhooks"]
    # Each Floodgate container is a host: it names its own address for every listener the
    # env file leaves to THIS_HOST_ADDRESS (a placeholder left would stop it at start).
    listeners = {key for key, value in example.items() if "THIS_HOST_ADDRESS" in value}
    for name in [*receivers, "api", "webhooks"]:
        assert listeners <= set(services[name]["environment"]), name
    script = (DEPLOY / "mongo" / "init-replica-set.js").read_text()
    assert "rs.initiate" in script and "NotYetInitialized" in script  # idempotent


UNITS = ["floodgate-receiver.service", "floodgate-api.service", "floodgate-webhooks.service"]
FILLED = {
    "THIS_HOST_ADDRESS": "10.0.1.11",
    "THIS_HOST_NAME": "mx1.example.net",
    "HAPROXY_ADDRESSES": "10.0.1.11,10.0.2.11",
}
# Values of the example that are the deployment's, not defaults: the store, the domains,
# the host, the secrets, the listeners, HAProxy in front.
DEPLOYMENT = {
    "FLOODGATE_MONGODB_URI",
    "FLOODGATE_DOMAINS",
    "FLOODGATE_HOSTNAME",
    "FLOODGATE_ADMIN_TOKEN",
    "FLOODGATE_SMTP_LISTEN",
    "FLOODGATE_RECEIVER_HTTP_LISTEN",
    "FLOODGATE_API_LISTEN",
    "FLOODGATE_WEBHOOKS_HTTP_LISTEN",
    "FLOODGATE_PROXY_PROTOCOL",
    "FLOODGATE_TRUSTED_PROXIES",
}


def _load(environ: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from floodgate.settings import load; load()"],
        env={"PATH": os.environ["PATH"], **environ},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("unit", UNITS)
def test_env_example_filled_in_passes_the_settings_check_as_each_unit_loads_it(
    unit: str, tmp_path: Path
) -> None:
    """deploy/README copies the example to /etc/floodgate/floodgate.env and fills in its
    placeholders: the process each unit starts, with the environment systemd gives it,
    must accept it. As shipped, it must name every placeholder left and exit 2."""
    with systemd.host_root() as root:
        _filled_and_shipped(unit, root, tmp_path)


def _filled_and_shipped(unit: str, root: Root, tmp_path: Path) -> None:
    shipped = environment_file(DEPLOY / "floodgate.env.example")
    uri = shipped["FLOODGATE_MONGODB_URI"]
    assert "replicaSet=rs0" in uri and uri.count("mongo") >= 4  # scheme + three members
    root.write(ENV_FILE, env_file(FILLED, "mongodb://10.0.3.11:27017/", "t" * 32))
    environ = Prepared(Unit.read(DEPLOY / "systemd" / unit, dropins=()), root).environment
    assert environ["FLOODGATE_DATA_DIR"] == str(root.path(f"/var/lib/{unit[:-8]}"))
    result = _load(environ, tmp_path)
    assert result.returncode == 0 and result.stderr == "", result.stderr

    # As shipped: the unit's own process (run as systemd would) says which and stops.
    root.write(ENV_FILE, (DEPLOY / "floodgate.env.example").read_text())
    service = systemd.start(Unit.read(DEPLOY / "systemd" / unit, dropins=()), root)
    assert service.process.wait(60) == 2
    assert "Traceback" not in service.log()
    named = {line.split("=")[0] for line in service.log().splitlines()}
    assert named == {
        "floodgate: FLOODGATE_HOSTNAME",
        "floodgate: FLOODGATE_SMTP_LISTEN",
        "floodgate: FLOODGATE_RECEIVER_HTTP_LISTEN",
        "floodgate: FLOODGATE_API_LISTEN",
        "floodgate: FLOODGATE_WEBHOOKS_HTTP_LISTEN",
        "floodgate: FLOODGATE_TRUSTED_PROXIES",
    }, service.log()


def test_a_root_only_key_named_in_the_env_file_stops_the_receiver_once(tmp_path: Path) -> None:
    """The hardened receiver runs as a user of its own: a key only root may read, named
    in the env file, cannot be loaded. It must stop at start with one line naming it and
    exit 2, which the unit's RestartPreventExitStatus= keeps from a restart loop; the
    tls.conf drop-in (LoadCredential=) is the way in, as tests/deploy/test_fleet.py shows."""
    unit = Unit.read(DEPLOY / "systemd" / "floodgate-receiver.service", dropins=())
    assert unit.values("RestartPreventExitStatus") == ["2"]
    with systemd.host_root() as root:
        cert, key = certificate("mx1.example.net")
        root.write("/etc/floodgate/tls/cert.pem", cert.decode())
        root.write("/etc/floodgate/tls/key.pem", key.decode())  # 0600, root's
        text = env_file(FILLED, "mongodb://10.0.3.11:27017/", "t" * 32)
        text += "FLOODGATE_TLS_CERT=/etc/floodgate/tls/cert.pem\n"
        text += "FLOODGATE_TLS_KEY=/etc/floodgate/tls/key.pem\n"
        root.write(ENV_FILE, text)
        service = systemd.start(unit, root)
        assert service.process.wait(60) == 2
        [line] = service.log().strip().splitlines()
        assert line.startswith("floodgate receiver: cannot use the TLS certificate "), line
        assert "Permission denied" in line, line


def test_a_store_that_cannot_be_reached_is_named_by_the_units_readyz_and_logs(
    tmp_path: Path,
) -> None:
    """A wrong store URI in the env file: the receiver unit (two workers, as a dedicated
    host sets) still opens, and its /readyz names the store as the cause, not the lists
    that cannot sync from it, never `inf`; every worker's log line says which worker."""
    address = f"127.{secrets.randbelow(200) + 20}.{secrets.randbelow(250) + 1}.11"
    unit = Unit.read(DEPLOY / "systemd" / "floodgate-receiver.service", dropins=())
    with systemd.host_root() as root:
        values = {**FILLED, "THIS_HOST_ADDRESS": address}
        text = env_file(values, f"mongodb://127.0.0.1:{free_port()}/?directConnection=true", "t")
        root.write(ENV_FILE, text.replace("FLOODGATE_WORKERS=1\n", "FLOODGATE_WORKERS=2\n"))
        service = systemd.start(unit, root)
        try:
            reason = ""
            deadline = time.monotonic() + 60
            while "refused" not in reason:
                assert service.process.poll() is None, service.log()
                assert time.monotonic() < deadline, (reason, service.log()[-3000:])
                time.sleep(0.5)
                try:
                    answer = httpx.get(f"http://{address}:8026/readyz", timeout=2)
                except httpx.HTTPError:
                    continue
                reason = answer.text.strip()
            assert answer.status_code == 503
            assert reason.startswith("store not taking writes: refused"), reason  # the cause
            assert "inf" not in reason, reason
        finally:
            netns.end(service.process)
        # Each worker process judges the store itself, and says which worker it is.
        down = [line for line in service.log().splitlines() if "event=store_down" in line]
        assert {line.split(" worker=")[1].split()[0] for line in down} == {"w1", "w2"}, down


@pytest.mark.parametrize("unit", UNITS)
def test_an_address_not_up_yet_exits_1_so_systemd_retries(unit: str) -> None:
    """The units listen on the host's private address, which at boot may come up after
    them: that is exit 1, which Restart= retries, not 2, which RestartPreventExitStatus=
    leaves stopped for good."""
    with systemd.host_root() as root:
        values = {**FILLED, "THIS_HOST_ADDRESS": "192.0.2.55"}  # TEST-NET-1: not ours
        root.write(ENV_FILE, env_file(values, "mongodb://127.0.0.1:1/", "t" * 32))
        service = systemd.start(Unit.read(DEPLOY / "systemd" / unit, dropins=()), root)
        assert service.process.wait(60) == 1, service.log()
        said = [line for line in service.log().splitlines() if "192.0.2.55" in line]
        assert said and "Traceback" not in service.log(), service.log()


def test_env_example_carries_the_readme_defaults_with_a_comment_per_value() -> None:
    """An operator copies the example and changes what the deployment needs: every other
    value must be the default the README documents (a 10 here once throttled the big
    senders), each with a comment saying what it does, and none the units set themselves
    (the file would win over the unit)."""
    lines = (DEPLOY / "floodgate.env.example").read_text().splitlines()
    values = environment_file(DEPLOY / "floodgate.env.example")
    defaults = Settings.model_fields
    for number, line in enumerate(lines):
        if not line or line.startswith("#"):
            continue
        key = line.split("=", 1)[0]
        assert lines[number - 1].startswith("# "), f"no comment says what {key} does"
        assert key.startswith("FLOODGATE_"), key
        field = key.removeprefix("FLOODGATE_").lower()
        assert field in defaults, key
        if key in DEPLOYMENT:
            continue
        given = Settings.model_validate({field: values[key]})
        assert getattr(given, field) == defaults[field].default, (key, values[key])
    for unit in (DEPLOY / "systemd").glob("*.service"):
        own = Unit.read(unit, dropins=()).values("Environment")
        assert not {word.split("=")[0] for word in own} & set(values), unit.name


def test_every_placeholder_is_documented_and_used() -> None:
    """The words deploy/README tells the operator to fill in are the ones the files have."""
    documented = set(placeholders())
    files = [
        DEPLOY / "floodgate.env.example",
        DEPLOY / "haproxy.cfg",
        DEPLOY / "prometheus" / "prometheus.yml",
        *(DEPLOY / "systemd").rglob("*.service"),
        *(DEPLOY / "systemd").rglob("*.conf"),
    ]
    words = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_(?:ADDRESS|ADDRESSES|NAME)\b")
    found = {word for path in files for word in words.findall(path.read_text())}
    assert found == documented, (found, documented)


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
