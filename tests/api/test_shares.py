"""Each reader's share: reads a second (a token bucket per client), body downloads at once,
and a deadline on every write. The logic in process with a fake clock and a fake socket;
then one real API shows the 429s and a stalled reader losing its download."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from fastapi import FastAPI, Request

from api.shares import (
    CHUNK,
    HELD_PER_CLIENT,
    MAX_CLIENTS,
    ReadRate,
    SendTimeout,
    Slots,
    refuse,
    retry_after,
)
from bench.hostile import big_attachment
from tests.conftest import ServiceFactory
from tests.support.api import AUTH, deliver
from tests.support.faultproxy import FaultProxy
from tests.support.metrics import sample
from tests.support.processes import ServiceProcess
from tests.support.smtp import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_reads_its_burst_then_at_its_rate() -> None:
    clock = Clock()
    rate = ReadRate(rate=2.0, burst=5, clock=clock)
    assert [rate.take("a") for _ in range(5)] == [0.0] * 5
    assert rate.take("a") == 0.5  # empty: the next token in half a second
    assert rate.take("b") == 0.0  # another client has its own bucket
    clock.now += 0.5
    assert rate.take("a") == 0.0
    clock.now += 3_600  # a long rest refills no more than the burst
    assert sum(rate.take("a") == 0.0 for _ in range(10)) == 5
    assert retry_after(0.2) == "1" and retry_after(2.1) == "3"


def test_the_buckets_are_bounded_whatever_the_number_of_clients() -> None:
    rate = ReadRate(rate=1.0, burst=1, clock=Clock())
    for n in range(MAX_CLIENTS + 100):
        rate.take(f"c{n}")
    assert len(rate) == MAX_CLIENTS


async def test_a_refused_read_is_held_and_one_client_holds_at_most_its_share() -> None:
    rate = ReadRate(rate=1.0, burst=1, hold=0.3)
    started = time.monotonic()
    held = [asyncio.ensure_future(rate.refused("flood")) for _ in range(HELD_PER_CLIENT)]
    await asyncio.sleep(0.05)
    assert rate.held.held_by("flood") == HELD_PER_CLIENT
    await asyncio.wait_for(rate.refused("flood"), 0.1)  # past its share: answered at once
    await asyncio.wait_for(rate.refused("everyday"), 1.0)  # another client: its own share
    assert time.monotonic() - started >= 0.3
    await asyncio.gather(*held)
    assert time.monotonic() - started >= 0.3 and len(rate.held) == 0  # nothing left counted


async def test_a_refusal_for_any_share_is_answered_429_after_the_hold() -> None:
    app = FastAPI()
    app.state.read_rate = ReadRate(rate=1.0, burst=1, hold=0.2)

    @app.get("/over")
    async def over(request: Request) -> None:
        await refuse(request, "too many renders waiting for this client; retry later")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
        started = time.monotonic()
        answer = await api.get("/over")
    assert answer.status_code == 429 and answer.headers["retry-after"] == "1"
    assert time.monotonic() - started >= 0.2 and len(app.state.read_rate.held) == 0


def test_a_client_downloads_at_most_its_share_at_once() -> None:
    downloads = Slots(limit=2)
    assert downloads.acquire("a") and downloads.acquire("a")
    assert not downloads.acquire("a") and downloads.acquire("b")
    downloads.release("a")
    assert downloads.acquire("a") and len(downloads) == 3


async def test_a_reader_that_takes_nothing_ends_its_answer_at_the_send_timeout() -> None:
    sent: list[dict[str, Any]] = []
    stuck = asyncio.Event()

    async def socket_send(message: Any) -> None:
        if len(sent) == 2:  # the header and one chunk went; then the reader stops reading
            await stuck.wait()
        sent.append(message)

    finished = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await send({"type": "http.response.body", "body": b"x" * (10 * CHUNK)})
        finally:
            finished.set()

    started = time.monotonic()
    await SendTimeout(app, seconds=0.2)({"type": "http"}, None, socket_send)
    assert finished.is_set() and time.monotonic() - started < 5
    # The body went out a chunk at a time (never buffered whole), and stopped.
    assert [len(m.get("body", b"")) for m in sent] == [0, CHUNK]


def test_a_client_past_its_reads_or_its_downloads_gets_429_until_its_share_comes_back(
    make_api: ServiceFactory, receiver: ServiceProcess
) -> None:
    # One API for both shares (a process start is the dear part of such a test).
    # Refusals answered at once (no hold): the test counts tokens, not time.
    api = make_api(read_burst=6, read_rate=0.5, read_hold=0, downloads_per_client=1, send_timeout=1)
    raw, _ = big_attachment(7_000_000)  # ~9.6 MB: more than the sockets' buffers hold
    message_id = deliver(receiver, "slow@mx.test", raw)
    url = f"{api.http_url}/v1/messages/{message_id}/raw"
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", api.http_port))
    stalled.sendall(
        f"GET /v1/messages/{message_id}/raw HTTP/1.1\r\nHost: t\r\n"
        f"Authorization: {AUTH['Authorization']}\r\n\r\n".encode()
    )
    try:
        with httpx.Client(headers=AUTH, timeout=10) as client:
            # It never reads: while it holds the client's one slot, another download is 429.
            downloading = client.get(url)
            assert downloading.status_code == 429
            assert "downloads at once from this client" in downloading.json()["error"]
            # Reads past the burst: 429 with the seconds until the next token.
            listing = f"{api.http_url}/v1/mailboxes/slow@mx.test/messages"
            answers = [client.get(listing) for _ in range(12)]
            refused = answers[-1]
            # Six tokens: the stalled download and the refused one took two.
            assert [a.status_code for a in answers].count(200) >= 4 and refused.status_code == 429
            assert refused.json() == {"error": "too many reads from this client; retry later"}
            assert refused.headers["retry-after"] in ("1", "2")  # a token every 2 s
            assert client.get(f"{api.http_url}/healthz").status_code == 200  # not a read
            # The stalled reader's writes time out and the slot comes back (polled at the
            # read rate, so the polls are not what is refused).
            assert wait_for(lambda: client.get(url).status_code == 200, 30, interval=2.1)
    finally:
        stalled.close()


def test_a_client_with_many_reads_waits_its_turn_while_another_client_is_served(
    make_api: ServiceFactory, receiver: ServiceProcess, store_fault: FaultProxy, client_ip: str
) -> None:
    """One client's six reads at once get one turn (FLOODGATE_READS_AT_ONCE=1): a second
    client's read is worked on beside its first, not behind all six. The store is held
    (stalled) until every read has reached the API, so the order of the answers once it is
    released says who was worked on: on a store that runs two reads at once, without turns
    the second client's read would come last."""
    # Store deadline 60 s: the reads wait on the stalled store, they do not fail.
    api = make_api(mongodb_uri=store_fault.uri, reads_at_once=1, store_timeout="60")
    deliver(receiver, "turns@mx.test", b"Subject: turns\r\n\r\nhello\r\n")
    listing = f"{api.http_url}/v1/mailboxes/turns@mx.test/messages"
    assert httpx.get(listing, headers=AUTH, timeout=10).status_code == 200
    other = "127.0.0.1"  # another client: never client_ip, which is in 127.99.0.0/16
    answers: list[tuple[str, int]] = []
    lock = threading.Lock()

    def read(source: str) -> None:
        transport = httpx.HTTPTransport(local_address=source)
        with httpx.Client(headers=AUTH, timeout=90, transport=transport) as client:
            status = client.get(listing).status_code
        with lock:
            answers.append((source, status))

    def reads(state: str) -> float:
        return sample(api.http_url, "floodgate_api_reads", state=state)

    store_fault.set_mode("stall")
    try:
        with ThreadPoolExecutor(7) as pool:
            many = [pool.submit(read, client_ip) for _ in range(6)]
            assert wait_for(lambda: reads("waiting") == 5, 30), (reads("working"), answers)
            one = pool.submit(read, other)
            assert wait_for(lambda: reads("working") == 2, 30), (reads("waiting"), answers)
            store_fault.set_mode("pass")
            for future in [*many, one]:
                future.result()
    finally:
        store_fault.set_mode("pass")
    assert [status for _, status in answers] == [200] * 7
    # The other client's read was worked on with the first of the six: among the first two.
    assert [source for source, _ in answers].index(other) <= 1, answers
