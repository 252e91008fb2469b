"""HEAD wherever GET is served (RFC 9110 9.1): same status and headers, no body."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.api import AUTH, deliver
from tests.support.processes import ServiceProcess


@pytest.mark.parametrize(
    "path", ["/", "/console", "/docs", "/healthz", "/openapi.json", "/static/inbox.js"]
)
def test_head_answers_as_get_without_the_body(shared_api: ServiceProcess, path: str) -> None:
    got = httpx.get(shared_api.http_url + path)
    head = httpx.head(shared_api.http_url + path)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    for name in ("content-type", "content-length", "content-security-policy"):
        assert head.headers.get(name) == got.headers.get(name), name


def test_head_on_message_routes_needs_the_token_and_matches_get(
    shared_receiver: ServiceProcess, shared_api: ServiceProcess, client_ip: str
) -> None:
    message_id = deliver(
        shared_receiver, "head@mx.test", b"Subject: head\r\n\r\nbody\r\n", source=client_ip
    )
    for suffix in ("", "/raw"):
        url = f"{shared_api.http_url}/v1/messages/{message_id}{suffix}"
        assert httpx.head(url).status_code == 401
        got, head = httpx.get(url, headers=AUTH), httpx.head(url, headers=AUTH)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == got.headers["content-length"]
    missing = httpx.head(f"{shared_api.http_url}/v1/messages/{'0' * 26}", headers=AUTH)
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/json"
    listing = httpx.head(f"{shared_api.http_url}/v1/mailboxes/head@mx.test/messages", headers=AUTH)
    assert listing.status_code == 200


def test_head_on_an_event_stream_returns_at_once_and_frees_its_slot(
    shared_api: ServiceProcess,
) -> None:
    for n in range(25):  # more than one client's share of streams: each slot came back
        # Over five mailboxes: the client's share on each (4) adds up to its share (20).
        url = f"{shared_api.http_url}/v1/mailboxes/stream{n % 5}@mx.test/events"
        started = time.monotonic()
        head = httpx.head(url, headers=AUTH, timeout=5)
        assert head.status_code == 200 and time.monotonic() - started < 2
        assert head.headers["content-type"].startswith("text/event-stream")


def test_post_only_routes_still_say_405_with_allow(shared_api: ServiceProcess) -> None:
    answer = httpx.head(f"{shared_api.http_url}/v1/blocklist/bulk", headers=AUTH)
    assert answer.status_code == 405
