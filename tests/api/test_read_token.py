"""The read token: a reader front end reads mailboxes and deletes messages, and never
sees envelope recipients; everything else needs the admin token."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import ServiceFactory
from tests.support.api import AUTH
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient, queued_id, send_message

READ_TOKEN = "reader-token-" + "r" * 20
READER = {"Authorization": f"Bearer {READ_TOKEN}"}


def get(api: ServiceProcess, path: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(api.http_url + path, headers=headers, timeout=10)


def test_the_read_token_reads_without_bcc_and_administers_nothing(
    make_api: ServiceFactory, receiver: ServiceProcess
) -> None:
    api = make_api(read_token=READ_TOKEN)
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    body = b"From: a@example.org\r\nTo: visible@mx.test\r\nSubject: bcc\r\n\r\nx\r\n"
    reply = send_message(client, "a@example.org", ["visible@mx.test", "hidden@mx.test"], body)
    message = queued_id(reply.text)
    listing: list[dict[str, Any]] = get(
        api, "/v1/mailboxes/hidden@mx.test/messages", READER
    ).json()["messages"]
    assert [(m["id"], m["to"]) for m in listing] == [(message, "visible@mx.test")]
    read = get(api, f"/v1/messages/{message}", READER).json()
    assert "envelope" not in read and "hidden@mx.test" not in str(read)
    admin_view = get(api, f"/v1/messages/{message}", AUTH).json()
    assert admin_view["envelope"]["rcpt_to"] == ["visible@mx.test", "hidden@mx.test"]
    assert get(api, f"/v1/messages/{message}/raw", READER).status_code == 200
    assert get(api, "/v1/blocklist", READER).status_code == 403
    assert (
        httpx.post(
            api.http_url + "/v1/allowlist", json={"cidr": "192.0.2.1"}, headers=READER
        ).status_code
        == 403
    )
    wrong = {"Authorization": "Bearer not-a-token"}
    assert get(api, "/v1/mailboxes/hidden@mx.test/messages", wrong).status_code == 401
    deleted = httpx.delete(f"{api.http_url}/v1/messages/{message}", headers=READER)
    assert deleted.status_code == 204
