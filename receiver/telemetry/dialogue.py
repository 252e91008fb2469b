"""A worker's telemetry: what its sessions and its delivery report, as metrics and summary
lines, with the events the host's live statistics need passed on to the host
(receiver.door.client's `HostSide`). It counts and never decides."""

from __future__ import annotations

from receiver.door.client import Client, HostSide
from receiver.telemetry.metrics import WorkerMetrics
from receiver.telemetry.summary import SummaryLog
from receiver.vocabulary import (
    ORDINARY_CLOSES,
    TLS_VERSIONS,
    Closed,
    MessageOutcome,
    RecipientOutcome,
    Refused,
    TlsOutcome,
)


class WorkerTelemetry:
    """The one implementation of the session's and delivery's events in a worker."""

    def __init__(self, summary_interval: float, host: HostSide) -> None:
        self.metrics = WorkerMetrics()
        self.summary = SummaryLog(summary_interval)
        self.host = host
        m = self.metrics
        self._closed = m.closed.counts
        self._refusals = m.refusals.counts
        self._messages = m.messages.counts
        self._recipients = m.recipients.counts

    # --- the session ----------------------------------------------------------------

    def refused(self, client: Client, reason: Refused) -> None:
        self._refusals[reason] += 1
        self.summary.record(reason, client.key)
        self.host.refused(client.key, reason)

    def closed(self, client: Client, reason: Closed) -> None:
        self._closed[reason] += 1
        if reason not in ORDINARY_CLOSES:
            self.summary.record(reason, client.key)

    def message(self, outcome: MessageOutcome) -> None:
        self._messages[outcome] += 1

    def recipient(self, outcome: RecipientOutcome) -> None:
        self._recipients[outcome] += 1

    def tls(self, outcome: TlsOutcome, version: str) -> None:
        shown = version if version in TLS_VERSIONS else "other"
        self.metrics.tls.labels(TlsOutcome(outcome), shown).inc()

    # --- delivery -------------------------------------------------------------------

    def store_answered(self, seconds: float) -> None:
        self.metrics.store_seconds.observe(seconds)

    def stored(self, key: str, size: int) -> None:
        """A message from `key` is durable (stored or spooled)."""
        self.host.stored(key, size)

    def authenticated(self, key: str) -> None:
        """A message from `key` passed authentication: the host counts it toward karma."""
        self.host.vouched(key)
