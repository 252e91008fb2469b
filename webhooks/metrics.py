"""The dispatcher's metrics. Label values come from closed sets (an attempt's `Outcome`, a
delivery's `State`): never a URL, an address or an endpoint id."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mailstore.webhooks import State
from webhooks.sender import Outcome

# From the message's arrival to its POST being answered: the shape of the bench's goal
# (p99 under 250 ms) and of a day of retries.
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600, 86_400)


class WebhookMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.attempts = Counter(
            "floodgate_webhook_attempts",
            "Webhook POST attempts by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "floodgate_webhook_deliveries",
            "Webhook deliveries finished, delivered or failed (schedule spent, endpoint off)",
            ["state"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "floodgate_webhook_delivery_seconds",
            "From a message's arrival to its webhook's 2xx, retries included",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "floodgate_webhook_in_flight", "Attempts in flight", registry=self.registry
        )
        self.pending = Gauge(
            "floodgate_webhook_pending",
            "Deliveries waiting in the store (counted up to 10,000)",
            registry=self.registry,
        )
        self.endpoints = Gauge(
            "floodgate_webhook_endpoints", "Endpoints registered", registry=self.registry
        )
        self.disabled = Gauge(
            "floodgate_webhook_endpoints_disabled",
            "Endpoints disabled after failing too long",
            registry=self.registry,
        )
        for outcome in Outcome:  # every label value present from the start (zero)
            self.attempts.labels(outcome.value)
        for state in (State.DELIVERED, State.FAILED):
            self.deliveries.labels(state.value)
