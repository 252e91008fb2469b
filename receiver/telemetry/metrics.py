"""The receiver's Prometheus metrics: the door's and each worker's, each in a registry of its
own (a host serves them as one, labelled `worker`: receiver.telemetry.host_metrics).

Every labelled family is created with all its label values from the vocabularies
(receiver.vocabulary) up front: a value that is not a member cannot be counted, and every
series exists from the start (a rate over a series that appears late misses its first
increase). The counters of the hot path (one increment per connection, refusal, session
or message) are `Tally`s: plain integers in a dict, exposed as counter families when
scraped, so counting costs a dict update rather than a locked Prometheus child.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from receiver.vocabulary import (
    ACCEPTED,
    CONNECTION_REFUSALS,
    TLS_VERSIONS,
    Closed,
    MessageOutcome,
    RecipientOutcome,
    Refused,
    ReplayOutcome,
    TlsOutcome,
)

STORE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Tally(Collector):
    """A counter by one label, its values fixed up front (a closed vocabulary): `inc` of a
    value not among them raises KeyError; a scrape sees every value, zeros included."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        values: Iterable[str],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.counts: dict[str, int] = dict.fromkeys((str(v) for v in values), 0)
        registry.register(self)

    def inc(self, value: str, amount: int = 1) -> None:
        self.counts[value] += amount

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, count in self.counts.items():
            family.add_metric([value], count)
        yield family

    def describe(self) -> Iterator[Metric]:
        return self.collect()


def _refusals(registry: CollectorRegistry) -> Tally:
    return Tally(
        "floodgate_refusals", "Refusals, by reason (door and dialogue)", "reason", Refused, registry
    )


class DoorMetrics:
    """What the door counts: connections by outcome, open connections, stress, bans, and
    the state of the host's access lists."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.connections = Tally(
            "floodgate_connections",
            "Connections by admission outcome",
            "outcome",
            (ACCEPTED, *CONNECTION_REFUSALS),
            r,
        )
        self.refusals = _refusals(r)
        self.open = Gauge("floodgate_connections_open", "Open SMTP connections", registry=r)
        self.stress = Gauge("floodgate_stress_mode", "1 while stress mode is on", registry=r)
        self.stress_transitions = Counter(
            "floodgate_stress_transitions", "Stress mode changes", ["to"], registry=r
        )
        self.autobans = Counter("floodgate_autobans", "Clients banned automatically", registry=r)
        self.blocklist_staleness = Gauge(
            "floodgate_blocklist_staleness_seconds",
            "Seconds since the blocklist last synced from the store",
            registry=r,
        )
        self.blocklist_entries = Gauge(
            "floodgate_blocklist_entries", "Entries in the local blocklist cache", registry=r
        )
        self.allowlist_staleness = Gauge(
            "floodgate_allowlist_staleness_seconds",
            "Seconds since the allowlist last synced from the store",
            registry=r,
        )
        self.allowlist_entries = Gauge(
            "floodgate_allowlist_entries",
            "Entries in the local allowlist (stored and static)",
            registry=r,
        )


class WorkerMetrics:
    """What a worker counts: sessions, messages, recipients, TLS, the store and the spool."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.closed = Tally(
            "floodgate_sessions_closed", "Sessions ended, by reason", "reason", Closed, r
        )
        self.refusals = _refusals(r)
        self.sessions = Gauge(
            "floodgate_sessions_open", "Open SMTP sessions of this worker", registry=r
        )
        self.messages = Tally(
            "floodgate_messages", "Messages by outcome", "outcome", MessageOutcome, r
        )
        self.recipients = Tally(
            "floodgate_recipients", "Recipients by outcome", "outcome", RecipientOutcome, r
        )
        self.tls = Counter(
            "floodgate_tls_handshakes",
            "STARTTLS handshakes by outcome and TLS version",
            ["outcome", "version"],
            registry=r,
        )
        for tls in TlsOutcome:
            self.tls.labels(tls, "none")
        self.store_up = Gauge(
            "floodgate_store_up",
            "1 while the store takes durable writes (3 failures down, 2 successes up)",
            registry=r,
        )
        self.store_seconds = Histogram(
            "floodgate_store_seconds",
            "Time from end of DATA to a durable store answer",
            buckets=STORE_BUCKETS,
            registry=r,
        )
        self.store_pending = Gauge(
            "floodgate_store_pending", "Inserts whose outcome is not known yet", registry=r
        )
        self.data_memory = Gauge(
            "floodgate_data_memory_bytes", "Message bytes held by sessions in DATA", registry=r
        )
        self.expired = Counter(
            "floodgate_messages_expired", "Expired messages deleted by this receiver", registry=r
        )
        self.spool_messages = Gauge(
            "floodgate_spool_messages", "Messages in the local spool, not yet stored", registry=r
        )
        self.spool_bytes = Gauge(
            "floodgate_spool_bytes", "Bytes of the local spool's records", registry=r
        )
        self.spool_oldest = Gauge(
            "floodgate_spool_oldest_seconds",
            "Age of the oldest spooled message (0 when the spool is empty)",
            registry=r,
        )
        self.spool_damaged = Counter(
            "floodgate_spool_damaged_bytes",
            "Bytes of spooled records that failed their MAC or could not be read (kept)",
            registry=r,
        )
        self.replayed = Counter(
            "floodgate_spool_replayed",
            "Spooled messages replayed into the store, by outcome",
            ["outcome"],
            registry=r,
        )
        for replay in ReplayOutcome:
            self.replayed.labels(replay)


__all__ = ["STORE_BUCKETS", "TLS_VERSIONS", "DoorMetrics", "Tally", "WorkerMetrics"]
