"""A host of several workers (FLOODGATE_WORKERS): one gate judges every connection, so
per-client limits hold for the host as a whole; real processes over real sockets."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from mailstore.ids import new_message_id
from mailstore.message import MessageDocument, utcnow
from receiver.delivery.spool import Spool, segment_paths
from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.support import proxy_headers
from tests.support.faultproxy import FaultProxy
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient, queued_id, send_message, wait_for

FAST = {"idle_timeout": "30", "autoban_threshold": "0", "autoban_refusal_threshold": "0"}
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BODY = b"Subject: workers\r\n\r\nhello\r\n"


def samples(receiver: ServiceProcess, name: str, **labels: str) -> dict[str, float]:
    """One metric's value per `worker` label (the gate's and each worker's)."""
    text = httpx.get(f"{receiver.http_url}/metrics", timeout=5).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for item in family.samples:
            if item.name == name and all(item.labels.get(k) == v for k, v in labels.items()):
                worker = item.labels.get("worker", "")
                found[worker] = found.get(worker, 0.0) + float(item.value)
    return found


def worker_pids(receiver: ServiceProcess) -> dict[str, int]:
    """The latest pid of each worker, from the gate's log."""
    pids: dict[str, int] = {}
    for match in re.finditer(r"event=worker_spawned worker=(w\d+) pid=(\d+)", receiver.log()):
        pids[match.group(1)] = int(match.group(2))
    return pids


# Seconds for every worker process of a receiver to be up and its store probed: a second or
# two on a quiet host; a shared one starting several four-worker receivers at once took
# more than 15. Waiting longer costs a passing test nothing.
READY = 60


def all_ready(receiver: ServiceProcess) -> bool:
    return httpx.get(f"{receiver.http_url}/readyz", timeout=5).status_code == 200


def greeted(clients: list[RawClient]) -> int:
    return sum(1 for client in clients if client.reply().code == 220)


def test_a_cap_of_ten_greets_exactly_ten_of_thirty_connections_across_four_workers(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(workers="4", max_connections_per_ip="10", **FAST)
    assert wait_for(lambda: all_ready(receiver), READY)
    clients = [RawClient(receiver.host, receiver.port, source="127.0.40.1") for _ in range(30)]
    assert greeted(clients) == 10
    # Judged once, by the one door: only the gate counts connections.
    refused = samples(receiver, "floodgate_connections_total", outcome="per_ip_cap")
    assert refused == {"gate": 20.0}
    # Other clients spread over the workers, each under its own cap.
    others = [RawClient(receiver.host, receiver.port, source=f"127.0.41.{i}") for i in range(40)]
    assert greeted(others) == 40
    assert wait_for(
        lambda: sum(1 for v in samples(receiver, "floodgate_sessions_open").values() if v) > 2
    )


def test_a_cap_of_ten_holds_for_clients_behind_a_trusted_proxy(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(
        workers="4",
        max_connections_per_ip="10",
        proxy_protocol="1",
        trusted_proxies="127.0.42.0/24",
        **FAST,
    )
    assert wait_for(lambda: all_ready(receiver), READY)
    clients = []
    for _ in range(30):
        client = RawClient(receiver.host, receiver.port, source="127.0.42.1")
        client.send(proxy_headers.v1("203.0.113.9"))
        clients.append(client)
    assert greeted(clients) == 10
    # The first bytes after the header reach the session (read by the gate, handed over).
    fresh = RawClient(receiver.host, receiver.port, source="127.0.42.1")
    fresh.send(proxy_headers.v2("203.0.113.10") + b"")
    assert fresh.reply().code == 220
    assert fresh.cmd("EHLO proxied.test").code == 250


def test_message_rate_and_auto_ban_are_counted_once_for_the_host(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(
        workers="4", message_rate="3", autoban_threshold="3", greet_wait="0.5", idle_timeout="30"
    )
    assert wait_for(lambda: all_ready(receiver), READY)
    replies = []
    for _ in range(5):  # one connection per message, as a sending MTA does
        client = RawClient(receiver.host, receiver.port, source="127.0.43.1")
        assert client.reply().code == 220
        client.cmd("EHLO sender.test")
        mail = client.cmd("MAIL FROM:<a@sender.test>")
        if mail.code == 250:
            replies.append(send_message_after_mail(client).code)
        else:
            replies.append(mail.code)
        client.cmd("QUIT")
    assert replies == [250, 250, 250, 450, 450]
    # Three pregreet violations ban the client, whichever connection commits them.
    for _ in range(3):
        talker = RawClient(receiver.host, receiver.port, source="127.0.43.2")
        talker.send("EHLO early.test\r\n")
        assert talker.closed_by_server()
    assert wait_for(
        lambda: RawClient(receiver.host, receiver.port, source="127.0.43.2").reply().code == 554
    )
    assert sum(samples(receiver, "floodgate_autobans_total").values()) == 1


def send_message_after_mail(client: RawClient) -> object:
    assert client.cmd("RCPT TO:<box@mx.test>").code == 250
    assert client.cmd("DATA").code == 354
    client.send(BODY + b".\r\n")
    return client.reply()


def test_a_worker_killed_with_sigkill_is_restarted_and_its_slots_come_back(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(workers="4", max_connections_per_ip="10", **FAST)
    assert wait_for(lambda: all_ready(receiver), READY)
    heavy = [RawClient(receiver.host, receiver.port, source="127.0.44.1") for _ in range(10)]
    assert greeted(heavy) == 10
    others = [RawClient(receiver.host, receiver.port, source=f"127.0.45.{i}") for i in range(24)]
    assert greeted(others) == 24

    def open_per_worker() -> dict[str, float]:
        # The gate counts the host's connections; each worker its sessions.
        assert samples(receiver, "floodgate_connections_open") == {"gate": 34}
        return samples(receiver, "floodgate_sessions_open")

    assert wait_for(lambda: sum(open_per_worker().values()) == 34)
    open_now = open_per_worker()
    victim = next(name for name, value in open_now.items() if value >= 10)
    lost = int(open_now[victim]) - 10  # the other clients served by the same worker
    old_pid = worker_pids(receiver)[victim]
    os.kill(old_pid, signal.SIGKILL)
    for client in heavy:
        assert client.closed_by_server()
    # The others: exactly those of the killed worker are gone, the rest talk on.
    gone = 0
    for client in others:
        try:
            alive = client.cmd("NOOP").code == 250
        except (ConnectionError, OSError):
            alive = False
        gone += not alive
    assert gone == lost
    assert wait_for(lambda: worker_pids(receiver).get(victim, old_pid) != old_pid, 10)
    assert wait_for(lambda: all_ready(receiver), READY)
    # Every slot the dead worker held is back: ten more from the heavy client.
    again = [RawClient(receiver.host, receiver.port, source="127.0.44.1") for _ in range(11)]
    assert greeted(again) == 10


def test_the_same_message_sent_again_through_another_worker_is_stored_once(
    make_receiver: ServiceFactory,
    mongo: MongoClient[dict[str, object]],
    store_env: dict[str, str],
) -> None:
    receiver = make_receiver(workers="4", **FAST)
    assert wait_for(lambda: all_ready(receiver), READY)
    ids = []
    for source in ("127.0.46.1", "127.0.46.2", "127.0.46.3", "127.0.46.4", "127.0.46.5"):
        client = RawClient(receiver.host, receiver.port, source=source)
        assert client.reply().code == 220
        client.cmd("EHLO sender.test")
        reply = send_message(client, "a@sender.test", ["retry@mx.test"], BODY)
        assert reply.code == 250, reply
        ids.append(queued_id(reply.text))
    assert len(set(ids)) == 1

    def workers_storing() -> int:
        stored = samples(receiver, "floodgate_messages_total", outcome="stored")
        return sum(1 for value in stored.values() if value)

    assert wait_for(lambda: workers_storing() >= 2)  # the copies met different workers
    database = mongo[store_env["FLOODGATE_MONGODB_DATABASE"]]
    assert database["messages"].count_documents({"rcpt": "retry@mx.test"}) == 1


def test_v1_stats_shows_the_host_once_whatever_its_worker_count(
    make_receiver: ServiceFactory, make_api: ServiceFactory
) -> None:
    # One process is a host with one worker: the same one row, the same open count.
    api = make_api()
    rows: dict[str, dict[str, object]] = {}
    for workers in ("1", "2"):
        receiver = make_receiver(workers=workers, **FAST)
        assert wait_for(lambda: all_ready(receiver), READY)  # noqa: B023
        clients = [
            RawClient(receiver.host, receiver.port, source=f"127.0.47.{i}") for i in range(6)
        ]
        for client in clients:
            assert client.hello().code == 250
        name = f"mx.test {receiver.host}:{receiver.port}"

        def row() -> dict[str, object] | None:
            stats = httpx.get(f"{api.http_url}/v1/stats", headers=AUTH, timeout=5).json()
            return next((r for r in stats["receivers"] if r["receiver"] == name), None)  # noqa: B023

        # Every worker's store verdict too: until each has probed the store, the host's
        # row says "no answer yet" (None), which is true, and readiness does not wait for it.
        settled = {"open_connections": 6, "store_up": True}.items()
        assert wait_for(lambda: settled <= (row() or {}).items(), 15)  # noqa: B023
        rows[workers] = row() or {}
        for client in clients:
            client.close()
        receiver.stop()
    for found in rows.values():
        assert found["store_up"] is True and found["store_reason"] == "ready"
        assert found["spool"] == {"messages": 0, "bytes": 0, "oldest_s": 0.0}
        assert [key for key, _ in found["top_open"]][:6]  # type: ignore[index]
    assert set(rows["1"]) == set(rows["2"])


def test_a_retry_after_451_on_another_worker_gives_one_stored_document(
    make_receiver: ServiceFactory,
    store_fault: FaultProxy,
    mongo: MongoClient[dict[str, object]],
    store_env: dict[str, str],
) -> None:
    receiver = make_receiver(
        workers="4", mongodb_uri=store_fault.uri, store_timeout="1", spool="false", **FAST
    )
    assert wait_for(lambda: all_ready(receiver), READY)
    first = RawClient(receiver.host, receiver.port, source="127.0.48.1")
    assert first.hello().code == 250
    store_fault.set_mode("stall")  # the write waits in the network past the deadline
    assert send_message(first, "a@sender.test", ["late@mx.test"], BODY).code == 451
    store_fault.set_mode("pass")  # ... and may land after all
    database = mongo[store_env["FLOODGATE_MONGODB_DATABASE"]]
    # (it does here: the stalled bytes are forwarded once the proxy passes again)
    wait_for(lambda: database["messages"].count_documents({"rcpt": "late@mx.test"}) > 0, 3)
    ids = set()
    for source in ("127.0.48.2", "127.0.48.3", "127.0.48.4", "127.0.48.5"):  # other workers
        retry = RawClient(receiver.host, receiver.port, source=source)
        assert retry.hello().code == 250
        reply = send_message(retry, "a@sender.test", ["late@mx.test"], BODY)
        assert reply.code == 250, reply
        ids.add(queued_id(reply.text))
    assert len(ids) == 1
    assert database["messages"].count_documents({"rcpt": "late@mx.test"}) == 1


def test_stress_is_decided_for_the_host_and_applied_by_every_worker(
    make_receiver: ServiceFactory,
) -> None:
    # Stress at 4 open connections of the host: one worker alone never holds that many.
    receiver = make_receiver(
        workers="4", max_connections="10", stress_threshold="0.4", stress_idle_timeout="3"
    )
    assert wait_for(lambda: all_ready(receiver), READY)
    held = [RawClient(receiver.host, receiver.port, source=f"127.0.49.{i}") for i in range(1, 5)]
    assert greeted(held) == 4
    assert wait_for(lambda: set(samples(receiver, "floodgate_stress_mode").values()) == {1.0})
    started = time.monotonic()
    for client in held:  # the stressed idle timeout reaches sessions on every worker
        assert client.reply().code == 421
    assert time.monotonic() - started < 6  # not the 60 s idle timeout
    assert wait_for(lambda: set(samples(receiver, "floodgate_stress_mode").values()) == {0.0})


def test_a_worker_that_keeps_dying_stops_the_host_for_its_supervisor(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(workers="2", **FAST)
    assert wait_for(lambda: all_ready(receiver), READY)
    for _ in range(6):  # the sixth death within a minute is one too many
        pid = worker_pids(receiver)["w1"]
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda p=pid: worker_pids(receiver)["w1"] != p or not receiver.alive(), 10)
    assert wait_for(lambda: not receiver.alive(), 30)
    assert receiver.process.returncode == 2
    assert "event=worker_keeps_dying worker=w1" in receiver.log()


def _spooled(directory: Path, tag: str, count: int) -> list[str]:
    """Leave `count` accepted messages in a spool at `directory`, as a receiver that
    stopped with its store away would; their ids."""
    messages = [
        MessageDocument(
            id=new_message_id(),
            raw=f"Subject: {tag} {n}\r\n\r\nbody\r\n".encode(),
            mail_from="s@sender.test",
            rcpt=(f"{tag}@mx.test",),
            peer_ip="192.0.2.1",
            helo="sender.test",
            received_at=utcnow(),
            received_header=b"Received: from sender.test\r\n",
            headers={"subject": f"{tag} {n}"},
        )
        for n in range(count)
    ]

    async def write() -> None:
        spool = Spool(directory, max_bytes=1 << 20, min_free=0)
        spool.open()
        spool.start()
        try:
            await asyncio.gather(*(spool.append(m) for m in messages))
        finally:
            await spool.close()

    asyncio.run(write())
    return [m.id for m in messages]


@pytest.mark.parametrize(
    ("workers", "left_by"),
    [("2", "spool"), ("1", "spool-w2"), ("2", "spool-w3")],
    ids=["one-process-spool-to-two-workers", "worker-spool-to-one-process", "fewer-workers"],
)
def test_a_spool_left_by_another_worker_count_is_replayed(
    make_receiver: ServiceFactory,
    mongo: MongoClient[dict[str, object]],
    store_env: dict[str, str],
    tmp_path: Path,
    workers: str,
    left_by: str,
) -> None:
    data_dir = tmp_path / "host-data"
    ids = _spooled(data_dir / left_by, "left", 5)
    receiver = make_receiver(workers=workers, data_dir=str(data_dir), **FAST)
    messages = mongo[store_env["FLOODGATE_MONGODB_DATABASE"]]["messages"]
    assert wait_for(lambda: messages.count_documents({"_id": {"$in": ids}}) == 5, timeout=20)
    assert wait_for(lambda: not segment_paths(data_dir / left_by), timeout=10)
    assert "event=spool_adopted" in receiver.log()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_every_operator_view_tells_the_truth_with_one_worker_and_with_two(
    workers: str,
    make_receiver: ServiceFactory,
    make_api: ServiceFactory,
    store_fault: FaultProxy,
    mongo: MongoClient[dict[str, object]],
    store_env: dict[str, str],
) -> None:
    receiver = make_receiver(
        workers=workers,
        mongodb_uri=store_fault.uri,
        store_timeout="1",
        store_probe_interval="0.2",
        stats_interval="0.2",
        worker_status_interval="0.1",
        replay_idle="0.1",
        **FAST,
    )
    api = make_api()
    assert wait_for(lambda: all_ready(receiver), READY)
    store_fault.set_mode("reset")  # the store away: every message goes to a spool
    assert wait_for(lambda: "store not taking writes" in readyz(receiver), 15)
    # Enough clients that two workers both hold some (each client meets one worker).
    for n in range(8):
        client = RawClient(receiver.host, receiver.port, source=f"127.0.52.{n + 1}")
        assert client.hello().code == 250
        reply = send_message(client, f"s{n}@sender.test", [f"view{n}@mx.test"], BODY)
        assert reply.code == 250, reply
        client.cmd("QUIT")
    # /readyz: every worker's spool counted once.
    assert wait_for(lambda: "spooling: 8 messages" in readyz(receiver), 10), readyz(receiver)
    # `floodgate spool status` without --dir: every spool of the host.
    data_dir = receiver.env["FLOODGATE_DATA_DIR"]
    status = subprocess.run(
        [sys.executable, "-m", "floodgate", "spool", "status"],
        env={**receiver.env, "FLOODGATE_DATA_DIR": data_dir},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    last = status.stdout.splitlines()[-1]
    assert last.split(": ", 1)[1].startswith("8 messages"), status.stdout
    # The store back: every message stored once, the views say so.
    store_fault.set_mode("pass")
    database = mongo[store_env["FLOODGATE_MONGODB_DATABASE"]]
    boxes = [f"view{n}@mx.test" for n in range(8)]
    assert wait_for(
        lambda: database["messages"].count_documents({"rcpt": {"$in": boxes}}) == 8, 30
    ), (readyz(receiver), receiver.log()[-3000:])
    assert wait_for(lambda: readyz(receiver) == "ready", 15), readyz(receiver)
    # The console and `floodgate top` (/v1/stats, published through the store): one row
    # for the host, the store as its workers see it, the spools summed.
    name = f"mx.test {receiver.host}:{receiver.port}"

    def row() -> dict[str, object]:
        stats = httpx.get(f"{api.http_url}/v1/stats", headers=AUTH, timeout=5).json()
        rows = {r["receiver"]: r for r in stats["receivers"]}
        assert set(rows) == {name}, set(rows)  # no row of a gate, none of a worker
        return dict(rows[name])

    def settled() -> bool:
        current = row()
        spool = current["spool"]
        return current["store_up"] is True and isinstance(spool, dict) and spool["messages"] == 0

    assert wait_for(settled, 10), row()
    assert row()["store_reason"] == "ready"
    totals = row()["totals"]
    assert isinstance(totals, dict) and totals["stored"] == 8  # spooled counts as accepted


def readyz(receiver: ServiceProcess) -> str:
    return httpx.get(f"{receiver.http_url}/readyz", timeout=5).text.strip()


def test_a_client_reconnecting_right_after_221_is_never_refused_for_its_cap(
    make_receiver: ServiceFactory,
) -> None:
    # The slot goes back before the 221 leaves a worker process, and the door reads the
    # workers' closes before it refuses for a cap: a sending MTA's next connection, opened
    # as soon as it reads our 221, finds its slot.
    receiver = make_receiver(workers="2", max_connections_per_ip="1", **FAST)
    assert wait_for(lambda: all_ready(receiver), READY)
    codes = []
    for _ in range(200):
        client = RawClient(receiver.host, receiver.port, source="127.0.53.1")
        codes.append(client.reply().code)
        if codes[-1] == 220:
            assert client.cmd("QUIT").code == 221
        client.close()
    assert codes.count(220) == 200, codes.count(421)
