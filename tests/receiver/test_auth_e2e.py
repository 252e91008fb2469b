"""Authentication verdicts end to end: a real receiver process with the checks on, its
only resolver a DNS server on loopback, clients from 127.0.0.x addresses, and the API
reading what was stored."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServiceFactory
from tests.receiver.test_session import strip_received
from tests.support import dkimkeys
from tests.support.api import AUTH
from tests.support.dnsserver import DnsServer, Record, closed_port
from tests.support.metrics import sample
from tests.support.smtp import RawClient, queued_id, send_message

KEY = dkimkeys.rsa_key()
SHOP, STRANGER = "127.0.0.2", "127.0.0.9"
FORGED = b"Authentication-Results: mx.test; dkim=pass header.d=bank.test\r\n"
# A spelling the first-token match kept: a quoted string after a nested comment.
QUOTED = b'Authentication-Results: (our (own)) "MX.test."; dmarc=pass\r\n'


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    records = {
        "TXT:shop.test": Record.txt("v=spf1 ip4:127.0.0.2 -all"),
        "TXT:mail.shop.test": Record.txt("v=spf1 a -all"),
        "A:mail.shop.test": Record.a(SHOP),
        "TXT:s1._domainkey.shop.test": Record.txt(KEY.record),
        "TXT:_dmarc.shop.test": Record.txt("v=DMARC1; p=reject"),
    }
    with DnsServer(records) as server:
        yield server


def deliver(receiver: Any, source: str, raw: bytes) -> tuple[str, float]:
    client = RawClient(receiver.host, receiver.port, source=source)
    assert client.hello("mail.shop.test").code == 250
    started = time.monotonic()
    reply = send_message(client, "bounce@shop.test", ["user@mx.test"], raw)
    elapsed = time.monotonic() - started
    assert reply.code == 250, reply
    client.cmd("QUIT")
    return queued_id(reply.text), elapsed


def detail(api: Any, message_id: str) -> dict[str, Any]:
    response = httpx.get(f"{api.http_url}/v1/messages/{message_id}", headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def raw_of(api: Any, message_id: str) -> bytes:
    response = httpx.get(f"{api.http_url}/v1/messages/{message_id}/raw", headers=AUTH)
    assert response.status_code == 200
    return response.content


def test_verdicts_are_stored_with_the_message_and_served_by_the_api(
    make_receiver: ServiceFactory,
    make_api: ServiceFactory,
    dns: DnsServer,
    mongo: Any,
    db_name: str,
) -> None:
    # The first message also starts the verification worker: on a loaded 2-core host that
    # alone can outlast the 2 s default, and this test is about what is stored, not speed.
    receiver = make_receiver(auth_checks="1", dns_servers=dns.address, auth_timeout="15")
    api = make_api()
    raw = dkimkeys.sign(dkimkeys.message(extra=FORGED + QUOTED), "shop.test", "s1", KEY)
    good, _ = deliver(receiver, SHOP, raw)
    bad, _ = deliver(receiver, STRANGER, raw.replace(b"123456", b"999999"))

    auth = detail(api, good)["auth"]
    assert auth["spf"] == {
        "result": "pass",
        "domain": "shop.test",
        "reason": "matched ip4:127.0.0.2",
    }
    assert auth["helo"]["result"] == "pass"
    assert [(d["result"], d["domain"], d["selector"]) for d in auth["dkim"]] == [
        ("pass", "shop.test", "s1")
    ]
    assert auth["dmarc"] | {"reason": ""} == {
        "result": "pass",
        "domain": "shop.test",
        "policy": "reject",
        "spf_aligned": True,
        "dkim_aligned": True,
        "reason": "",
    }
    assert auth["arc"] == {"result": "none", "reason": ""}

    auth = detail(api, bad)["auth"]
    assert (auth["spf"]["result"], auth["helo"]["result"]) == ("fail", "fail")
    assert auth["dkim"][0]["result"] == "fail"
    assert auth["dmarc"]["result"] == "fail"

    # Our header on top, then our Received line, then the message minus the forgery.
    stored = raw_of(api, good)
    assert stored.startswith(b"Authentication-Results: mx.test;\r\n\tspf=pass")
    after = stored[stored.index(b"Received: from ") :]
    assert strip_received(after) == raw.replace(FORGED, b"").replace(QUOTED, b"")
    assert stored.count(b"Authentication-Results:") == 1
    # The Headers tab shows our verdict first, then our Received:, then the sender's.
    headers = detail(api, good)["headers"]
    assert headers[0][0] == "Authentication-Results"
    assert headers[0][1].startswith("mx.test; spf=pass (matched ip4:127.0.0.2)")
    assert headers[1][0] == "Received" and headers[2][0] == "DKIM-Signature"
    assert [name for name, _ in headers].count("Authentication-Results") == 1
    # One insert: the document was written with its verdicts (no update afterwards).
    document = mongo[db_name]["messages"].find_one({"_id": good})
    assert document["auth"]["dkim"][0]["result"] == "pass"
    assert document["size"] == len(raw) - len(FORGED) - len(QUOTED)
    url = receiver.http_url
    assert sample(url, "floodgate_auth_results_total", method="dkim", result="pass") == 1
    assert sample(url, "floodgate_auth_results_total", method="dkim", result="fail") == 1
    # Every lookup went to the loopback server; the keys and records were asked once.
    assert dns.queries.count("s1._domainkey.shop.test") == 1
    assert dns.queries.count("_dmarc.shop.test") == 1


def test_a_dead_resolver_costs_at_most_the_deadline_and_still_250(
    make_receiver: ServiceFactory, make_api: ServiceFactory
) -> None:
    receiver = make_receiver(
        auth_checks="1", dns_servers=f"127.0.0.1:{closed_port()}", auth_timeout="1"
    )
    api = make_api()
    raw = dkimkeys.sign(dkimkeys.message(), "shop.test", "s1", KEY)
    message_id, elapsed = deliver(receiver, SHOP, raw)
    assert elapsed < 1.0 + 0.5
    auth = detail(api, message_id)["auth"]
    results = {auth[m]["result"] for m in ("spf", "helo", "dmarc")} | {auth["dkim"][0]["result"]}
    assert results == {"temperror"}


def test_with_the_checks_off_nothing_is_added(
    receiver: Any, make_api: ServiceFactory, mongo: Any, db_name: str
) -> None:
    api = make_api()
    raw = dkimkeys.message(extra=FORGED)
    message_id, _ = deliver(receiver, SHOP, raw)
    assert detail(api, message_id).get("auth") is None
    assert "auth" not in mongo[db_name]["messages"].find_one({"_id": message_id})
    assert strip_received(raw_of(api, message_id)) == raw
