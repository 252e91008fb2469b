"""Mailbox API: auth, errors, read and delete, against a real API process."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient, queued_id, send_message, smtp_from

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_v1_routes_need_the_bearer_token(shared_api: ServiceProcess) -> None:
    url = f"{shared_api.http_url}/v1/mailboxes/a@mx.test/messages"
    assert httpx.get(url).status_code == 401
    wrong = httpx.get(url, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]
    assert httpx.get(url, headers=AUTH).status_code == 200
    assert httpx.get(f"{shared_api.http_url}/healthz").status_code == 200


def test_unknown_message_is_404_with_json_error(shared_api: ServiceProcess) -> None:
    unknown = httpx.get(
        shared_api.http_url + "/v1/messages/01aaaaaaaaaaaaaaaaaaaaaaaa", headers=AUTH
    )
    assert unknown.status_code == 404 and "no message" in unknown.json()["error"]
    malformed = httpx.get(shared_api.http_url + "/v1/messages/nope/raw", headers=AUTH)
    assert malformed.status_code == 422 and "error" in malformed.json()  # not an id at all
    gone = httpx.delete(
        f"{shared_api.http_url}/v1/messages/01aaaaaaaaaaaaaaaaaaaaaaaa", headers=AUTH
    )
    assert gone.status_code == 404


def test_invalid_mailbox_address_is_422(shared_api: ServiceProcess) -> None:
    response = httpx.get(f"{shared_api.http_url}/v1/mailboxes/no-at-sign/messages", headers=AUTH)
    assert response.status_code == 422 and response.json()["error"]


def test_message_detail_decodes_headers_and_text_then_delete(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    body = (
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln\r\n"
    ).encode()
    with smtp_from(shared_receiver, client_ip, "c.test") as client:
        client.sendmail("a@example.org", ["read@mx.test"], body)
    listed = httpx.get(f"{shared_api.http_url}/v1/mailboxes/read@mx.test/messages", headers=AUTH)
    message_id = listed.json()["messages"][0]["id"]
    detail = httpx.get(f"{shared_api.http_url}/v1/messages/{message_id}", headers=AUTH).json()
    assert detail["subject"] == "Grüße"
    assert ["Subject", "Grüße"] in detail["headers"]
    assert detail["text"] == "Grüße aus Köln\r\n" or detail["text"] == "Grüße aus Köln\n"
    assert detail["envelope"]["rcpt_to"] == ["read@mx.test"]
    deleted = httpx.delete(f"{shared_api.http_url}/v1/messages/{message_id}", headers=AUTH)
    assert deleted.status_code == 204
    again = httpx.get(f"{shared_api.http_url}/v1/messages/{message_id}", headers=AUTH)
    assert again.status_code == 404


def test_readyz_and_metrics(shared_api: ServiceProcess, shared_receiver: ServiceProcess) -> None:
    assert httpx.get(f"{shared_api.http_url}/readyz").status_code == 200
    metrics = httpx.get(f"{shared_api.http_url}/metrics")
    assert metrics.status_code == 200 and "floodgate_api_requests" in metrics.text
    ready = httpx.get(f"{shared_receiver.http_url}/readyz")
    assert ready.status_code == 200, ready.text
    assert "floodgate_connections_open" in httpx.get(f"{shared_receiver.http_url}/metrics").text


def test_mailbox_pages_by_cursor_and_since_and_can_be_emptied(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    client = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    client.hello()
    ids = []
    for n in range(5):
        body = f"Subject: page {n}\r\n\r\nx\r\n".encode()  # each its own message
        reply = send_message(client, "a@example.org", ["pages@mx.test", "other@mx.test"], body)
        ids.append(queued_id(reply.text))
        if n == 2:
            middle = datetime.now(UTC).isoformat()
    url = f"{shared_api.http_url}/v1/mailboxes/pages@mx.test/messages"
    first = httpx.get(url, params={"limit": 2}, headers=AUTH).json()
    assert [m["id"] for m in first["messages"]] == ids[:-3:-1] and first["next"] == ids[3]
    second = httpx.get(url, params={"limit": 2, "before": first["next"]}, headers=AUTH).json()
    assert [m["id"] for m in second["messages"]] == [ids[2], ids[1]]
    newer = httpx.get(url, params={"after": ids[2]}, headers=AUTH).json()["messages"]
    assert [m["id"] for m in newer] == [ids[4], ids[3]]
    recent = httpx.get(url, params={"since": middle}, headers=AUTH).json()["messages"]
    assert [m["id"] for m in recent] == [ids[4], ids[3]]
    assert httpx.get(url, params={"before": "nope"}, headers=AUTH).status_code == 422
    emptied = httpx.delete(url, headers=AUTH)
    assert emptied.status_code == 200 and emptied.json() == {"deleted": 5}
    assert httpx.get(url, headers=AUTH).json()["messages"] == []
    other = httpx.get(f"{shared_api.http_url}/v1/mailboxes/other@mx.test/messages", headers=AUTH)
    assert len(other.json()["messages"]) == 5  # still in the other mailbox


def test_q_searches_the_mailbox_by_field_and_by_words_of_the_decoded_text(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    coded = base64.b64encode(b"Your code is 482913.\r\n").decode()
    sent = [
        "From: Shop <noreply@shop.example>\r\nSubject: Confirm your account\r\n"
        f"Content-Transfer-Encoding: base64\r\n\r\n{coded}\r\n",
        "From: Paper <news@paper.example>\r\nSubject: Weekly news\r\n\r\nhello world\r\n",
        "From: Shop <billing@shop.example>\r\nSubject: Your invoice\r\n"
        "Content-Type: text/html\r\n\r\n<p>Invoice <b>total</b>: 42</p>\r\n",
    ]
    ids = []
    with smtp_from(shared_receiver, client_ip) as client:
        for raw in sent:
            reply = client.sendmail("a@example.org", ["search@mx.test"], raw)
            assert reply == {}
    ids = [m["id"] for m in reversed(_listing(shared_api, "search@mx.test"))]
    assert len(ids) == 3

    def found(**params: str) -> list[str]:
        answer = _listing_answer(shared_api, "search@mx.test", **params)
        return [ids.index(m["id"]) for m in answer["messages"]]

    assert found(q="from:shop") == [2, 0]  # newest first
    assert found(q='subject:"confirm YOUR"') == [0]
    assert found(q="482913") == [0]  # in the base64 text part
    assert found(q='"invoice total"') == [2]  # in the HTML's visible text, not its tags
    assert found(q="from:paper world") == [1]
    assert found(q="from:shop nowhere") == []
    first = _listing_answer(shared_api, "search@mx.test", q="from:shop", limit="1")
    assert [m["id"] for m in first["messages"]] == [ids[2]] and first["next"] == ids[2]
    assert found(q="from:shop", before=first["next"]) == [0]
    refused = httpx.get(
        f"{shared_api.http_url}/v1/mailboxes/search@mx.test/messages",
        params={"q": 'subject:"open'},
        headers=AUTH,
    )
    assert refused.status_code == 422
    assert refused.json()["error"] == "q: a quote opened at character 9 is not closed"


def _listing_answer(api: ServiceProcess, mailbox: str, **params: str) -> dict[str, Any]:
    url = f"{api.http_url}/v1/mailboxes/{mailbox}/messages"
    response = httpx.get(url, params=params, headers=AUTH)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _listing(api: ServiceProcess, mailbox: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = _listing_answer(api, mailbox)["messages"]
    return messages
