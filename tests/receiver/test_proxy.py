"""PROXY protocol (v1 and v2): only trusted proxies may name the client, and every per-IP
control then uses the client named in the header."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from tests.conftest import ServiceFactory
from tests.support import proxy_headers
from tests.support.api import AUTH
from tests.support.blocklist import entry_document
from tests.support.processes import ServiceProcess
from tests.support.proxy_headers import v1, v2
from tests.support.smtp import RawClient, queued_id, send_message, wait_for

PROXIED = {
    "proxy_protocol": "1",
    "trusted_proxies": "127.0.0.1/32",
    "max_connections_per_ip": "2",
    "autoban_threshold": "0",
}


def through_proxy(receiver: ServiceProcess, header: bytes) -> RawClient:
    """A connection from the trusted proxy address announcing another client."""
    client = RawClient(receiver.host, receiver.port, source="127.0.0.1")
    client.send(header)
    return client


def test_v1_and_v2_headers_name_the_client_that_gets_stored(
    make_receiver: ServiceFactory, mongo: MongoClient[dict[str, Any]], db_name: str
) -> None:
    receiver = make_receiver(**PROXIED)
    for header, client_ip in (
        (v1("198.51.100.7"), "198.51.100.7"),
        (v2("198.51.100.8"), "198.51.100.8"),
        (v2("2001:db8::42"), "2001:db8::42"),
    ):
        client = through_proxy(receiver, header)
        assert client.hello().code == 250  # banner, then EHLO
        # One message each (the same bytes again would be the same message, stored once).
        body = f"Subject: p\r\n\r\nfrom {client_ip}\r\n".encode()
        reply = send_message(client, "a@example.org", ["box@mx.test"], body)
        assert reply.code == 250, reply
        stored = mongo[db_name]["messages"].find_one({"_id": queued_id(reply.text)})
        assert stored is not None and stored["peer_ip"] == client_ip
        raw = stored["received_header"] if "received_header" in stored else b""
        assert client_ip.encode() in bytes(raw)


def test_per_ip_cap_counts_the_client_in_the_header_not_the_proxy(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(**PROXIED)
    held = [through_proxy(receiver, v2("198.51.100.20")) for _ in range(2)]
    for client in held:
        assert client.reply().code == 220
    third = through_proxy(receiver, v2("198.51.100.20")).reply()
    assert (third.code, third.text[:5]) == (421, "4.7.0")
    # Same proxy, other client: served, although the proxy holds 3 connections already.
    assert through_proxy(receiver, v1("198.51.100.21")).reply().code == 220


def test_blocklist_applies_to_the_client_in_the_header(
    make_receiver: ServiceFactory, mongo: MongoClient[dict[str, Any]], db_name: str
) -> None:
    mongo[db_name]["blocklist"].insert_one(entry_document("198.51.100.30/32"))
    receiver = make_receiver(**PROXIED)

    def refused() -> bool:
        reply = through_proxy(receiver, v2("198.51.100.30")).reply()
        return (reply.code, reply.text[:5]) == (554, "5.7.1")

    assert wait_for(refused, timeout=5)
    assert through_proxy(receiver, v2("198.51.100.31")).reply().code == 220


def test_header_from_an_untrusted_address_is_refused(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(**PROXIED)
    spoofer = RawClient(receiver.host, receiver.port, source="127.0.0.9")
    assert spoofer.reply().code == 220  # a direct client: served as itself
    spoofer.send(v1("198.51.100.99"))
    refusal = spoofer.reply()
    assert (refusal.code, refusal.text[:5]) == (554, "5.7.1")
    assert "PROXY" in refusal.text and spoofer.closed_by_server()


def test_trusted_proxy_that_sends_garbage_is_dropped_without_a_banner(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(**PROXIED)
    sock = socket.create_connection((receiver.host, receiver.port), 5, ("127.0.0.1", 0))
    try:
        sock.sendall(b"HELO not-a-proxy-header\r\n")
        sock.settimeout(10)
        data = sock.recv(1024)
        assert not data.startswith(b"220")
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    assert through_proxy(receiver, v1("198.51.100.50")).reply().code == 220  # still serving


def dropped(client: RawClient) -> bool:
    try:
        return client.closed_by_server(timeout=0.2)
    except OSError:  # reset: dropped without a word
        return True


@pytest.mark.parametrize("workers", ["1", "2"])
def test_stalled_headers_from_a_trusted_proxy_refuse_no_direct_client(
    make_receiver: ServiceFactory, workers: str
) -> None:
    receiver = make_receiver(
        workers=workers,
        proxy_protocol="1",
        trusted_proxies="127.0.43.0/24",
        max_connections="100",
        proxy_max_pending="50",
        proxy_protocol_timeout="30",
    )
    assert wait_for(lambda: httpx.get(f"{receiver.http_url}/readyz").status_code == 200, 15)
    stalled = [RawClient(receiver.host, receiver.port, source="127.0.43.1") for _ in range(300)]
    for n in range(5):  # the global cap (100) is not theirs to take: direct clients pass
        assert RawClient(receiver.host, receiver.port, source=f"127.0.44.{n}").reply().code == 220
    held = sum(1 for c in stalled if not dropped(c))
    assert held == 50  # at most this many awaited at once from one proxy
    assert (
        'outcome="proxy_busy",worker="gate"} 250.0'
        in httpx.get(f"{receiver.http_url}/metrics").text
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_client_both_blocked_and_allowed_behind_a_proxy_is_refused_by_name(
    make_receiver: ServiceFactory, make_api: ServiceFactory, workers: str
) -> None:
    # It used to close its session with a reason the close table did not have (a KeyError
    # in one process): the door refuses it now, under its own name, in both modes.
    api = make_api()
    for path in ("blocklist", "allowlist"):
        answer = httpx.post(
            f"{api.http_url}/v1/{path}", json={"cidr": "198.51.100.77"}, headers=AUTH
        )
        assert answer.status_code == 201, answer.text
    receiver = make_receiver(workers=workers, proxy_protocol="1", trusted_proxies="127.0.45.0/24")
    assert wait_for(lambda: httpx.get(f"{receiver.http_url}/readyz").status_code == 200, 15)
    client = RawClient(receiver.host, receiver.port, source="127.0.45.1")
    client.send(proxy_headers.v1("198.51.100.77"))
    reply = client.reply()
    assert reply.code == 554 and reply.lines[0].startswith("5.7.1"), reply
    metrics = httpx.get(f"{receiver.http_url}/metrics").text
    assert 'floodgate_connections_total{outcome="blocked_allowlisted",worker="gate"} 1.0' in metrics
    assert "Traceback" not in receiver.log() and receiver.alive()
    assert RawClient(receiver.host, receiver.port, source="127.0.46.2").reply().code == 220
