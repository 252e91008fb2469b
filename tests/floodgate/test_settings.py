"""Settings are checked in one pass at start-up: every problem reported at once, each named
by its FLOODGATE_ variable, exit 2, no traceback."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from floodgate.receiver_app import auth_workers_per_process, dns_servers, screen_config
from floodgate.settings import Settings, SettingsError, host_name, load
from receiver.limits import DEFAULTS, RANGES, Limits
from tests.support.processes import clean_environ, free_port


def floodgate(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "floodgate", *args],
        env={**clean_environ(), "FLOODGATE_DATA_DIR": str(tmp_path / "var"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def test_every_bad_setting_is_named_once_with_exit_2_and_no_traceback(tmp_path: Path) -> None:
    result = floodgate(
        tmp_path,
        "receiver",
        FLOODGATE_LOG_LEVEL="LOUD",
        FLOODGATE_MAX_CONECTIONS="5",
        FLOODGATE_HOSTNAME="bad host name",
        FLOODGATE_MAX_RECIPIENTS="0",
        FLOODGATE_IDLE_TIMEOUT="soon",
        FLOODGATE_DOMAINS="mx.test,not a domain",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    for variable in (
        "FLOODGATE_LOG_LEVEL='LOUD'",
        "FLOODGATE_MAX_CONECTIONS: not a setting; did you mean FLOODGATE_MAX_CONNECTIONS?",
        "FLOODGATE_HOSTNAME='bad host name'",
        "FLOODGATE_MAX_RECIPIENTS='0'",
        "FLOODGATE_IDLE_TIMEOUT='soon'",
        "FLOODGATE_DOMAINS=",
    ):
        assert sum(variable in line for line in lines) == 1, (variable, lines)
    assert all(line.startswith("floodgate: FLOODGATE_") for line in lines), lines
    assert "greater than or equal to 1" in result.stderr  # the accepted range is said


def test_colliding_listeners_and_an_unwritable_data_dir_are_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = floodgate(
        tmp_path,
        "receiver",
        FLOODGATE_SMTP_LISTEN="127.0.0.1:8025",
        FLOODGATE_DATA_DIR=str(blocker / "var"),
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "FLOODGATE_API_LISTEN='127.0.0.1:8025': the same address as" in result.stderr
    assert f"FLOODGATE_DATA_DIR='{blocker / 'var'}': cannot create" in result.stderr


def test_a_public_inbox_needs_a_read_token(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as refused:
        load({}, public_inbox=True, data_dir=tmp_path)
    assert refused.value.problems == [
        "FLOODGATE_PUBLIC_INBOX=true: the page would carry a token, and only the read token "
        "may be public; set FLOODGATE_READ_TOKEN"
    ]
    assert load({}, public_inbox=True, read_token="r" * 24, data_dir=tmp_path).public_inbox


def test_unknown_toml_keys_get_a_suggestion(tmp_path: Path) -> None:
    config = tmp_path / "floodgate.toml"
    config.write_text('max_conections = 5\ndomains = "mx.test"\n')
    with pytest.raises(SettingsError) as refused:
        load({"FLOODGATE_CONFIG_FILE": str(config)}, config_file=config, data_dir=tmp_path)
    assert refused.value.problems == [
        f"{config}: key 'max_conections' is not a setting; did you mean max_connections?"
    ]


def test_a_toml_file_with_a_typo_and_a_bad_value_reports_both_by_its_keys(
    tmp_path: Path,
) -> None:
    config = tmp_path / "floodgate.toml"
    config.write_text('max_conections = 5\nidle_timeout = -1\ndomains = "mx.test"\n')
    with pytest.raises(SettingsError) as refused:
        load({"FLOODGATE_CONFIG_FILE": str(config)}, config_file=config, data_dir=tmp_path)
    problems = refused.value.problems
    assert problems[0] == (
        f"{config}: key 'max_conections' is not a setting; did you mean max_connections?"
    )
    assert len(problems) == 2 and problems[1].startswith(f"{config}: key 'idle_timeout'=-1: ")
    # A variable wins over the file: then the variable is named.
    environ = {"FLOODGATE_CONFIG_FILE": str(config), "FLOODGATE_IDLE_TIMEOUT": "-2"}
    with pytest.raises(SettingsError) as refused:
        load(environ, config_file=config, data_dir=tmp_path, idle_timeout=-2)
    assert any(p.startswith("FLOODGATE_IDLE_TIMEOUT=-2: ") for p in refused.value.problems)


def test_variables_of_ours_that_are_not_settings_are_allowed(tmp_path: Path) -> None:
    environ = {"FLOODGATE_TEST_MONGODB_URI": "x", "FLOODGATE_INSTALL_TOOLS": "1"}
    assert load(environ, data_dir=tmp_path).data_dir == tmp_path


def test_each_limit_is_declared_once() -> None:
    # Every limit has a setting whose default and range come from receiver/limits.py.
    names = {field.name for field in dataclasses.fields(Limits)}
    assert names == set(RANGES)
    for name in names:
        field = Settings.model_fields[name]
        assert field.default == getattr(DEFAULTS, name)
        bounds = {type(m).__name__: m for m in field.metadata}
        assert bounds["Ge"].ge == RANGES[name][0] and bounds["Le"].le == RANGES[name][1]


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("mx.test", True),
        ("mx1.example.org.", True),
        ("[192.0.2.1]", True),
        ("[IPv6:2001:db8::1]", True),
        ("bad host", False),
        ("-lead.test", False),
        ("a..b", False),
        ("x" * 64 + ".test", False),
        ("under_score.test", False),
    ],
)
def test_host_names(name: str, ok: bool) -> None:
    assert host_name(name) is ok


def test_run_stops_at_once_with_one_line_when_its_api_port_is_taken(tmp_path: Path) -> None:
    taken = free_port()
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        started = time.monotonic()
        result = floodgate(
            tmp_path,
            "run",
            FLOODGATE_API_LISTEN=f"127.0.0.1:{taken}",
            FLOODGATE_SMTP_LISTEN=f"127.0.0.1:{free_port()}",
            FLOODGATE_RECEIVER_HTTP_LISTEN=f"127.0.0.1:{free_port()}",
        )
    assert result.returncode == 2 and time.monotonic() - started < 20
    assert "Floodgate is running" not in result.stdout
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert line == (
        f"floodgate: FLOODGATE_API_LISTEN=127.0.0.1:{taken}: cannot listen there: "
        "Address already in use"
    )


def test_the_readme_documents_exactly_the_settings_that_exist() -> None:
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = set(re.findall(r"^\| `(FLOODGATE_[A-Z0-9_]+)` \|", readme, re.M))
    assert rows == {"FLOODGATE_" + name.upper() for name in Settings.model_fields}


def test_a_postscreen_dnsbl_line_is_taken_as_it_is(tmp_path: Path) -> None:
    settings = load(
        {},
        data_dir=tmp_path,
        dnsbl_sites="zen.example*3, b.example*2, wl.example=127.0.[0..255].[1..3]*-2",
        dnsbl_reply="zen.example=ZEN",
        dns_servers="127.0.0.1:5353, ::1, [::1]:54, 127.0.0.2",
    )
    assert [s.weight for s in settings.dnsbl_site_list] == [3, 2, -2]
    assert settings.dns_server_list == (
        ("127.0.0.1", 5353),
        ("::1", 53),
        ("::1", 54),
        ("127.0.0.2", 53),
    )


def test_bad_screen_settings_are_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        load(
            {},
            data_dir=tmp_path,
            dnsbl_sites="zen.example=127.0.0.300",
            dns_servers="resolver.example:53",  # a name would need a lookup to find it
            dnsbl_action="reject",
        )
    text = str(caught.value)
    for variable in ("FLOODGATE_DNSBL_SITES=", "FLOODGATE_DNS_SERVERS=", "FLOODGATE_DNSBL_ACTION="):
        assert variable in text, text
    unknown = r"FLOODGATE_DNSBL_REPLY=.*not in FLOODGATE_DNSBL_SITES"
    with pytest.raises(SettingsError, match=unknown):
        load({}, data_dir=tmp_path, dnsbl_sites="zen.example", dnsbl_reply="other.example=x")


def test_screening_is_off_by_default_and_then_reads_no_resolver(tmp_path: Path) -> None:
    settings = load({}, data_dir=tmp_path)
    assert not screen_config(settings).active
    assert dns_servers(settings, tmp_path / "absent") == ()
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\n")
    on = load({}, data_dir=tmp_path, reverse_dns=True)
    assert dns_servers(on, conf) == (("127.0.0.53", 53),)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('domains = "mx.test"\nmax_connections = = 5\n', "line 2, column 19"),
        ('domains = "mx.test"\nallowlist = [\n', "line 3, column 1"),  # the end of the file
    ],
)
def test_a_toml_syntax_error_is_one_line_naming_file_line_and_column(
    tmp_path: Path, text: str, where: str
) -> None:
    config = tmp_path / "floodgate.toml"
    config.write_text(text)
    result = floodgate(tmp_path, "receiver", FLOODGATE_CONFIG_FILE=str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"floodgate: {config}: {where}: "), line
    assert line.endswith("(not valid TOML)"), line


def test_an_unreadable_toml_file_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "floodgate.toml"
    config.mkdir()  # exists, cannot be read as a file
    with pytest.raises(SettingsError) as refused:
        load({"FLOODGATE_CONFIG_FILE": str(config)}, config_file=config, data_dir=tmp_path)
    [problem] = refused.value.problems
    assert problem.startswith(f"FLOODGATE_CONFIG_FILE='{config}': cannot read it: "), problem


def test_a_listen_address_must_be_an_address_so_a_placeholder_left_is_named(
    tmp_path: Path,
) -> None:
    """deploy/floodgate.env.example's THIS_HOST_ADDRESS, left in place, stops the process
    at start with one line, instead of a failed lookup at bind and a restart loop."""
    with pytest.raises(SettingsError) as refused:
        load(
            {},
            data_dir=tmp_path,
            smtp_listen="THIS_HOST_ADDRESS:2525",
            receiver_http_listen="localhost:8026",
        )
    assert [p.split(":")[0] for p in refused.value.problems] == [
        "FLOODGATE_SMTP_LISTEN='THIS_HOST_ADDRESS",
        "FLOODGATE_RECEIVER_HTTP_LISTEN='localhost",
    ]
    assert "'THIS_HOST_ADDRESS' is not an IP address" in refused.value.problems[0]
    every = load({}, data_dir=tmp_path, smtp_listen="0.0.0.0:25", api_listen="[::1]:8025")
    assert (every.smtp_listen, every.api_listen) == ("0.0.0.0:25", "[::1]:8025")


def test_verification_workers_default_to_the_cores_the_receiver_processes_share() -> None:
    assert auth_workers_per_process(1, cores=8) == 8
    assert auth_workers_per_process(2, cores=8) == 4
    assert auth_workers_per_process(4, cores=2) == 1  # never none
    assert Settings().auth_workers == 0  # automatic unless set
