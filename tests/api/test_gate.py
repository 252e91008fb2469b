"""The API's door, against a real API process: the token before the body, bounded bodies,
one error shape for every status, and admin requests that mean exactly what they say."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.support.api import AUTH
from tests.support.processes import ServiceProcess
from tests.support.smtp import rss_kb


def test_without_a_token_the_body_is_never_read(shared_api: ServiceProcess) -> None:
    before = rss_kb(shared_api.process.pid)
    with socket.create_connection(("127.0.0.1", shared_api.http_port), timeout=10) as sock:
        size = 30 * 1024 * 1024
        sock.sendall(
            b"POST /v1/blocklist/bulk HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % size
        )
        reply = b""
        while b'"}' not in reply:  # the whole (small) response, then stop reading
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 401") and b'"error"' in reply
    assert rss_kb(shared_api.process.pid) - before < 20 * 1024
    garbage = httpx.post(shared_api.http_url + "/v1/blocklist", content=b"{not json")
    assert garbage.status_code == 401  # 401 before any parsing, not 422


def test_bodies_past_the_route_cap_get_413_with_or_without_a_length(
    shared_api: ServiceProcess,
) -> None:
    big = b'{"cidr": "192.0.2.1", "reason": "' + b"x" * 20_000 + b'"}'
    declared = httpx.post(shared_api.http_url + "/v1/blocklist", content=big, headers=AUTH)
    assert declared.status_code == 413 and "error" in declared.json()

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 100_000  # 4 MB, chunked: no Content-Length to trust

    streamed = httpx.post(
        shared_api.http_url + "/v1/blocklist/bulk", content=chunks(), headers=AUTH
    )
    assert streamed.status_code == 413


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/v1/nowhere", 404), ("PUT", "/v1/blocklist", 405), ("GET", "/nothing", 404)],
)
def test_every_error_is_json_with_an_error_field(
    shared_api: ServiceProcess, method: str, path: str, status: int
) -> None:
    response = httpx.request(method, shared_api.http_url + path, headers=AUTH)
    assert response.status_code == status and set(response.json()) == {"error"}
    if status == 405:
        assert "POST" in response.headers["allow"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"cidr": "0.0.0.0/0"}, "confirm"),
        ({"cidr": "::/0"}, "confirm"),
        ({"cidr": "10.0.0.0/7"}, "confirm"),
        ({"cidr": "198.51.100.0/24", "source": "auto"}, "source"),
        ({"cidr": "198.51.100.0/24", "ttl_seconds": True}, "ttl_seconds"),
        ({"cidr": "198.51.100.0/24", "ttl_seconds": "60"}, "ttl_seconds"),
    ],
)
def test_admin_requests_are_strict(
    shared_api: ServiceProcess, body: dict[str, object], fragment: str
) -> None:
    response = httpx.post(shared_api.http_url + "/v1/blocklist", json=body, headers=AUTH)
    assert response.status_code == 422 and fragment in response.json()["error"], response.text


def test_a_wide_prefix_is_accepted_when_confirmed(shared_api: ServiceProcess) -> None:
    body = {"cidr": "10.0.0.0/7", "confirm": True, "ttl_seconds": 60}
    response = httpx.post(shared_api.http_url + "/v1/blocklist", json=body, headers=AUTH)
    assert response.status_code == 201 and response.json()["source"] == "manual"
    removed = httpx.delete(shared_api.http_url + "/v1/blocklist/10.0.0.0%2F7", headers=AUTH)
    assert removed.status_code == 204
