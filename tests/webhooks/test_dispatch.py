"""Webhooks end to end, with real processes: the module's API and receiver, a real
dispatcher (`floodgate webhooks`), and a loopback endpoint written here that fails, holds
a request past the deadline, redirects, and recovers. The retry schedule is fractions of a
second (a setting), so the whole module takes seconds."""

from __future__ import annotations

import contextlib
import io
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from floodgate import webhook_cli
from floodgate.cli import build_parser
from floodgate.settings import load as load_settings
from tests.conftest import ADMIN_TOKEN
from tests.support.api import AUTH, deliver
from tests.support.metrics import sample
from tests.support.processes import ServiceProcess, start_service
from tests.support.smtp import wait_for
from tests.webhooks.hookserver import HOLD, LATE, hook_server
from tests.webhooks.test_signing import verify

SCHEDULE = "0.1,0.1,0.1,0.1,0.1"  # five retries: an endpoint is disabled after six failures
# Long enough that an endpoint answering at once is answered in time on a loaded host (at
# 1 s, a CI run once counted the 500 as a timeout); the HOLD in the tests below costs it.
ATTEMPT_SECONDS = 3.0
# The shipped unit, whose TimeoutStopSec is how long systemd gives the dispatcher to stop.
UNIT = Path(__file__).resolve().parents[2] / "deploy/systemd/floodgate-webhooks.service"


def unit_stop_seconds() -> float:
    """The unit's TimeoutStopSec, which systemd gives a stop before it kills."""
    found = re.search(r"^TimeoutStopSec=(\d+)$", UNIT.read_text(), re.M)
    assert found is not None, f"{UNIT.name} names no TimeoutStopSec"
    return float(found[1])


MAIL = (
    b"From: shop@example.org\r\nSubject: Confirm your account\r\n\r\n"
    b"Your verification code is 739201.\r\nhttps://shop.example/confirm?t=abc\r\n"
)


class Dispatcher:
    """The module's dispatcher; a test may kill it and start another in its place."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env, self.workdir = env, workdir
        self.service = self._start()

    def restart(self) -> None:
        self.service = self._start()

    def _start(self) -> ServiceProcess:
        service = start_service("webhooks", self.env, self.workdir)
        ready = f"{service.http_url}/readyz"  # its change stream is open
        assert wait_for(lambda: httpx.get(ready).status_code == 200, timeout=20), service.log()
        return service


@pytest.fixture(scope="module")
def dispatcher(
    store_uri: str,
    module_database: str,
    _module_api: ServiceProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Dispatcher]:
    env = {
        "FLOODGATE_MONGODB_URI": store_uri,
        "FLOODGATE_MONGODB_DATABASE": module_database,
        "FLOODGATE_ADMIN_TOKEN": ADMIN_TOKEN,
        "FLOODGATE_WEBHOOK_ALLOW_PRIVATE": "true",  # the endpoint is on loopback
        "FLOODGATE_WEBHOOK_RETRY_SCHEDULE": SCHEDULE,
        "FLOODGATE_WEBHOOK_TIMEOUT": str(ATTEMPT_SECONDS),
        "FLOODGATE_WEBHOOK_API_URL": _module_api.http_url,
    }
    holder = Dispatcher(env, tmp_path_factory.mktemp("hooks"))
    yield holder
    holder.service.stop()


@pytest.fixture
def hooks(
    shared_api: ServiceProcess, shared_receiver: ServiceProcess, dispatcher: Dispatcher
) -> Dispatcher:
    """The module's processes, each test on an emptied store."""
    assert dispatcher.service.alive(), dispatcher.service.log()[-3000:]
    return dispatcher


def register(api: ServiceProcess, url: str, match: str | None) -> dict[str, Any]:
    body = {"url": url, **({"match": match} if match else {})}
    response = httpx.post(f"{api.http_url}/v1/webhooks", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def deliveries(api: ServiceProcess, webhook_id: str) -> list[dict[str, Any]]:
    url = f"{api.http_url}/v1/webhooks/{webhook_id}/deliveries"
    response = httpx.get(url, headers=AUTH)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["deliveries"]
    return found


def settled(api: ServiceProcess, webhook_id: str, state: str) -> dict[str, Any]:
    """The endpoint's one delivery once it is in `state` (waits, bounded)."""

    def done() -> bool:
        found = deliveries(api, webhook_id)
        return bool(found) and found[0]["state"] == state

    assert wait_for(done, timeout=20, interval=0.1), deliveries(api, webhook_id)
    [delivery] = deliveries(api, webhook_id)
    return delivery


def test_a_message_is_posted_once_signed_after_a_failure_a_timeout_and_a_redirect(
    hooks: Dispatcher, shared_api: ServiceProcess, shared_receiver: ServiceProcess
) -> None:
    with hook_server([500, HOLD, 302]) as hook:
        mailbox = "signup-once@mx.test"
        webhook = register(shared_api, hook.url, mailbox)
        assert webhook["secret"].startswith("whsec_") and webhook["match"] == mailbox
        deliver(shared_receiver, "someone-else@mx.test", b"Subject: not for it\r\n\r\nx\r\n")
        message_id = deliver(shared_receiver, "Signup-Once@MX.test", MAIL)
        delivery = settled(shared_api, webhook["id"], "delivered")
        answered = hook.received
    assert delivery["attempts"] == 4 and delivery["last_status"] == 200
    assert delivery["message_id"] == message_id
    # Four requests for one message (the other mailbox's never came), one id throughout.
    assert len(answered) == 4
    assert {r.headers["webhook-id"] for r in answered} == {delivery["id"]}
    for request in answered:
        assert verify(webhook["secret"], request.headers, request.body)
        assert request.headers["host"] == f"localhost:{hook.port}"
    event = json.loads(answered[-1].body)
    data = event["data"]
    assert event["type"] == "message.received"
    assert data["id"] == message_id and data["mailboxes"] == [mailbox]
    assert data["subject"] == "Confirm your account"
    assert [c["code"] for c in data["codes"]] == ["739201"], (data["links_error"], data["links"])
    assert [link["url"] for link in data["links"]] == ["https://shop.example/confirm?t=abc"]
    raw = httpx.get(data["raw_url"], headers=AUTH)
    assert raw.status_code == 200 and MAIL in raw.content
    # The endpoint's health shows the recovery; the metrics count each outcome.
    endpoint = httpx.get(f"{shared_api.http_url}/v1/webhooks/{webhook['id']}", headers=AUTH)
    assert endpoint.json()["failures"] == 0 and endpoint.json()["last_success_at"]
    metrics = hooks.service.http_url
    outcomes = ("http_error", "timeout", "redirect", "delivered")
    counted = {o: sample(metrics, "floodgate_webhook_attempts_total", outcome=o) for o in outcomes}
    assert all(n >= 1 for n in counted.values()), counted


def test_a_delivery_cut_by_killing_the_dispatcher_is_made_after_its_restart(
    hooks: Dispatcher, shared_api: ServiceProcess, shared_receiver: ServiceProcess
) -> None:
    with hook_server([HOLD]) as hook:
        webhook = register(shared_api, hook.url, "mx.test")
        message_id = deliver(shared_receiver, "killed@mx.test", MAIL)
        assert hook.wait(1), hooks.service.log()[-3000:]  # the POST is in flight...
        hooks.service.kill()  # ...when its dispatcher dies (SIGKILL, by PID)
        hooks.restart()
        delivery = settled(shared_api, webhook["id"], "delivered")
        answered = hook.received
    assert len(answered) == 2
    assert {r.headers["webhook-id"] for r in answered} == {delivery["id"]}
    assert json.loads(answered[1].body)["data"]["id"] == message_id
    assert verify(webhook["secret"], answered[1].headers, answered[1].body)


def test_a_dispatcher_stopped_mid_attempt_finishes_it_first_and_nothing_is_sent_twice(
    hooks: Dispatcher, shared_api: ServiceProcess, shared_receiver: ServiceProcess
) -> None:
    with hook_server([LATE]) as hook:
        webhook = register(shared_api, hook.url, "mx.test")
        deliver(shared_receiver, "stopped@mx.test", MAIL)
        assert hook.wait(1), hooks.service.log()[-3000:]  # the POST is in flight...
        hooks.service.process.send_signal(signal.SIGTERM)  # ...when it is told to stop
        time.sleep(0.3)  # the stop has begun: the attempt is what it waits for
        hook.release.set()
        try:
            # Within the unit's TimeoutStopSec (45 s), systemd's bound on a stop.
            exited = hooks.service.process.wait(unit_stop_seconds())
        except subprocess.TimeoutExpired:
            exited = None
        finally:
            log = hooks.service.log()[-3000:]
            hooks.service.stop()  # ended by its PID if it is still there
            hooks.restart()  # the module's next tests have a dispatcher whatever happened
        assert exited == 0, log
        # Recorded before it exited: no lease left to run out, so no one sends it again.
        [delivery] = deliveries(shared_api, webhook["id"])
        answered = len(hook.received)
    assert (delivery["state"], delivery["attempts"], delivery["last_status"]) == (
        "delivered",
        1,
        200,
    )
    assert answered == 1


def test_an_endpoint_that_keeps_failing_is_disabled_and_the_operator_told(
    hooks: Dispatcher, shared_api: ServiceProcess, shared_receiver: ServiceProcess
) -> None:
    with hook_server([], then=503) as hook:
        webhook = register(shared_api, hook.url, None)  # every message
        deliver(shared_receiver, "failing@mx.test", MAIL)
        delivery = settled(shared_api, webhook["id"], "failed")
        url = f"{shared_api.http_url}/v1/webhooks/{webhook['id']}"
        assert wait_for(lambda: httpx.get(url, headers=AUTH).json()["disabled"], timeout=10)
    assert delivery["attempts"] == 6 and delivery["last_error"] == "answered 503"
    endpoint = httpx.get(url, headers=AUTH).json()
    assert endpoint["disabled_reason"].startswith("6 failed attempts in a row")
    assert wait_for(lambda: "event=webhook_disabled" in hooks.service.log(), timeout=5)
    line = next(x for x in hooks.service.log().splitlines() if "event=webhook_disabled" in x)
    assert "level=warning" in line and webhook["id"] in line and "localhost" not in line
    # A disabled endpoint gets nothing new, until the operator enables it again.
    enabled = httpx.post(f"{url}/enable", headers=AUTH)
    assert enabled.status_code == 200 and not enabled.json()["disabled"]
    assert enabled.json()["failures"] == 0


def test_registration_refuses_bad_urls_and_hides_the_secret_afterwards(
    shared_api: ServiceProcess,
) -> None:
    base = f"{shared_api.http_url}/v1/webhooks"
    for body, words in (
        ({"url": "ftp://files.example/in"}, "http:// or https://"),
        ({"url": "http://169.254.169.254/latest"}, "link-local"),
        ({"url": "https://ok.example/in", "match": "not an address@"}, "not an address"),
        ({"url": "https://ok.example/in", "match": "bad_domain!"}, "not a domain"),
    ):
        response = httpx.post(base, json=body, headers=AUTH)
        assert response.status_code == 422 and words in response.json()["error"], response.text
    created = register(shared_api, "https://ok.example/in", "MX.test")
    assert created["match"] == "mx.test"
    listed = httpx.get(base, headers=AUTH).json()["webhooks"]
    assert [w["id"] for w in listed] == [created["id"]] and "secret" not in listed[0]
    assert httpx.delete(f"{base}/{created['id']}", headers=AUTH).status_code == 204
    assert httpx.delete(f"{base}/{created['id']}", headers=AUTH).status_code == 404
    assert httpx.get(f"{base}/wh_0000000000000000/deliveries", headers=AUTH).status_code == 404


def floodgate(*args: str, data_dir: Path) -> tuple[int, str, str]:
    """`floodgate ARGS` run in this process (no interpreter to start): status, out, err."""
    out, err = io.StringIO(), io.StringIO()
    settings = load_settings({}, admin_token=ADMIN_TOKEN, data_dir=data_dir)
    arguments = build_parser().parse_args(list(args))
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = webhook_cli.run(arguments, settings)
    return status, out.getvalue(), err.getvalue()


def test_the_cli_adds_lists_shows_deliveries_and_removes_a_webhook(
    shared_api: ServiceProcess, tmp_path: Path
) -> None:
    api = ["webhook", "--api", shared_api.http_url]
    status, out, err = floodgate(
        *api, "add", "https://ci.example/hook", "--match", "cli@mx.test", data_dir=tmp_path
    )
    assert status == 0, err
    found = re.search(r"wh_[0-9a-f]{16}", out)
    assert found and re.search(r"^secret: whsec_\S+", out, re.M), out
    webhook_id = found.group()
    status, out, _ = floodgate(*api, "list", data_dir=tmp_path)
    assert status == 0 and webhook_id in out and "cli@mx.test" in out and "whsec_" not in out
    assert floodgate(*api, "deliveries", webhook_id, data_dir=tmp_path)[:2] == (0, "")
    assert floodgate(*api, "remove", webhook_id, data_dir=tmp_path)[0] == 0
    status, _, err = floodgate(*api, "remove", webhook_id, data_dir=tmp_path)
    assert status == 1 and "no webhook" in err
    status, _, err = floodgate(*api, "add", "ftp://ci.example/hook", data_dir=tmp_path)
    assert status == 1 and "http:// or https://" in err
