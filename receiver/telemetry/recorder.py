"""Telemetry: the receiver's events as metrics, summary lines and live statistics.

The one implementation of the session's `Events` (receiver.smtp.context): every outcome
is counted under a name from receiver.telemetry.events, summarised (never logged one by one) and
fed to the live statistics. Nothing here decides anything.
"""

from __future__ import annotations

from receiver.delivery.store_health import StoreHealth
from receiver.telemetry.events import (
    CLOSE_REASONS,
    CONNECTION_OUTCOMES,
    MESSAGE_OUTCOMES,
    RECIPIENT_OUTCOMES,
    TLS_VERSIONS,
    Metrics,
    SummaryLog,
    emit,
)
from receiver.telemetry.stats import LiveStats


class Telemetry:
    """Counts, summaries and live statistics of one receiver (worker)."""

    def __init__(self, summary_interval: float) -> None:
        self.metrics = Metrics()
        self.summary = SummaryLog(summary_interval)
        self.live = LiveStats()
        self.accepted_total = 0
        self.store_health = StoreHealth(self._on_store_health)
        m = self.metrics
        self._outcomes = {o: m.connections.labels(o) for o in CONNECTION_OUTCOMES}
        self._accepted = m.connections.labels("accepted")
        self._closed = {r: m.closed.labels(r) for r in CLOSE_REASONS}
        self._messages = {o: m.messages.labels(o) for o in MESSAGE_OUTCOMES}
        self._recipients = {o: m.recipients.labels(o) for o in RECIPIENT_OUTCOMES}

    def on_accepted(self, key: str | None) -> None:
        """A connection admitted (key None: a trusted proxy's, client named later)."""
        self._accepted.inc()
        self.accepted_total += 1
        if key is not None:
            self.live.record_connection(key)

    def on_refused(self, key: str, reason: str) -> None:
        outcome = self._outcomes.get(reason)
        if outcome is not None:
            outcome.inc()
        self.summary.record(reason, key)
        self.live.record_refusal(key, reason)

    def on_identified(self, key: str) -> None:
        """A proxied connection's client, named by its PROXY header: counted as a
        connection of that client, as a direct one is at the gate."""
        self.live.record_connection(key)

    def on_session_closed(self, reason: str, key: str) -> None:
        self._closed[reason].inc()
        if reason not in ("quit", "client_closed", "shutdown"):
            self.summary.record(reason, key)

    def on_message(self, outcome: str) -> None:
        self._messages[outcome].inc()

    def on_recipient(self, outcome: str) -> None:
        self._recipients[outcome].inc()

    def on_store_attempt(self, ok: bool, seconds: float, reason: str) -> None:
        if ok:
            self.metrics.store_seconds.observe(seconds)
        self.store_health.record(ok, reason)

    def store_down(self) -> bool:
        return self.store_health.up is False

    def on_stored(self, key: str, size: int) -> None:
        self.live.record_stored(key, size)

    def on_tls(self, outcome: str, version: str) -> None:
        self.metrics.tls.labels(outcome, version if version in TLS_VERSIONS else "other").inc()

    def on_ban(self, key: str, reason: str, ttl: float) -> None:
        self.metrics.autobans.inc()
        emit("autoban", key=key, reason=reason, ttl=int(ttl))

    def on_stress(self, stressed: bool, connections: int) -> None:
        self.metrics.stress_transitions.labels("on" if stressed else "off").inc()
        emit("stress_on" if stressed else "stress_off", connections=connections)

    def _on_store_health(self, up: bool, reason: str) -> None:
        # Logged on a change of state only, never per failed write.
        if up:
            emit("store_up")
        else:
            emit("store_down", reason=reason)
