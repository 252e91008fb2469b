"""Waiting for a message (`GET /v1/mailboxes/{address}/wait`): the criteria and cursor in
process, the route against one shared receiver and API (each test its own mailbox)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import shutil
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.links import body_contains
from api.wait import Bounds, Criteria, Has
from floodgate import settings, wait_cli
from floodgate.cli import build_parser
from mailstore.ids import id_floor
from tests.conftest import ADMIN_TOKEN
from tests.support.api import AUTH, deliver
from tests.support.metrics import samples
from tests.support.postfix import private_postfix
from tests.support.processes import ServiceProcess, clean_environ
from tests.support.smtp import smtp_from, wait_for

SIGNUP = (
    b"From: Shop <noreply@shop.example>\r\nSubject: Confirm your account\r\n"
    b"Content-Type: text/plain\r\n\r\n"
    b"Your verification code is 482913.\r\nOr open https://shop.example/confirm?t=abc\r\n"
)
NEWS = b"From: News <news@paper.example>\r\nSubject: Today\r\n\r\nNothing to click.\r\n"


def wait(
    api: ServiceProcess, mailbox: str, source: str | None = None, **params: Any
) -> httpx.Response:
    """One wait, from `source` (a loopback address: a client of its own) if given."""
    url = f"{api.http_url}/v1/mailboxes/{mailbox}/wait"
    transport = httpx.HTTPTransport(local_address=source) if source else None
    with httpx.Client(transport=transport, timeout=70) as client:
        return client.get(url, params=params, headers=AUTH)


def waiting(api: ServiceProcess, mailbox: str, **params: Any) -> Future[httpx.Response]:
    """A wait running in a thread of its own; its answer comes through the future. One
    refused for want of a slot (a probe held it a moment) asks again, for up to 10 s."""

    def call() -> httpx.Response:
        deadline = time.monotonic() + 10
        answer = wait(api, mailbox, **params)
        while answer.status_code == 429 and time.monotonic() < deadline:
            time.sleep(0.05)  # gently: each ask takes a token of the client's read bucket
            answer = wait(api, mailbox, **params)
        return answer

    pool = ThreadPoolExecutor(1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


def test_criteria_compare_case_insensitively_and_all_must_hold() -> None:
    listed = {"subject": "Confirm your  ACCOUNT", "from": "Shop <noreply@shop.example>"}
    assert Criteria(subject="confirm your account", sender="SHOP.example").headers_match(listed)
    assert not Criteria(subject="confirm", sender="bank").headers_match(listed)
    found = {"links": [{"url": "https://x.example/"}], "codes": [], "contains": True}
    assert Criteria(body="x", has=Has.LINK).found_match(found)
    assert Criteria(has=Has.ANY).found_match(found)
    assert not Criteria(has=Has.CODE).found_match(found)
    assert not Criteria(body="x").found_match({**found, "contains": False})
    assert body_contains("Your Code", "your\r\n  code is 1234")
    assert not body_contains("code", "cod e")


def test_bounds_admit_ids_after_the_cursor_and_from_the_floor() -> None:
    floor = id_floor(1_700_000_000.0)
    earlier, later = id_floor(1_699_999_999.999), id_floor(1_700_000_000.001)
    assert Bounds(floor=floor).admits(floor) and Bounds(floor=floor).admits(later)
    assert not Bounds(floor=floor).admits(earlier)
    assert not Bounds(after=floor).admits(floor) and Bounds(after=floor).admits(later)


def test_a_message_arriving_during_the_wait_is_the_answer_with_its_code_and_link(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    since = datetime.now(UTC).isoformat()  # a message between this and the call counts
    pending = waiting(shared_api, "waits@mx.test", subject="confirm", since=since, timeout=20)
    deliver(shared_receiver, "waits@mx.test", NEWS, source=client_ip)  # not matching
    sent = deliver(shared_receiver, "waits@mx.test", SIGNUP, source=client_ip)
    answer = pending.result(timeout=20)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["message"]["id"] == sent
    assert body["message"]["subject"] == "Confirm your account"
    assert [c["code"] for c in body["codes"]] == ["482913"]
    assert [link["url"] for link in body["links"]] == ["https://shop.example/confirm?t=abc"]


def test_what_arrived_after_the_cursor_before_the_call_is_found_at_once(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    cursor = deliver(shared_receiver, "early@mx.test", SIGNUP + b"first\r\n", source=client_ip)
    news = deliver(shared_receiver, "early@mx.test", NEWS, source=client_ip)
    signup = deliver(shared_receiver, "early@mx.test", SIGNUP, source=client_ip)
    started = time.monotonic()
    first = wait(shared_api, "early@mx.test", after=cursor, timeout=20)
    assert first.status_code == 200 and first.json()["message"]["id"] == news
    coded = wait(shared_api, "early@mx.test", after=cursor, has="code", timeout=20)
    assert coded.status_code == 200 and coded.json()["message"]["id"] == signup
    texted = wait(shared_api, "early@mx.test", after=cursor, body="NOTHING to click")
    assert texted.status_code == 200 and texted.json()["message"]["id"] == news
    assert time.monotonic() - started < 5  # from the store, not the 30 s default timeout


def test_nothing_matching_within_the_timeout_is_204(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    cursor = deliver(shared_receiver, "quiet@mx.test", NEWS + b"first\r\n", source=client_ip)
    deliver(shared_receiver, "quiet@mx.test", NEWS, source=client_ip)
    started = time.monotonic()
    answer = wait(shared_api, "quiet@mx.test", after=cursor, has="link", timeout=0.5)
    assert answer.status_code == 204 and answer.content == b""
    assert 0.5 <= time.monotonic() - started < 5
    # By default only what arrives after the call counts: the two messages do not.
    assert wait(shared_api, "quiet@mx.test", timeout=0.2).status_code == 204


def test_bad_criteria_are_422_and_no_token_is_401(shared_api: ServiceProcess) -> None:
    for params in ({"timeout": 61}, {"after": "not-an-id"}, {"has": "attachment"}):
        answer = wait(shared_api, "bad@mx.test", **params)
        assert answer.status_code == 422 and "error" in answer.json(), params
    assert wait(shared_api, "not an address").status_code == 422
    url = f"{shared_api.http_url}/v1/mailboxes/bad@mx.test/wait"
    assert httpx.get(url, params={"timeout": 0}).status_code == 401


def test_waiters_take_the_live_streams_share_and_all_hear_one_message(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    # A client holds at most 4 live streams on one mailbox (FLOODGATE_PUSH_PER_CLIENT_MAILBOX)
    # and 20 in all (FLOODGATE_PUSH_PER_CLIENT); waits take the same slots.
    mailboxes = [f"crowd{n}@mx.test" for n in range(5)]
    pending = {mailboxes[0]: [waiting(shared_api, mailboxes[0], timeout=30) for _ in range(4)]}
    refused = refusal(shared_api, mailboxes[0])
    assert refused.json() == {"error": "too many live streams from this client on this mailbox"}
    assert refused.headers["retry-after"] == "5"
    for mailbox in mailboxes[1:]:
        pending[mailbox] = [waiting(shared_api, mailbox, timeout=30) for _ in range(4)]
    refused = refusal(shared_api, "crowd-more@mx.test")
    assert refused.json() == {"error": "too many live streams from this client"}
    # One message to each mailbox answers every one of its waiters.
    for mailbox, waiters in pending.items():
        sent = deliver(shared_receiver, mailbox, SIGNUP, source=client_ip)
        answers = [p.result(timeout=20) for p in waiters]
        assert {(a.status_code, a.json()["message"]["id"]) for a in answers} == {(200, sent)}
    assert threading.active_count() < 50


def refusal(api: ServiceProcess, mailbox: str) -> httpx.Response:
    """The 429 a wait on `mailbox` gets once the waits started before it hold their slots
    (each subscribes as its request arrives: polled, within 10 s)."""
    deadline = time.monotonic() + 10
    answer = wait(api, mailbox, timeout=0)
    while answer.status_code != 429 and time.monotonic() < deadline:
        time.sleep(0.05)  # gently: each ask takes a token of the client's read bucket
        answer = wait(api, mailbox, timeout=0)
    assert answer.status_code == 429, answer.text
    return answer


class Shop:
    """A site's sign-up: it mails a one-time code (through `connect`: an SMTP client to the
    real receiver, or to the site's own MTA) and accepts that code, once."""

    def __init__(self, connect: Callable[[], smtplib.SMTP]) -> None:
        self.connect = connect
        self.pending: dict[str, str] = {}

    def sign_up(self, address: str) -> None:
        code = f"{secrets.randbelow(10**6):06d}"
        self.pending[address] = code
        body = (
            f"Welcome!\n\nYour verification code is {code}. It expires in 10 minutes.\n"
            "Or confirm at https://shop.example/confirm\n"
        )
        with self.connect() as smtp:
            smtp.sendmail(
                "noreply@shop.example",
                [address],
                f"From: Shop <noreply@shop.example>\r\nTo: {address}\r\n"
                f"Subject: Confirm your account\r\n\r\n{body}",
            )

    def confirm(self, address: str, code: str) -> bool:
        return self.pending.pop(address, None) == code


def floodgate_wait(
    api: ServiceProcess, monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[int, str, str]:
    """`floodgate wait --api <api> ARGS`, in process (its parser, settings and client as
    the command runs them): exit status, standard output, standard error."""
    for name in [k for k in os.environ if k.startswith("FLOODGATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("FLOODGATE_ADMIN_TOKEN", ADMIN_TOKEN)
    out, err = io.StringIO(), io.StringIO()
    parsed = build_parser().parse_args(["wait", "--api", api.http_url, *args])
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = wait_cli.run(parsed, settings.load())
    return status, out.getvalue(), err.getvalue()


def test_a_script_signs_up_with_the_code_floodgate_wait_prints(
    shared_receiver: ServiceProcess,
    shared_api: ServiceProcess,
    client_ip: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shop = Shop(lambda: smtp_from(shared_receiver, client_ip))
    since = datetime.now(UTC).isoformat()
    shop.sign_up("me@mx.test")
    status, out, err = floodgate_wait(
        shared_api, monkeypatch, "me@mx.test", "--subject", "confirm", "--since", since
    )
    assert status == 0, err
    assert "floodgate wait: code from message" in err
    assert shop.confirm("me@mx.test", out.strip())


def test_a_sign_up_a_private_postfix_delivers_with_tls_is_confirmed_with_one_wait(
    shared_receiver: ServiceProcess,
    shared_api: ServiceProcess,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # The shop's mail goes out through its own MTA, a stock Postfix at its defaults with
    # TLS required, to the real receiver; the script's one call is the whole wait.
    relayhost = f"[{shared_receiver.host}]:{shared_receiver.port}"
    with private_postfix(
        tmp_path / "postfix", relayhost=relayhost, smtp_tls_security_level="encrypt"
    ) as postfix:
        shop = Shop(postfix.smtp)
        since = datetime.now(UTC).isoformat()
        shop.sign_up("newcomer@mx.test")
        status, out, err = floodgate_wait(
            shared_api,
            monkeypatch,
            "newcomer@mx.test",
            "--subject",
            "confirm",
            "--since",
            since,
            "--timeout",
            "60",
        )
        assert status == 0, err + postfix.log()[-3000:]
        assert shop.confirm("newcomer@mx.test", out.strip())
        assert postfix.wait_settled(30) == []
        # Sent once, and over TLS: at `encrypt` Postfix defers rather than send in clear.
        assert postfix.statuses()["sent"] == 1


def test_floodgate_wait_exits_1_at_its_timeout_and_2_when_refused(
    shared_api: ServiceProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, out, err = floodgate_wait(shared_api, monkeypatch, "nobody@mx.test", "--timeout", "0.2")
    assert status == 1 and out == ""
    assert "no matching message reached nobody@mx.test within 0.2 s" in err
    status, _, err = floodgate_wait(shared_api, monkeypatch, "nobody@mx.test", "--after", "x")
    assert status == 2 and "422: after:" in err, err


REPO = Path(__file__).resolve().parents[2]
CLIENT = re.compile(r"<!-- client: (\w+) -->\n```\w+\n(.*?)```", re.S)
RUNNERS = {
    "curl": ("wait.sh", ["sh", "-e"]),
    "python": ("wait.py", [sys.executable]),
    "javascript": ("wait.mjs", ["node"]),
}


def readme_clients() -> dict[str, str]:
    found = dict(CLIENT.findall((REPO / "README.md").read_text()))
    assert set(found) == set(RUNNERS), "README's wait examples and this test disagree"
    return found


@pytest.mark.parametrize("name", sorted(RUNNERS))
def test_each_readme_client_example_prints_the_code_of_the_mail_it_waited_for(
    name: str,
    shared_receiver: ServiceProcess,
    shared_api: ServiceProcess,
    client_ip: str,
    tmp_path: Path,
) -> None:
    if name == "javascript" and shutil.which("node") is None:
        pytest.skip("node is not installed")
    mailbox = f"signup-{name}@mx.test"
    filename, command = RUNNERS[name]
    script = tmp_path / filename
    script.write_text(readme_clients()[name].replace("signup@mx.test", mailbox))
    env = {**clean_environ(), "API": shared_api.http_url, "TOKEN": ADMIN_TOKEN}
    example = subprocess.Popen(
        [*command, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    # The example counts only mail after its call: send until it has its answer, each
    # message its own code (the one it prints is one of them).
    codes: list[str] = []
    with smtp_from(shared_receiver, client_ip) as smtp:
        deadline = time.monotonic() + 30
        while example.poll() is None and time.monotonic() < deadline:
            codes.append(f"{secrets.randbelow(10**6):06d}")
            smtp.sendmail(
                "noreply@shop.example",
                [mailbox],
                f"Subject: Confirm your account\r\n\r\nYour code is {codes[-1]}.\r\n",
            )
            with contextlib.suppress(subprocess.TimeoutExpired):
                example.wait(0.5)
    out, err = example.communicate(timeout=30)
    assert example.returncode == 0, err.decode()
    assert out.decode().strip() in codes


def test_a_caller_that_hangs_up_frees_its_slot_at_once(
    shared_api: ServiceProcess, client_ip: str
) -> None:
    # From an address of its own: its read bucket and its slots are this test's alone,
    # whatever the module's other tests (polling from 127.0.0.1) took.
    address = (shared_api.host, shared_api.port)

    def hold(n: int) -> socket.socket:
        """A wait of up to 60 s on mailbox gone{n % 5}: the client's whole share (20) is
        four on each of five mailboxes (the most one client may hold on one)."""
        request = (
            f"GET /v1/mailboxes/gone{n % 5}@mx.test/wait?timeout=60 HTTP/1.1\r\nHost: t\r\n"
            f"Authorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
        ).encode()
        sock = socket.create_connection(address, source_address=(client_ip, 0))
        sock.sendall(request)
        return sock

    held = [hold(n) for n in range(20)]

    def another_wait_is(status: int) -> Callable[[], bool]:
        return lambda: wait(shared_api, "other@mx.test", client_ip, timeout=0).status_code == status

    def all_held_and_another_refused() -> bool:
        # A probe read before a held request (on a loaded host twenty connections take a
        # while to be read) holds the last slot a moment: that held request got its 429
        # then, and asks again.
        for n, sock in enumerate(held):
            if _answered(sock):
                sock.close()
                held[n] = hold(n)
        return another_wait_is(429)()

    try:
        assert wait_for(all_held_and_another_refused, timeout=30, interval=0.2), _why(
            shared_api, held
        )
    finally:
        for sock in held:
            sock.close()
    # Long before their 60 s: the API saw them go.
    assert wait_for(another_wait_is(204), timeout=30, interval=0.2)


def _answered(sock: socket.socket) -> bool:
    """Whether the API answered (or closed) a held wait: anything to read."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # b"" when closed: answered too
    except BlockingIOError:
        return False
    return True


def _why(api: ServiceProcess, held: list[socket.socket]) -> str:
    """What each held wait got (the first line of its answer, "closed" for a connection the
    API ended without one, "silent" while it waits), the API's count of wait answers by
    status, and the end of its log."""
    lines = []
    for sock in held:
        sock.setblocking(False)
        try:
            line = sock.recv(200).decode(errors="replace").split("\r\n")[0]
            lines.append(line or "closed")
        except BlockingIOError:
            lines.append("silent")
        except OSError as error:
            lines.append(f"{type(error).__name__}")
    counted = {
        item.labels["status"]: item.value
        for item in samples(api.http_url, "floodgate_api_requests_total")
        if "/wait" in item.labels["route"]
    }
    return f"held: {lines}\ncounted: {counted}\nlog: {api.log()[-3000:]}"
