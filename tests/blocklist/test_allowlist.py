"""The allowlist through real processes: allowlisted senders are never throttled or
auto-banned, keep a concurrency cap of their own, lose to an explicit blocklist entry, and
are enforced from each receiver's own copy with the API and the store gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient

from mailstore.embedded import EmbeddedStore
from tests.blocklist.test_enforcement import api_call, greeting, refused, wait_fresh
from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.support.blocklist import entry_document
from tests.support.metrics import sample
from tests.support.processes import ServiceProcess, clean_environ
from tests.support.smtp import RawClient, wait_for

TIGHT = {"message_rate": "3", "recipient_rate": "3", "connection_rate": "3"}


def messages_from(receiver: ServiceProcess, source: str, count: int) -> list[int]:
    client = RawClient(receiver.host, receiver.port, source=source)
    client.hello()
    codes = []
    for n in range(count):
        client.send(f"MAIL FROM:<s{n}@example.org>\r\n")
        reply = client.reply()
        if reply.code != 250:
            codes.append(reply.code)
            continue
        codes.append(send_message_after_mail(client))
    client.close()
    return codes


def send_message_after_mail(client: RawClient) -> int:
    assert client.cmd("RCPT TO:<allow@mx.test>").code == 250
    assert client.cmd("DATA").code == 354
    client.send(b"Subject: a\r\n\r\nx\r\n.\r\n")
    return client.reply().code


def test_an_allowlisted_sender_is_never_throttled_while_its_neighbour_is(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(allowlist="127.0.20.0/24", autoban_threshold="0", **TIGHT)
    assert messages_from(receiver, "127.0.20.5", 30) == [250] * 30  # 10x the rate
    neighbour = messages_from(receiver, "127.0.21.5", 6)
    assert neighbour[:3] == [250] * 3 and set(neighbour[3:]) == {450}
    for _ in range(10):  # the connection rate does not apply either
        assert greeting(receiver, "127.0.20.5").startswith("220")
    neighbour_greetings = [greeting(receiver, "127.0.21.5")[:9] for _ in range(3)]
    assert neighbour_greetings[-1] == "421 4.7.0"  # one connection so far; the rate is 3


def test_an_allowlisted_sender_is_never_autobanned_but_keeps_its_own_cap(
    make_receiver: ServiceFactory, mongo: MongoClient[dict[str, Any]], db_name: str
) -> None:
    receiver = make_receiver(
        allowlist="127.0.22.7",
        max_connections_per_ip="1",
        allowlist_max_connections_per_ip="3",
        autoban_threshold="2",
        hard_error_limit="1",
    )
    held = [RawClient(receiver.host, receiver.port, source="127.0.22.7") for _ in range(3)]
    assert [client.reply().code for client in held] == [220] * 3  # three, though the cap is 1
    for _ in range(5):
        assert greeting(receiver, "127.0.22.7").startswith("421 4.7.0")  # its own cap: 3
    for client in held:  # errors past the hard limit, again and again: closed, never banned
        assert client.cmd("DATA").code == 503
        assert client.cmd("DATA").code == 503
        assert client.reply().code == 421
        client.close()
    assert wait_for(lambda: greeting(receiver, "127.0.22.7").startswith("220"), timeout=5)
    assert mongo[db_name]["blocklist"].count_documents({}) == 0
    assert sample(receiver.http_url, "floodgate_autobans_total") == 0


def test_an_explicit_blocklist_entry_beats_the_allowlist(
    make_receiver: ServiceFactory, mongo: MongoClient[dict[str, Any]], db_name: str
) -> None:
    mongo[db_name]["blocklist"].insert_one(entry_document("127.0.23.0/24"))
    receiver = make_receiver(allowlist="127.0.23.9")
    assert wait_for(lambda: refused(receiver, "127.0.23.9"), timeout=5)
    url = receiver.http_url
    assert sample(url, "floodgate_connections_total", outcome="blocked_allowlisted") >= 1


def test_allowlist_added_through_the_api_lifts_an_autoban_on_every_receiver(
    make_api: ServiceFactory, make_receiver: ServiceFactory
) -> None:
    api = make_api()
    limits = {"max_connections_per_ip": "1", "autoban_refusal_threshold": "3", "idle_timeout": "30"}
    first, second = make_receiver(**limits), make_receiver(**limits)
    wait_fresh(first, second)
    holder = RawClient(first.host, first.port, source="127.0.24.1")
    assert holder.reply().code == 220
    for _ in range(3):
        assert greeting(first, "127.0.24.1").startswith("421 4.7.0")
    assert wait_for(lambda: refused(second, "127.0.24.1"), timeout=2)  # banned everywhere
    holder.close()
    added = api_call(api, "POST", "/v1/allowlist", json={"cidr": "127.0.24.0/24", "reason": "x"})
    assert added.status_code == 201, added.text
    assert added.json()["lifted"] == ["127.0.24.1/32"]
    for receiver in (first, second):
        assert wait_for(lambda r=receiver: greeting(r, "127.0.24.1").startswith("220"), timeout=1)
    listed = api_call(api, "GET", "/v1/allowlist").json()["entries"]
    assert [(e["cidr"], e["source"]) for e in listed] == [("127.0.24.0/24", "manual")]
    assert api_call(api, "GET", "/v1/allowlist/check/127.0.24.200").json()["allowed"] is True
    assert api_call(api, "GET", "/v1/blocklist/check/127.0.24.1").json()["blocked"] is False
    auto = api_call(api, "POST", "/v1/allowlist", json={"cidr": "127.0.25.0/24", "source": "auto"})
    assert auto.status_code == 422


def test_the_allowlist_holds_from_the_snapshot_with_the_api_and_store_gone(
    make_receiver: ServiceFactory, tmp_path: Path
) -> None:
    store = EmbeddedStore(tmp_path / "allow-store")
    uri = store.start()
    data_dir = tmp_path / "receiver-data"
    try:
        with MongoClient(uri) as client:
            client["al"]["allowlist"].insert_one(entry_document("127.0.26.0/24"))
        settings = {"mongodb_uri": uri, "mongodb_database": "al", "data_dir": str(data_dir)}
        first = make_receiver(connection_rate="2", **settings)
        assert wait_for(lambda: all(greeting(first, "127.0.26.4")[:3] == "220" for _ in "xyz"))
        assert first.stop() == 0
        assert (data_dir / "allowlist.snapshot").exists()
        store.kill()
        second = make_receiver(connection_rate="2", store_timeout="1", **settings)
        codes = [greeting(second, "127.0.26.4")[:3] for _ in range(8)]
        assert codes == ["220"] * 8  # past the connection rate: allowed, from the snapshot
        others = [greeting(second, "127.0.27.4")[:3] for _ in range(4)]
        assert others[2:] == ["421", "421"]
    finally:
        store.stop()


def test_the_cli_manages_the_allowlist(make_api: ServiceFactory, tmp_path: Path) -> None:
    api = make_api()
    env = {**clean_environ(), "FLOODGATE_ADMIN_TOKEN": ADMIN_TOKEN}

    def allow(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "floodgate", "allow", "--api", api.http_url, *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    assert allow("add", "198.51.100.0/24", "--reason", "provider pool").returncode == 0
    listing = allow("ls")
    assert listing.returncode == 0 and "198.51.100.0/24" in listing.stdout
    assert "is allowed by" in allow("check", "198.51.100.9").stdout
    assert "is not allowed" in allow("check", "192.0.2.9").stdout
    entries = tmp_path / "allow.txt"
    entries.write_text("203.0.113.0/24 transactional\n2001:db8::/48\n# comment\n")
    assert "2 entries" in allow("import", str(entries)).stdout
    assert allow("rm", "198.51.100.0/24").returncode == 0
    body = httpx.get(
        f"{api.http_url}/v1/allowlist", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ).json()
    assert sorted(e["cidr"] for e in body["entries"]) == ["2001:db8::/48", "203.0.113.0/24"]
