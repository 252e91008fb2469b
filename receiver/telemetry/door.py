"""The door's telemetry: connections admitted and refused, stress, bans, and the host's live
statistics (who is at the door), which the workers' events join (receiver.door.client's
`HostSide`). It counts and never decides."""

from __future__ import annotations

from receiver.telemetry.events import emit
from receiver.telemetry.metrics import DoorMetrics
from receiver.telemetry.stats import LiveStats
from receiver.telemetry.summary import SummaryLog
from receiver.vocabulary import ACCEPTED, BanReason, Refused


class DoorTelemetry:
    """Counts, summary lines and live statistics of one host's door."""

    def __init__(self, summary_interval: float) -> None:
        self.metrics = DoorMetrics()
        self.summary = SummaryLog(summary_interval)
        self.live = LiveStats()
        self.accepted_total = 0
        self._connections = self.metrics.connections.counts
        self._refusals = self.metrics.refusals.counts

    def accepted(self, key: str) -> None:
        """A connection admitted (before its banner)."""
        self._connections[ACCEPTED] += 1
        self.accepted_total += 1
        self.live.record_connection(key)

    def refused(self, key: str, reason: Refused, detail: str = "") -> None:
        """A connection refused at the door: counted, summarised, never logged alone."""
        self._connections[reason] += 1  # KeyError for a reason that is no connection's
        self.listed(key, reason, detail)

    def listed(self, key: str, reason: Refused, detail: str = "") -> None:
        """A refusal that does not end the connection (a DNS list's `enforce`). The live
        statistics name the list (`detail`, one the operator configured): the console says
        "dnsbl zen.example", the metrics and summary lines the reason alone."""
        self._refusals[reason] += 1
        self.summary.record(reason, key)
        self.live.record_refusal(key, f"{reason} {detail}" if detail else reason)

    def dialogue_refused(self, key: str, reason: Refused) -> None:
        """A worker refused `key` something: its worker counts and summarises it; the
        host's live statistics name the client."""
        self.live.record_refusal(key, reason)

    def stored(self, key: str, size: int) -> None:
        self.live.record_stored(key, size)

    def ban(self, key: str, reason: BanReason, ttl: float) -> None:
        self.metrics.autobans.inc()
        emit("autoban", key=key, reason=reason, ttl=int(ttl))

    def stress(self, stressed: bool, connections: int) -> None:
        self.metrics.stress_transitions.labels("on" if stressed else "off").inc()
        emit("stress_on" if stressed else "stress_off", connections=connections)
