"""Every receiver enforces the blocklist from its own cache, fed straight from the store.

Real processes: one API and two receivers on one store; clients are told apart by binding
to distinct loopback source addresses.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from mailstore.embedded import EmbeddedStore
from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.support.blocklist import entry_document
from tests.support.metrics import sample
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient, wait_for

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def greeting(receiver: ServiceProcess, source: str) -> str:
    """The first reply a client from `source` gets: `220 ...` or `554 5.7.1 ...`."""
    client = RawClient(receiver.host, receiver.port, source=source, timeout=5)
    try:
        reply = client.reply()
        return f"{reply.code} {reply.text}"
    finally:
        client.close()


def refused(receiver: ServiceProcess, source: str) -> bool:
    return greeting(receiver, source).startswith("554 5.7.1")


def api_call(api: ServiceProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, api.http_url + path, headers=AUTH, timeout=10, **kwargs)


def wait_fresh(*receivers: ServiceProcess) -> None:
    for receiver in receivers:
        assert wait_for(
            lambda r=receiver: httpx.get(r.http_url + "/readyz", timeout=5).status_code == 200,
            timeout=15,
        ), receiver.log


def test_ban_through_the_api_reaches_both_receivers_within_a_second(
    make_api: ServiceFactory, make_receiver: ServiceFactory
) -> None:
    api = make_api()
    receivers = [make_receiver(), make_receiver()]
    wait_fresh(*receivers)
    assert greeting(receivers[0], "127.0.5.9").startswith("220")

    response = api_call(api, "POST", "/v1/blocklist", json={"cidr": "127.0.5.9", "reason": "t"})
    assert response.status_code == 201, response.text
    added = time.monotonic()
    for receiver in receivers:
        assert wait_for(lambda r=receiver: refused(r, "127.0.5.9"), timeout=1.0, interval=0.02)
    assert time.monotonic() - added < 1.0
    for receiver in receivers:
        assert greeting(receiver, "127.0.5.10").startswith("220")  # its neighbour is not
        assert sample(receiver.http_url, "floodgate_connections_total", outcome="blocked") >= 1
        assert sample(receiver.http_url, "floodgate_blocklist_entries") == 1

    assert api_call(api, "DELETE", "/v1/blocklist/127.0.5.9").status_code == 204
    for receiver in receivers:
        assert wait_for(lambda r=receiver: not refused(r, "127.0.5.9"), timeout=2, interval=0.02)


def test_cidr_blocks_its_whole_range_and_nothing_outside(
    make_api: ServiceFactory, make_receiver: ServiceFactory
) -> None:
    api = make_api()
    receiver = make_receiver()
    wait_fresh(receiver)
    response = api_call(api, "POST", "/v1/blocklist", json={"cidr": "127.0.6.0/25"})
    assert response.status_code == 201 and response.json()["cidr"] == "127.0.6.0/25"
    assert wait_for(lambda: refused(receiver, "127.0.6.1"), timeout=2)
    for inside in ("127.0.6.0", "127.0.6.77", "127.0.6.127"):
        assert refused(receiver, inside), inside
    for outside in ("127.0.6.128", "127.0.6.254", "127.0.5.255", "127.0.7.1"):
        assert greeting(receiver, outside).startswith("220"), outside


def test_expiry_is_honoured_without_a_restart(
    make_api: ServiceFactory, make_receiver: ServiceFactory
) -> None:
    api = make_api()
    receiver = make_receiver()
    wait_fresh(receiver)
    response = api_call(api, "POST", "/v1/blocklist", json={"cidr": "127.0.8.1", "ttl_seconds": 2})
    assert response.status_code == 201 and response.json()["expires_at"]
    assert wait_for(lambda: refused(receiver, "127.0.8.1"), timeout=1)
    started = time.monotonic()
    assert wait_for(lambda: not refused(receiver, "127.0.8.1"), timeout=5, interval=0.1)
    assert 1.0 < time.monotonic() - started < 3.5  # let in on time, not at the next resync
    listed = api_call(api, "GET", "/v1/blocklist").json()["entries"]
    assert listed == []  # and the API no longer lists it, TTL monitor or not


def test_enforcement_never_needs_the_api(
    make_api: ServiceFactory,
    make_receiver: ServiceFactory,
    mongo: MongoClient[dict[str, Any]],
    db_name: str,
) -> None:
    api = make_api()
    receiver = make_receiver()
    wait_fresh(receiver)
    api_call(api, "POST", "/v1/blocklist", json={"cidr": "127.0.9.1"})
    assert wait_for(lambda: refused(receiver, "127.0.9.1"), timeout=2)
    api.stop()
    assert refused(receiver, "127.0.9.1")
    mongo[db_name]["blocklist"].insert_one(entry_document("127.0.9.2/32"))
    assert wait_for(lambda: refused(receiver, "127.0.9.2"), timeout=2)
    assert greeting(receiver, "127.0.9.3").startswith("220")


def test_resync_converges_without_a_change_stream(
    make_receiver: ServiceFactory, mongo: MongoClient[dict[str, Any]], db_name: str
) -> None:
    receiver = make_receiver(blocklist_change_stream="false", blocklist_resync_interval="1")
    wait_fresh(receiver)
    collection = mongo[db_name]["blocklist"]
    collection.insert_one(entry_document("127.0.10.0/24"))
    assert wait_for(lambda: refused(receiver, "127.0.10.5"), timeout=3)
    collection.delete_one({"_id": "127.0.10.0/24"})
    assert wait_for(lambda: not refused(receiver, "127.0.10.5"), timeout=3)
    staleness = sample(receiver.http_url, "floodgate_blocklist_staleness_seconds")
    assert 0 <= staleness < 2.5


def test_bans_survive_a_restart_while_the_store_is_down(
    make_receiver: ServiceFactory, tmp_path: Path
) -> None:
    store = EmbeddedStore(tmp_path / "own-store")
    uri = store.start()
    data_dir = tmp_path / "receiver-data"
    try:
        with MongoClient(uri) as client:
            client["bl"]["blocklist"].insert_one(entry_document("127.0.11.0/24"))
            client["bl"]["blocklist"].insert_one(entry_document("::1"))
        settings = {"mongodb_uri": uri, "mongodb_database": "bl", "data_dir": str(data_dir)}
        first = make_receiver(**settings)
        assert wait_for(lambda: refused(first, "127.0.11.3"), timeout=5)
        assert first.stop() == 0  # a clean stop writes the snapshot
        assert (data_dir / "blocklist.snapshot").exists()

        store.kill()
        second = make_receiver(store_timeout="1", **settings)
        assert refused(second, "127.0.11.3")  # enforced from the snapshot, store or not
        assert greeting(second, "127.0.12.1").startswith("220")
        readiness = httpx.get(second.http_url + "/readyz", timeout=5)
        # Honest: the store is unreachable, and mail is taken all the same, into the spool.
        assert readiness.status_code == 200, readiness.text
        assert "store not taking writes" in readiness.text and "spooling" in readiness.text
    finally:
        store.stop()


def test_autoban_is_shared_with_every_receiver(
    make_receiver: ServiceFactory, mongo: MongoClient[dict[str, Any]], db_name: str
) -> None:
    limits = {"max_connections_per_ip": "1", "autoban_refusal_threshold": "3", "idle_timeout": "30"}
    first, second = make_receiver(**limits), make_receiver(**limits)
    wait_fresh(first, second)
    holder = RawClient(first.host, first.port, source="127.0.13.1")
    assert holder.reply().code == 220
    for _ in range(3):
        assert greeting(first, "127.0.13.1").startswith("421 4.7.0")
    # The other receiver never saw this client misbehave, yet refuses it.
    assert wait_for(lambda: refused(second, "127.0.13.1"), timeout=2)
    stored = mongo[db_name]["blocklist"].find_one({"_id": "127.0.13.1/32"})
    assert stored is not None and stored["source"] == "auto" and stored["expires_at"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"cidr": "127.0.0.1/8"}, "host bits set; the network is 127.0.0.0/8"),
        ({"cidr": "300.1.1.1"}, "not an IPv4 or IPv6 address"),
        ({"cidr": "example.com"}, "not an IPv4 or IPv6 address"),
        ({"cidr": "10.0.0.0/8", "reason": "x" * 501}, "reason"),
        ({"cidr": "10.0.0.0/8", "ttl_seconds": 0}, "ttl_seconds"),
        ({"cidr": "10.0.0.0/8", "ttl_seconds": 10**9}, "ttl_seconds"),
        ({"cidr": "10.0.0.0/8", "colour": "red"}, "colour"),
        ({}, "cidr"),
    ],
)
def test_invalid_entries_get_422_with_a_clear_message(
    shared_api: ServiceProcess, body: dict[str, Any], message: str
) -> None:
    response = api_call(shared_api, "POST", "/v1/blocklist", json=body)
    assert response.status_code == 422, response.text
    assert message in response.text
    assert api_call(shared_api, "GET", "/v1/blocklist").json()["entries"] == []
