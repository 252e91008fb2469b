"""Real sending MTAs at their defaults, TLS required, against a receiver at its defaults.

A private Postfix 3.7 (tests/support/postfix.py) relays a few hundred messages of every
ordinary kind — plain, 8-bit, large, fifty recipients, SMTPUTF8 — to the receiver with
`smtp_tls_security_level = encrypt` and nothing else changed: every recipient is delivered
on the first try, nothing is deferred, nobody is banned, and every message reads back
through the API. Then swaks, an independent client, does the same with `--tls`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import ServiceFactory
from tests.support.api import AUTH, listing
from tests.support.postfix import PrivatePostfix, private_postfix
from tests.support.processes import ServiceProcess

SENDER = "sender@sender.test"
BULK_RECIPIENTS = 50  # Postfix's default_destination_recipient_limit: one transaction each
DELIVERY_TIMEOUT = 150.0  # seconds for every message to be delivered (or deferred)
AUTOBAN = re.compile(r"\bevent=autoban\b")


@dataclass(frozen=True)
class Outgoing:
    """One message as submitted to Postfix: its kind, envelope and bytes."""

    kind: str
    number: int
    recipients: tuple[str, ...]
    body: bytes
    smtputf8: bool = False
    eight_bit: bool = False

    @property
    def token(self) -> bytes:
        """A header line unique to this message, to find it again in /raw."""
        return f"X-Test-Token: {self.kind}-{self.number:04d}\r\n".encode()

    @property
    def content(self) -> bytes:
        """The body after the header section: what must arrive byte for byte."""
        return self.body.split(b"\r\n\r\n", 1)[1]


def _message(kind: str, number: int, to: str, subject: str, extra: str, body: str) -> bytes:
    head = (
        f"From: Sender <{SENDER}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{kind}-{number}@sender.test>\r\nX-Test-Token: {kind}-{number:04d}\r\n"
        f"MIME-Version: 1.0\r\n{extra}"
    )
    return (head + "\r\n" + body).encode()


def plain(n: int) -> Outgoing:
    to = f"plain-{n:03d}@mx.test"
    body = "".join(f"Line {i} of an ordinary message.\r\n" for i in range(20))
    extra = "Content-Type: text/plain; charset=us-ascii\r\n"
    return Outgoing("plain", n, (to,), _message("plain", n, to, f"Plain {n}", extra, body))


def eight_bit(n: int) -> Outgoing:
    to = f"eightbit-{n:03d}@mx.test"
    body = f"Grüße aus Köln, naïve café, 日本語のテキスト {n}.\r\n" * 10
    extra = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    message = _message("eightbit", n, to, f"Eight bit {n}", extra, body)
    return Outgoing("eightbit", n, (to,), message, eight_bit=True)


def large(n: int) -> Outgoing:
    to = f"large-{n:03d}@mx.test"
    line = "".join(chr(65 + (n + i) % 26) for i in range(76)) + "\r\n"
    body = line * (300 * 1024 // len(line))  # ~300 KB, 7-bit, as base64 attachments look
    extra = "Content-Type: text/plain; charset=us-ascii\r\n"
    return Outgoing("large", n, (to,), _message("large", n, to, f"Large {n}", extra, body))


def bulk(n: int) -> Outgoing:
    # The same fifty mailboxes for every bulk message: each gets one copy per message.
    recipients = tuple(f"bulk-{r:02d}@mx.test" for r in range(BULK_RECIPIENTS))
    body = "One message, fifty recipients, one transaction.\r\n"
    extra = "Content-Type: text/plain; charset=us-ascii\r\n"
    message = _message("bulk", n, "undisclosed-recipients:;", f"Bulk {n}", extra, body)
    return Outgoing("bulk", n, recipients, message)


def utf8(n: int) -> Outgoing:
    to = f"usér-{n:03d}@mx.test"  # RFC 6531: a UTF-8 local part needs SMTPUTF8
    body = f"Ünïcödé everywhere, 中文 {n}.\r\n"
    extra = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    message = _message("utf8", n, to, f"Grüße {n} — ✓", extra, body)
    return Outgoing("utf8", n, (to,), message, smtputf8=True, eight_bit=True)


def corpus() -> list[Outgoing]:
    """300 messages, 1,182 recipients: the mix of the issue's Postfix run."""
    kinds = ((plain, 120), (eight_bit, 80), (large, 30), (bulk, 18), (utf8, 52))
    return [make(n) for make, count in kinds for n in range(count)]


def submit(postfix: PrivatePostfix, messages: list[Outgoing]) -> None:
    with postfix.smtp() as client:
        for message in messages:
            options = ["BODY=8BITMIME"] if message.eight_bit else []
            if message.smtputf8:
                options.append("SMTPUTF8")
            refused = client.sendmail(SENDER, list(message.recipients), message.body, options)
            assert refused == {}, refused


def expected_mailboxes(messages: list[Outgoing]) -> Counter[str]:
    return Counter(rcpt for message in messages for rcpt in message.recipients)


def raw(api: ServiceProcess, message_id: str) -> bytes:
    response = httpx.get(f"{api.http_url}/v1/messages/{message_id}/raw", headers=AUTH)
    assert response.status_code == 200, response.text
    return response.content


def blocklist_entries(api: ServiceProcess) -> list[object]:
    response = httpx.get(f"{api.http_url}/v1/blocklist", headers=AUTH)
    assert response.status_code == 200, response.text
    entries: list[object] = response.json()["entries"]
    return entries


def assert_readable(api: ServiceProcess, messages: list[Outgoing]) -> None:
    """Every mailbox holds what was sent to it; one message of each kind reads back exact."""
    for address, count in expected_mailboxes(messages).items():
        listed = listing(api, quote(address, safe="@"))
        assert len(listed) == count, (address, len(listed), count)
    checked = set()
    for message in messages:
        if message.kind in checked:
            continue
        checked.add(message.kind)
        listed = listing(api, quote(message.recipients[0], safe="@"))
        stored = [raw(api, str(entry["id"])) for entry in listed]
        found = [body for body in stored if message.token in body]
        assert len(found) == 1, (message.kind, message.token)
        # Our trace line on top says TLS (ESMTPS, UTF8SMTPS: RFC 3848, RFC 6531 3.7.3).
        assert re.match(rb"Received: [^;]* with (ESMTPS|UTF8SMTPS) ", found[0]), found[0][:300]
        # The body arrives exact (8-bit and UTF-8 untouched, not downgraded to 7-bit).
        assert found[0].endswith(message.content), message.kind
    assert_rendered(api, [m for m in messages if m.smtputf8])


def assert_rendered(api: ServiceProcess, messages: list[Outgoing]) -> None:
    """Every SMTPUTF8 message a real MTA delivered renders as JSON, its UTF-8 intact."""
    for message in messages:
        address = message.recipients[0]
        for entry in listing(api, quote(address, safe="@")):
            answer = httpx.get(f"{api.http_url}/v1/messages/{entry['id']}", headers=AUTH)
            assert answer.status_code == 200, answer.text[:300]
            shown = answer.json()
            assert [to["address"] for to in shown["to"]] == [address], shown["to"]
            assert shown["subject"] == f"Grüße {message.number} — ✓", shown["subject"]
            assert f"中文 {message.number}." in shown["text"], shown["text"][:200]


def test_postfix_at_its_defaults_with_tls_required_delivers_everything(
    make_receiver: ServiceFactory, make_api: ServiceFactory, tmp_path: Path
) -> None:
    receiver = make_receiver()  # every limit at its default, STARTTLS self-signed
    api = make_api()
    messages = corpus()
    recipients = sum(len(message.recipients) for message in messages)
    relayhost = f"[127.0.0.1]:{receiver.port}"
    with private_postfix(
        tmp_path / "postfix", relayhost=relayhost, smtp_tls_security_level="encrypt"
    ) as postfix:
        started = time.monotonic()
        submit(postfix, messages)
        left = postfix.wait_settled(DELIVERY_TIMEOUT)
        elapsed = time.monotonic() - started
        statuses = postfix.statuses()
        deferred = postfix.reasons("deferred")
        bounced = postfix.reasons("bounced")
    summary = f"{statuses} in {elapsed:.0f}s; deferred: {deferred}; bounced: {bounced}"
    assert not AUTOBAN.search(receiver.log()), summary
    assert blocklist_entries(api) == [], summary
    assert deferred == Counter(), summary
    assert bounced == Counter(), summary
    assert not left, f"{len(left)} messages still queued; {summary}"
    assert statuses["sent"] == recipients, summary
    assert_readable(api, messages)


SWAKS_MESSAGES = 30


def swaks(receiver: ServiceProcess, n: int) -> tuple[int, str]:
    """One message through swaks with TLS required; its exit status and the reply to the
    final dot (the last server reply before QUIT's)."""
    command = [
        "swaks",
        "--server",
        f"{receiver.host}:{receiver.port}",
        "--tls",  # STARTTLS or give up: swaks exits non-zero if TLS is refused
        "--to",
        f"swaks-{n % 3}@mx.test",
        "--from",
        SENDER,
        "--helo",
        "client.test",
        "--header",
        f"Subject: swaks {n}",
        "--body",
        f"message {n} over TLS",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    replies = re.findall(r"^<~ +(\d{3}[ -].*)$", result.stdout, re.M)
    return result.returncode, replies[-2] if len(replies) > 1 else result.stdout


@pytest.mark.skipif(
    shutil.which("swaks") is None,
    reason="swaks is not installed: FLOODGATE_INSTALL_TOOLS=1 make test installs it",
)
def test_swaks_with_tls_required_delivers_dozens_in_a_row(
    make_receiver: ServiceFactory, make_api: ServiceFactory
) -> None:
    receiver = make_receiver()  # defaults
    api = make_api()
    answers = [swaks(receiver, n) for n in range(SWAKS_MESSAGES)]
    failed = [(n, answer) for n, (status, answer) in enumerate(answers) if status != 0]
    assert not failed, failed
    assert all(answer.startswith("250 ") for _, answer in answers), answers
    assert not AUTOBAN.search(receiver.log())
    assert blocklist_entries(api) == []
    counts = [len(listing(api, f"swaks-{box}@mx.test")) for box in range(3)]
    assert counts == [SWAKS_MESSAGES // 3] * 3
