"""What a failed attempt does, in process with a fake store of deliveries: a retry after
its backoff, a failed delivery once the schedule is spent, the endpoint disabled after one
schedule of failures in a row, and the operator told once per interval."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from webhooks import sender
from webhooks.dispatcher import Dispatcher
from webhooks.endpoints import Endpoint
from webhooks.limits import WebhookLimits

NOW = 1_800_000_000.0
FAILED = sender.Attempt(sender.Outcome.HTTP_ERROR, 500, "answered 500")


class FakeHooks:
    """The store's side of a failure, recorded."""

    def __init__(self) -> None:
        self.failures: dict[str, int] = {}
        self.disabled: dict[str, str] = {}
        self.settled: list[tuple[str, dict[str, Any], bool]] = []

    async def failed(self, endpoint_id: str, error: str, at: float) -> int:
        self.failures[endpoint_id] = self.failures.get(endpoint_id, 0) + 1
        return self.failures[endpoint_id]

    async def disable(self, endpoint_id: str, reason: str) -> bool:
        if endpoint_id in self.disabled:
            return False
        self.disabled[endpoint_id] = reason
        return True

    async def settle(self, delivery_id: str, changes: dict[str, Any], done: bool) -> None:
        self.settled.append((delivery_id, changes, done))


@pytest.fixture
async def dispatcher() -> Any:
    limits = WebhookLimits(retry_schedule=(10.0, 20.0))
    hooks = FakeHooks()
    built = Dispatcher(None, hooks, limits, None, "http://api", clock=lambda: NOW)  # type: ignore[arg-type]
    yield built, hooks
    await built.close()


def endpoint(name: str) -> Endpoint:
    return Endpoint(name, "https://h.example/", "", "whsec_x", False)


async def test_a_failed_attempt_is_retried_after_its_jittered_backoff(dispatcher: Any) -> None:
    built, hooks = dispatcher
    await built._failed({"_id": "d1", "attempts": 0}, endpoint("wh_a"), FAILED, NOW)
    [(delivery, changes, done)] = hooks.settled
    assert delivery == "d1" and not done
    assert NOW + 8 <= changes["due"] <= NOW + 12  # 10 s, +-20 %
    assert changes["last_status"] == 500 and changes["last_error"] == "answered 500"


async def test_past_the_schedule_the_delivery_has_failed(dispatcher: Any) -> None:
    built, hooks = dispatcher
    await built._failed({"_id": "d1", "attempts": 2}, endpoint("wh_a"), FAILED, NOW)
    [(_, changes, done)] = hooks.settled
    assert done and changes["state"] == "failed" and "due" not in changes
    assert built.metrics.deliveries.labels("failed")._value.get() == 1


async def test_one_schedule_of_failures_in_a_row_disables_the_endpoint_and_says_so_once(
    dispatcher: Any, caplog: pytest.LogCaptureFixture
) -> None:
    built, hooks = dispatcher
    caplog.set_level(logging.INFO)
    for attempts in range(3):  # the schedule has two waits: the third failure disables
        await built._failed({"_id": "d1", "attempts": attempts}, endpoint("wh_a"), FAILED, NOW)
    assert hooks.disabled["wh_a"].startswith("3 failed attempts in a row; last: answered 500")
    # A second endpoint disabled within the same interval is counted, not logged alone.
    for attempts in range(3):
        await built._failed({"_id": "d2", "attempts": attempts}, endpoint("wh_b"), FAILED, NOW)
    assert "wh_b" in hooks.disabled
    lines = [
        r for r in caplog.records if getattr(r, "fields", {}).get("event") == "webhook_disabled"
    ]
    assert [r.fields["endpoint"] for r in lines] == ["wh_a"]  # type: ignore[attr-defined]
    assert lines[0].levelno == logging.WARNING
    folded = built.summary.flush(force=True)
    assert any("event=webhook_disabled" in line and "wh_b:1" in line for line in folded)
