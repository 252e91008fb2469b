"""`floodgate run` (what `make run` starts) from an empty data dir: embedded store,
receiver and API come up, STARTTLS is offered with a certificate made on the spot, and a
message sent over it is readable through the API."""

from __future__ import annotations

import smtplib
import subprocess
import sys
import time
from pathlib import Path

import httpx

from floodgate.supervisor import answers
from processes import stop
from tests.support.processes import clean_environ, free_port
from tests.support.smtp import insecure_context


def start_run(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], Path, dict[str, int]]:
    """`floodgate run` in `tmp_path`, each listener on a free loopback port of its own, with
    the settings `env` adds: the process, the file its output goes to, the ports by name."""
    ports = {name: free_port() for name in ("smtp", "api", "health", "hooks")}
    output = tmp_path / "run.out"
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "floodgate", "run"],
            env={
                **clean_environ(),
                "FLOODGATE_DATA_DIR": str(tmp_path / "var"),
                "FLOODGATE_SMTP_LISTEN": f"127.0.0.1:{ports['smtp']}",
                "FLOODGATE_API_LISTEN": f"127.0.0.1:{ports['api']}",
                "FLOODGATE_RECEIVER_HTTP_LISTEN": f"127.0.0.1:{ports['health']}",
                "FLOODGATE_WEBHOOKS_HTTP_LISTEN": f"127.0.0.1:{ports['hooks']}",
                "PYTHONUNBUFFERED": "1",
                **env,
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            start_new_session=True,  # its own process group: `end` can reach its children
        )
    return process, output, ports


def end(process: subprocess.Popen[bytes]) -> None:
    """Stop `run` (SIGTERM), up to 60 s to exit, then SIGKILL to its process group (it and
    the processes it started, which a killed supervisor would leave behind)."""
    stop(process, 60, group=True)


def test_run_offers_starttls_out_of_the_box(tmp_path: Path) -> None:
    process, output, ports = start_run(tmp_path)
    smtp, api = ports["smtp"], ports["api"]
    try:
        deadline = time.monotonic() + 60
        while "Floodgate is running" not in output.read_text():
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.2)
        text = output.read_text()
        certificate = tmp_path / "var" / "tls" / "snakeoil.pem"
        tls = certificate.parent
        assert f"STARTTLS  on, self-signed certificates (RSA, ECDSA) for mx.test in {tls}/" in text
        for made in (certificate, tls / "snakeoil-ecdsa.pem"):
            assert made.stat().st_mode & 0o077 == 0  # the keys are readable by us alone

        with smtplib.SMTP("127.0.0.1", smtp, local_hostname="client.test") as client:
            client.starttls(context=insecure_context())
            client.sendmail("a@sender.example", ["first@mx.test"], b"Subject: hi\r\n\r\nhello\r\n")
        token = (tmp_path / "var" / "admin-token").read_text().strip()
        listing = httpx.get(
            f"http://127.0.0.1:{api}/v1/mailboxes/first@mx.test/messages",
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        [message] = listing["messages"]
        shown = httpx.get(
            f"http://127.0.0.1:{api}/v1/messages/{message['id']}",
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        assert shown["tls"]["version"] == "TLSv1.3"
    finally:
        end(process)


def test_run_told_to_stop_while_it_starts_stops_cleanly(tmp_path: Path) -> None:
    """A script that starts `floodgate run`, does its work as soon as the receiver and API
    answer, and stops it (README's recipes) may stop it before every process is up: that
    is a stop (exit 0), not a failed start-up."""
    # A store that never answers: start-up waits for it for a minute.
    nothing = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
    process, output, ports = start_run(tmp_path, FLOODGATE_MONGODB_URI=nothing)
    try:
        deadline = time.monotonic() + 60
        # The receiver is up (its /healthz answers) while the start-up still waits.
        while not answers(f"http://127.0.0.1:{ports['health']}/healthz"):
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.2)
    finally:
        end(process)
    text = output.read_text()
    assert process.returncode == 0, text
    assert "timed out" not in text and "does not take writes" not in text, text
    assert text.rstrip().endswith("floodgate: stopped"), text
