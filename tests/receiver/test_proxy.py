"""PROXY protocol (v1 and v2): only trusted proxies may name the client, and every per-IP
control then uses the client named in the header."""

from __future__ import annotations

import socket
from typing import Any

from pymongo import MongoClient

from tests.conftest import ServiceFactory
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
