"""The webhooks' bounds and their retry schedule, declared once: the settings fields
(`FLOODGATE_WEBHOOK_*`) take their defaults and ranges from here."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

# Exponential, about a day in all (23.7 h): 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h,
# 4 h, 8 h, 8 h; each wait is jittered so that endpoints that failed together (an outage
# of theirs) are not all retried in the same second.
DEFAULT_SCHEDULE = "5,30,120,600,1800,3600,7200,14400,28800,28800"
JITTER = 0.2  # each wait is drawn from [1 - JITTER, 1 + JITTER] times its nominal value
MAX_RETRIES = 50

RANGES: dict[str, tuple[float, float]] = {
    "webhook_timeout": (0.1, 60),
    "webhook_dns_timeout": (0.05, 10),
    "webhook_concurrency": (1, 100),
    "webhook_max_in_flight": (1, 10_000),
    "webhook_max_endpoints": (1, 100_000),
}


def parse_schedule(text: str) -> tuple[float, ...]:
    """`5,30,120` → (5.0, 30.0, 120.0): the waits before each retry; ValueError saying why
    when it is not 1 to 50 positive numbers of seconds (at most a day each)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not 1 <= len(parts) <= MAX_RETRIES:
        raise ValueError(f"give 1 to {MAX_RETRIES} comma-separated waits in seconds")
    try:
        waits = tuple(float(part) for part in parts)
    except ValueError:
        raise ValueError(f"{text!r}: every wait must be a number of seconds") from None
    if any(not 0.01 <= wait <= 86_400 for wait in waits):
        raise ValueError("every wait must be from 0.01 to 86400 seconds")
    return waits


@dataclass(frozen=True, slots=True)
class WebhookLimits:
    """How the dispatcher spends its attempts."""

    # Seconds one attempt may take in all: resolution, connect, TLS, sending, the answer.
    webhook_timeout: float = 10.0
    # Seconds the one resolution of an endpoint's host may take, within the attempt's.
    webhook_dns_timeout: float = 2.0
    # Attempts in flight to one endpoint at once; the rest wait their turn.
    webhook_concurrency: int = 4
    # Attempts in flight in all, from one dispatcher.
    webhook_max_in_flight: int = 100
    # Endpoints that may be registered (the API answers 409 past it).
    webhook_max_endpoints: int = 1_000
    # Waits before each retry (seconds); after the last, the delivery has failed.
    retry_schedule: tuple[float, ...] = tuple(float(s) for s in DEFAULT_SCHEDULE.split(","))
    # Private, loopback and link-local destinations (tests, an in-house collector).
    allow_private: bool = False

    def __post_init__(self) -> None:
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name}={value} is outside [{low:g}, {high:g}]")

    @property
    def disable_after(self) -> int:
        """Failed attempts in a row, with no success between, after which an endpoint is
        disabled: one delivery's whole schedule, so about a day of failing."""
        return len(self.retry_schedule) + 1

    @property
    def lease(self) -> float:
        """Seconds a claimed delivery is held by its dispatcher: the attempt's deadline and
        a margin; a dispatcher killed mid-attempt leaves it due again after this."""
        return self.webhook_timeout + 2.0


DEFAULTS = WebhookLimits()


def backoff(
    attempts: int, schedule: tuple[float, ...], draw: Callable[[], float] = random.random
) -> float | None:
    """Seconds to wait after the `attempts`-th failed attempt, jittered; None when the
    schedule is spent (the delivery has failed)."""
    if attempts > len(schedule):
        return None
    nominal = schedule[attempts - 1]
    return nominal * (1 - JITTER + 2 * JITTER * draw())
