"""One door for a host of one worker and of N: the same gate judges, the same hand-over
contract, the same views. In the test's own process, over real sockets: TCP to the door,
SEQPACKET channels with SCM_RIGHTS to workers on the same event loop."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.inprocess import InProcessHost, reply, start_host
from tests.support.proxy_headers import v1

pytestmark = pytest.mark.parametrize("workers", [1, 2])


async def greet(host: InProcessHost, source: str) -> tuple[bytes, asyncio.StreamWriter]:
    reader, writer = await host.client(source)
    return await reply(reader), writer


async def test_a_per_client_cap_holds_exactly_for_the_host(workers: int) -> None:
    host = await start_host(workers, max_connections_per_ip=3, autoban_refusal_threshold=0)
    try:
        greetings = [await greet(host, "127.0.60.1") for _ in range(6)]
        codes = [line[:3] for line, _ in greetings]
        assert codes == [b"220"] * 3 + [b"421"] * 3
        assert host.host.admission.counts.of("127.0.60.1") == 3
        others = [await greet(host, f"127.0.61.{n}") for n in range(1, 9)]
        assert all(line.startswith(b"220 ") for line, _ in others)
    finally:
        await host.close()


async def test_a_client_that_reconnects_right_after_221_finds_its_slot(workers: int) -> None:
    # A sending MTA opens its next connection as soon as it reads our 221: the slot its
    # session gave back must be free then, with workers in other processes too.
    host = await start_host(workers, max_connections_per_ip=1, autoban_refusal_threshold=0)
    try:
        for _ in range(50):
            reader, writer = await host.client("127.0.62.1")
            assert (await reply(reader)).startswith(b"220 ")
            writer.write(b"QUIT\r\n")
            assert (await reply(reader)).startswith(b"221 ")
        refused = host.host.telemetry.metrics.connections.counts["per_ip_cap"]
        assert refused == 0
    finally:
        await host.close()


async def test_a_client_both_blocked_and_allowed_behind_a_proxy_is_refused_by_name(
    workers: int,
) -> None:
    host = await start_host(workers)
    host.lists.blocked.add("198.51.100.7")
    host.lists.allowed.add("198.51.100.7")
    try:
        reader, writer = await host.client("127.0.99.1")  # the trusted proxy
        writer.write(v1("198.51.100.7"))
        assert (await reply(reader)).startswith(b"554 5.7.1")
        metrics = host.host.telemetry.metrics
        assert metrics.connections.counts["blocked_allowlisted"] == 1
        # The door refused it: no session was built, and the host serves on.
        line, _ = await greet(host, "127.0.63.1")
        assert line.startswith(b"220 ")
        assert host.host.admission.counts.total == 1
    finally:
        await host.close()


async def test_a_message_is_stored_and_counted_for_the_host(workers: int) -> None:
    host = await start_host(workers)
    try:
        reader, writer = await host.client("127.0.64.1")
        assert (await reply(reader)).startswith(b"220 ")
        writer.write(b"EHLO c.test\r\n")
        assert (await reply(reader)).startswith(b"250 ")
        writer.write(b"MAIL FROM:<a@c.test>\r\nRCPT TO:<b@mx.test>\r\nDATA\r\n")
        for expected in (b"250 ", b"250 ", b"354 "):
            assert (await reply(reader)).startswith(expected)
        writer.write(b"Subject: one door\r\n\r\nhello\r\n.\r\nQUIT\r\n")
        assert (await reply(reader)).startswith(b"250 2.0.0 Ok: queued as")
        assert (await reply(reader)).startswith(b"221 ")
        [stored] = host.store.messages
        assert stored.peer_ip == "127.0.64.1" and stored.rcpt == ("b@mx.test",)
        # The host's live statistics know who stored it, whichever process did.
        for _ in range(50):
            if host.host.telemetry.live.stored_total:
                break
            await asyncio.sleep(0.01)
        snapshot = host.host.stats_snapshot()
        assert snapshot["totals"]["stored"] == 1  # type: ignore[index]
        assert snapshot["receiver"] == "mx.test 127.0.0.1:2525"
    finally:
        await host.close()


async def test_readiness_is_told_once_for_the_host(workers: int) -> None:
    host = await start_host(workers)
    try:
        for _ in range(100):  # a worker process says so with its first status
            ready, reason = host.host.ready()
            if ready:
                break
            await asyncio.sleep(0.02)
        assert (ready, reason) == (True, "ready")
        host.host.door.drain()
        assert host.host.ready() == (False, "shutting down")
    finally:
        await host.close()
