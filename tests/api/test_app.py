"""The API's own health through real processes: /readyz answers within its deadline with
the reason while the store is away (a 1 s probe sees the cause, not a timeout)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from mailstore.embedded import EmbeddedStore
from tests.conftest import ServiceFactory
from tests.support.faultproxy import FaultProxy
from tests.support.processes import ServiceProcess


def timed_readyz(api: ServiceProcess) -> tuple[float, int, str]:
    started = time.monotonic()
    answer = httpx.get(f"{api.http_url}/readyz", timeout=1.0)  # a 1 s probe
    return time.monotonic() - started, answer.status_code, answer.text


def test_readyz_says_why_within_a_second_when_the_store_hangs(
    make_api: ServiceFactory, store_fault: FaultProxy
) -> None:
    api = make_api(mongodb_uri=store_fault.uri)
    assert timed_readyz(api)[1] == 200
    store_fault.set_mode("stall")
    try:
        for _ in range(3):
            seconds, status, body = timed_readyz(api)
            assert status == 503 and seconds < 1.0, (seconds, body)
            assert "message store not answering: timeout" in body, body
    finally:
        store_fault.set_mode("pass")
    assert timed_readyz(api)[1] == 200


def test_readyz_says_the_store_refuses_connections(
    make_api: ServiceFactory, tmp_path: Path
) -> None:
    store = EmbeddedStore(tmp_path / "store")
    uri = store.start()
    try:
        api = make_api(mongodb_uri=uri)
        assert timed_readyz(api)[1] == 200
    finally:
        store.stop()
    answers = [timed_readyz(api) for _ in range(3)]
    for seconds, status, _body in answers:
        assert status == 503 and seconds < 1.0, answers
    # The first may see its pooled connection dropped; then the store refuses new ones.
    assert "message store not answering: refused" in answers[-1][2], answers
