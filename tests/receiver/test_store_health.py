"""The store-health judge: writes as evidence, hysteresis both ways."""

from __future__ import annotations

from receiver.delivery.store_health import DOWN_AFTER, UP_AFTER, StoreHealth


def test_first_evidence_decides_then_it_takes_a_run_to_change() -> None:
    changes: list[tuple[bool, str]] = []
    health = StoreHealth(lambda up, reason: changes.append((up, reason)))
    assert health.up is None
    health.record(True)
    assert health.up is True
    for _ in range(DOWN_AFTER - 1):
        health.record(False, "no durable write within 5s")
        assert health.up is True  # one slow answer never flaps it
    health.record(True)  # a success in between resets the run
    for _ in range(DOWN_AFTER - 1):
        health.record(False, "slow")
    assert health.up is True
    health.record(False, "OperationFailure: disk full")
    assert (health.up, health.reason) == (False, "OperationFailure: disk full")
    for _ in range(UP_AFTER - 1):
        health.record(True)
        assert health.up is False
    health.record(True)
    assert health.up is True
    assert changes == [(True, "ready"), (False, "OperationFailure: disk full"), (True, "ready")]


def test_a_store_down_at_start_is_known_at_the_first_failure() -> None:
    health = StoreHealth()
    health.record(False, "ServerSelectionTimeoutError: connection refused")
    assert health.up is False and "refused" in health.reason
