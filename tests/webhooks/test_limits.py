"""The retry schedule: exponential over about a day, jittered, and settable."""

from __future__ import annotations

import itertools

import pytest

from webhooks.limits import DEFAULTS, JITTER, WebhookLimits, backoff, parse_schedule


def test_the_default_schedule_retries_for_about_a_day() -> None:
    total = sum(DEFAULTS.retry_schedule)
    assert 20 * 3600 <= total <= 28 * 3600
    waits = DEFAULTS.retry_schedule
    assert all(later >= earlier for earlier, later in itertools.pairwise(waits))


def test_each_wait_is_jittered_within_its_band() -> None:
    schedule = (10.0, 100.0)
    assert backoff(1, schedule, lambda: 0.0) == pytest.approx(10 * (1 - JITTER))
    assert backoff(1, schedule, lambda: 1.0) == pytest.approx(10 * (1 + JITTER))
    assert backoff(2, schedule, lambda: 0.5) == pytest.approx(100.0)


def test_past_the_last_wait_the_delivery_has_failed() -> None:
    assert backoff(3, (1.0, 2.0)) is None


def test_an_endpoint_is_disabled_after_one_schedule_of_failures_in_a_row() -> None:
    assert WebhookLimits(retry_schedule=(0.1, 0.1)).disable_after == 3
    assert DEFAULTS.disable_after == len(DEFAULTS.retry_schedule) + 1


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "1 to 50"),
        ("5,x", "number"),
        ("0", "0.01"),
        ("90000", "86400"),
        (",".join("1" * 51), "1 to 50"),
    ],
)
def test_a_bad_schedule_says_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_schedule(text)


def test_a_schedule_is_read_as_seconds() -> None:
    assert parse_schedule("0.05, 1,30") == (0.05, 1.0, 30.0)


def test_bounds_are_range_checked() -> None:
    with pytest.raises(ValueError, match="webhook_concurrency"):
        WebhookLimits(webhook_concurrency=0)
