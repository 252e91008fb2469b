"""Signature verification in worker processes (receiver.intake.authcheck.pool): real workers,
real keys; pipelined jobs, the bounded queue, and a stuck worker killed and replaced."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from processes import ProcessGone
from receiver.intake.authcheck.pool import Verifier
from tests.support import dkimkeys
from tests.support.processes import children_running

WORKER = "receiver.intake.authcheck.worker"
KEY = dkimkeys.rsa_key()
NAME = "s1._domainkey.shop.test"
KEYS = {NAME: KEY.record}


def signed(body: str = "Your code is 123456.\r\n") -> bytes:
    return dkimkeys.sign(dkimkeys.message(body=body), "shop.test", "s1", KEY)


async def test_start_returns_at_once_and_jobs_sent_meanwhile_wait_for_the_workers() -> None:
    verifier = Verifier(workers=2, queue=64)
    await verifier.start()
    try:
        assert verifier._all == []  # the receiver did not wait for its workers
        # The first jobs, asked together before the workers are up, wait for the start
        # and are answered.
        first = await asyncio.gather(
            *(verifier.verify(signed(), KEYS, [(0, NAME)], False) for _ in range(3))
        )
        assert [o["dkim"][0][0] if o else None for o in first] == ["pass"] * 3
        pids = sorted(worker.pid for worker in verifier._all)
        assert len(pids) == 2 and children_running(WORKER) == pids
    finally:
        await verifier.close()
    assert verifier.busy == 0 and children_running(WORKER) == []


async def test_jobs_sent_together_all_come_back_in_order() -> None:
    verifier = Verifier(workers=2, queue=64)
    await verifier.start()
    try:
        good, bad = signed(), signed().replace(b"123456", b"000000")
        outcomes = await asyncio.gather(
            *(verifier.verify(good if n % 2 else bad, KEYS, [(0, NAME)], False) for n in range(20))
        )
    finally:
        await verifier.close()
    results = [o["dkim"][0][0] if o else None for o in outcomes]
    assert results == ["fail", "pass"] * 10
    assert verifier.busy == 0


async def test_past_the_queue_a_job_is_refused_at_once() -> None:
    verifier = Verifier(workers=1, queue=2)
    await verifier.start()
    try:
        jobs = [
            verifier.verify(signed(), KEYS, [(0, NAME)], False, f"192.0.2.{n}") for n in range(3)
        ]
        tasks = [asyncio.ensure_future(job) for job in jobs]
        outcomes = await asyncio.gather(*tasks)
    finally:
        await verifier.close()
    assert [o is None for o in outcomes] == [False, False, True]


async def test_a_stuck_worker_is_killed_replaced_and_its_work_stops() -> None:
    verifier = Verifier(workers=1, queue=8, stuck_after=0.2)
    await verifier.start()
    try:
        assert (await verifier.verify(signed(), KEYS, [(0, NAME)], False)) is not None
        [worker] = verifier._all
        pid = worker.pid
        # A job the worker can never finish: the head of a frame whose rest never comes.
        stuck = worker._expect()
        stdin = worker.transport.get_pipe_transport(0)
        stdin.write((1 << 20).to_bytes(4, "big") + b"{")  # type: ignore[attr-defined]
        await asyncio.sleep(0.25)
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # queued behind it, the caller's deadline passes
            await asyncio.wait_for(verifier.verify(signed(), KEYS, [(0, NAME)], False), 0.3)
        with pytest.raises(ProcessGone):
            await stuck
        assert time.monotonic() - started < 1.0
        await asyncio.sleep(0.2)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # gone: its work really stopped
        deadline = time.monotonic() + 10
        while not verifier._all and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        outcome = await verifier.verify(signed(), KEYS, [(0, NAME)], False)
    finally:
        await verifier.close()
    assert outcome is not None and outcome["dkim"][0][0] == "pass"


async def test_one_client_holds_at_most_half_the_queue_and_others_are_served_meanwhile() -> None:
    verifier = Verifier(workers=1, queue=4)
    await verifier.start(now=True)
    try:
        # One address asks six at once, then a bystander once, then a /64 three times.
        flood = [verifier.verify(signed(), KEYS, [(0, NAME)], False, "192.0.2.7") for _ in range(6)]
        v6 = [
            verifier.verify(signed(), KEYS, [(0, NAME)], False, f"2001:db8:1:2::{n}")
            for n in (1, 2, 3)
        ]
        bystander = verifier.verify(signed(), KEYS, [(0, NAME)], False, "198.51.100.1")
        outcomes = await asyncio.gather(*flood, bystander, *v6)
    finally:
        await verifier.close()
    answered = [o is not None for o in outcomes]
    assert answered[:6] == [True, True, False, False, False, False]  # half the queue: 2
    assert answered[6] is True  # the bystander is served while the flood holds its share
    assert answered[7:] == [True, False, False]  # then the queue (4) is full
    assert verifier.busy == 0 and verifier._clients == {}


async def test_one_clients_jobs_take_half_the_workers_and_a_bystander_is_answered_meanwhile() -> (
    None
):
    # A worker answers in order: had the flood's jobs gone to both workers, the bystander's
    # would wait behind two of them (bench attacks, S8: past the deadline).
    verifier = Verifier(workers=2, queue=16)
    await verifier.start(now=True)
    heavy = signed(body=("x" * 998 + "\r\n") * 512)  # half a megabyte to canonicalize
    try:
        flood = [
            asyncio.ensure_future(verifier.verify(heavy, KEYS, [(0, NAME)], False, "192.0.2.7"))
            for _ in range(4)
        ]
        await asyncio.sleep(0)  # each job is down a worker's pipe
        assert len(verifier._placed["192.0.2.7"]) == 1
        outcome = await verifier.verify(signed(), KEYS, [(0, NAME)], False, "198.51.100.1")
        assert outcome is not None and outcome["dkim"][0][0] == "pass"
        assert not all(job.done() for job in flood)  # answered while the flood still waits
        assert all(o is not None for o in await asyncio.gather(*flood))
    finally:
        await verifier.close()
    assert verifier._placed == {}


async def test_the_client_a_worker_was_killed_for_waits_for_its_successor_not_another() -> None:
    verifier = Verifier(workers=2, queue=8, stuck_after=0.2)
    await verifier.start(now=True)
    try:
        first = verifier._all[0]
        stdin = first.transport.get_pipe_transport(0)
        stdin.write((1 << 20).to_bytes(4, "big") + b"{")  # type: ignore[attr-defined]
        with pytest.raises(TimeoutError):  # its job went to the stuck worker (least loaded)
            await asyncio.wait_for(
                verifier.verify(signed(), KEYS, [(0, NAME)], False, "192.0.2.7"), 0.3
            )
        assert first not in verifier._all  # killed for it
        # Until the successor is up, that client gets nothing; the others the live worker.
        assert await verifier.verify(signed(), KEYS, [(0, NAME)], False, "192.0.2.7") is None
        other = await verifier.verify(signed(), KEYS, [(0, NAME)], False, "198.51.100.1")
        assert other is not None and other["dkim"][0][0] == "pass"
        deadline = time.monotonic() + 10
        while len(verifier._all) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        again = await verifier.verify(signed(), KEYS, [(0, NAME)], False, "192.0.2.7")
    finally:
        await verifier.close()
    assert again is not None and again["dkim"][0][0] == "pass"


async def test_a_v6_network_shares_one_share() -> None:
    verifier = Verifier(workers=1, queue=4)
    await verifier.start(now=True)
    try:
        jobs = [
            verifier.verify(signed(), KEYS, [(0, NAME)], False, f"2001:db8:1:2::{n}")
            for n in (1, 2, 3)
        ]
        outcomes = await asyncio.gather(*jobs)
    finally:
        await verifier.close()
    assert [o is not None for o in outcomes] == [True, True, False]
