"""Debian's real HAProxy on loopback, with deploy/haproxy.cfg, in front of two receivers.

Clients connect to HAProxy from their own loopback addresses; HAProxy reaches the
receivers from 127.0.0.1 with a PROXY v2 header. The receivers must cap, blocklist and
store by the client's address, and mail must keep flowing when one receiver dies.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from tests.conftest import ServiceFactory
from tests.support.blocklist import entry_document
from tests.support.processes import HAPROXY_MISSING, ServiceProcess, free_port
from tests.support.smtp import RawClient, queued_id, send_message, wait_for

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BEHIND_PROXY = {
    "proxy_protocol": "1",
    "trusted_proxies": "127.0.0.1/32",
    "max_connections_per_ip": "1",
    "autoban_threshold": "0",
}


class HAProxy:
    def __init__(self, receivers: list[ServiceProcess], workdir: Path) -> None:
        self.port = free_port()
        self.stats = free_port()
        closed = free_port()  # a third backend that is down, as a lost host would be
        env = {
            **os.environ,
            "SMTP_BIND": f"127.0.0.1:{self.port}",
            "STATS_BIND": f"127.0.0.1:{self.stats}",
            "CHECK_INTERVAL": "300ms",
            "MAXCONN": "2000",
            "MX3": f"127.0.0.1:{closed}",
            "MX3_CHECK": str(closed),
        }
        for n, receiver in enumerate(receivers, 1):
            env[f"MX{n}"] = f"127.0.0.1:{receiver.port}"
            env[f"MX{n}_CHECK"] = str(receiver.http_port)
        self.log = workdir / "haproxy.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                ["haproxy", "-db", "-f", str(DEPLOY / "haproxy.cfg")],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def servers_up(self) -> set[str]:
        try:
            csv = httpx.get(f"http://127.0.0.1:{self.stats}/stats;csv", timeout=2).text
        except httpx.HTTPError:
            return set()
        up = set()
        for line in csv.splitlines():
            fields = line.split(",")
            server = len(fields) > 17 and fields[0] == "receivers" and fields[1] != "BACKEND"
            if server and fields[17].startswith("UP"):
                up.add(fields[1])
        return up

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


@pytest.fixture
def haproxy_pair(
    make_receiver: ServiceFactory, tmp_path: Path
) -> Iterator[tuple[HAProxy, list[ServiceProcess]]]:
    if shutil.which("haproxy") is None:
        pytest.skip(HAPROXY_MISSING)
    receivers = [make_receiver(**BEHIND_PROXY), make_receiver(**BEHIND_PROXY)]
    proxy = HAProxy(receivers, tmp_path)
    try:
        ready = wait_for(lambda: proxy.servers_up() == {"mx1", "mx2"}, timeout=15)
        assert ready, (proxy.servers_up(), proxy.log.read_text()[-3000:])
        yield proxy, receivers
    finally:
        proxy.stop()


def through(proxy: HAProxy, source: str) -> RawClient:
    return RawClient("127.0.0.1", proxy.port, source=source, timeout=10)


def test_client_behind_haproxy_is_capped_by_its_own_address(
    haproxy_pair: tuple[HAProxy, list[ServiceProcess]],
) -> None:
    proxy, _ = haproxy_pair
    held = [through(proxy, "127.0.0.5") for _ in range(2)]  # leastconn: one per receiver
    for client in held:
        assert client.reply().code == 220
    refused = through(proxy, "127.0.0.5").reply()
    assert (refused.code, refused.text[:5]) == (421, "4.7.0")
    # Every connection reaches the receivers from 127.0.0.1, yet another client is served.
    other = through(proxy, "127.0.0.6")
    assert other.hello().code == 250


def test_client_behind_haproxy_is_blocklisted_by_its_own_address(
    haproxy_pair: tuple[HAProxy, list[ServiceProcess]],
    mongo: MongoClient[dict[str, Any]],
    db_name: str,
) -> None:
    proxy, _ = haproxy_pair
    mongo[db_name]["blocklist"].insert_one(entry_document("127.0.0.7/32"))

    def refused_everywhere() -> bool:
        replies = [through(proxy, "127.0.0.7").reply() for _ in range(4)]  # both receivers
        return all((r.code, r.text[:5]) == (554, "5.7.1") for r in replies)

    assert wait_for(refused_everywhere, timeout=5)
    assert through(proxy, "127.0.0.8").reply().code == 220


def test_mail_keeps_flowing_when_one_receiver_dies(
    haproxy_pair: tuple[HAProxy, list[ServiceProcess]],
    mongo: MongoClient[dict[str, Any]],
    db_name: str,
) -> None:
    proxy, receivers = haproxy_pair
    receivers[0].kill()
    started = time.monotonic()
    ids = []
    for n in range(12):
        client = through(proxy, f"127.0.9.{n + 1}")
        assert client.hello().code == 250
        body = f"Subject: f {n}\r\n\r\nx\r\n".encode()  # each its own message
        reply = send_message(client, "a@example.org", ["box@mx.test"], body)
        assert reply.code == 250, reply
        ids.append(queued_id(reply.text))
        client.close()
    assert time.monotonic() - started < 20
    stored = mongo[db_name]["messages"].find({"_id": {"$in": ids}})
    peers = {doc["peer_ip"] for doc in stored}
    assert len(peers) == 12 and all(p.startswith("127.0.9.") for p in peers)
    assert wait_for(lambda: proxy.servers_up() == {"mx2"}, timeout=5)
