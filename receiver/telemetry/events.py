"""One event vocabulary for logs, metrics and tests.

Each admission decision or session outcome is one named event. Metrics count events by a
label from a bounded set (never an IP, address or domain). Frequent events are not logged
one line each: `SummaryLog` folds them into one line per event per interval, with a count
and the busiest client keys, so a flood of refusals cannot flood the log.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter as Tally
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger("floodgate.receiver")
# Events that say something is wrong; every other event is routine (INFO).
WARNING_EVENTS = frozenset(
    {
        "store_down",
        "autoban",
        "stress_on",
        "indexes_not_ensured",
        "retention_sweep_failed",
        "spool_failed",
        "spool_record_quarantined",
        "spool_replay_paused",
        "dnsbl_disabled",
    }
)
_PLAIN = re.compile(r"[A-Za-z0-9_.:/@+,\-\[\]]+")


def quote(value: object) -> str:
    """A logfmt value: as is when plain, else double-quoted with quotes, backslashes and
    control characters escaped, so no client byte can forge or break a log line."""
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text)


def logfmt(fields: Mapping[str, object]) -> str:
    return " ".join(f"{key}={quote(value)}" for key, value in fields.items())


# Connection outcomes at the door (label `outcome`).
CONNECTION_OUTCOMES = (
    "accepted",
    "blocked",
    "blocked_allowlisted",
    "global_cap",
    "per_ip_cap",
    "connection_rate",
    "pregreet",
    "shutting_down",
    "untrusted_proxy",
    "bad_proxy_header",
    "worker_busy",  # a host's worker was not taking hand-overs (receiver.host)
)
# Why a session ended (label `reason`).
CLOSE_REASONS = (
    "quit",
    "client_closed",
    "idle_timeout",
    "session_timeout",
    "data_timeout",
    "data_too_slow",
    "too_many_errors",
    "too_many_commands",
    "too_many_deferrals",
    "shutdown",
    "improper_pipelining",
    "bare_newline",
    "pregreet",
    "untrusted_proxy",
    "bad_proxy_header",
    # A trusted proxy named a client that admission then refused.
    "blocked",
    "per_ip_cap",
    "connection_rate",
    "tls_failed",
    "tls_timeout",
    "tls_no_hello",
    "tls_busy",
    "dnsbl",  # the screen's `drop`
)
# STARTTLS handshakes: how each ended, and the version negotiated ("none" if none was).
# `no_hello`: no complete ClientHello within the hello deadline after our 220; `busy`: a
# ClientHello came but no handshake slot freed up in time (never the client's fault).
TLS_OUTCOMES = ("ok", "failed", "timeout", "no_hello", "busy", "refused_rate", "injection")
TLS_VERSIONS = ("TLSv1.2", "TLSv1.3", "none", "other")
MESSAGE_OUTCOMES = (
    "stored",
    "spooled",  # on this host's disk while the store is away; 250 all the same
    "spool_full",  # the store away and the spool full (or off): 451
    "store_failed",
    "store_busy",
    "unstorable",
    "too_big",
    "header_too_big",
    "bare_newline",
    "folded_start",
    "no_memory",
    "message_rate",
)
# Spooled records replayed into the store (label `outcome`).
REPLAY_OUTCOMES = ("stored", "duplicate", "quarantined", "failed")
RECIPIENT_OUTCOMES = (
    "accepted",
    "relay_denied",
    "too_many",
    "recipient_rate",
    "mailbox_rate",
    "bad_address",
    "dnsbl",  # the screen's `enforce`
)


class Metrics:
    """The receiver's Prometheus metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Counter(
            "floodgate_connections", "Connections by admission outcome", ["outcome"], registry=r
        )
        self.closed = Counter(
            "floodgate_sessions_closed", "Sessions ended, by reason", ["reason"], registry=r
        )
        self.messages = Counter(
            "floodgate_messages", "Messages by outcome", ["outcome"], registry=r
        )
        self.recipients = Counter(
            "floodgate_recipients", "Recipients by outcome", ["outcome"], registry=r
        )
        self.open = Gauge("floodgate_connections_open", "Open SMTP connections", registry=r)
        self.stress = Gauge("floodgate_stress_mode", "1 while stress mode is on", registry=r)
        self.store_up = Gauge(
            "floodgate_store_up",
            "1 while the store takes durable writes (3 failures down, 2 successes up)",
            registry=r,
        )
        self.stress_transitions = Counter(
            "floodgate_stress_transitions", "Stress mode changes", ["to"], registry=r
        )
        self.autobans = Counter("floodgate_autobans", "Clients banned automatically", registry=r)
        self.expired = Counter(
            "floodgate_messages_expired", "Expired messages deleted by this receiver", registry=r
        )
        self.store_seconds = Histogram(
            "floodgate_store_seconds",
            "Time from end of DATA to a durable store answer",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.store_pending = Gauge(
            "floodgate_store_pending", "Inserts whose outcome is not known yet", registry=r
        )
        self.data_memory = Gauge(
            "floodgate_data_memory_bytes", "Message bytes held by sessions in DATA", registry=r
        )
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
        self.tls = Counter(
            "floodgate_tls_handshakes",
            "STARTTLS handshakes by outcome and TLS version",
            ["outcome", "version"],
            registry=r,
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
        self.replayed = Counter(
            "floodgate_spool_replayed",
            "Spooled messages replayed into the store, by outcome",
            ["outcome"],
            registry=r,
        )
        for outcome in REPLAY_OUTCOMES:
            self.replayed.labels(outcome)
        for outcome in CONNECTION_OUTCOMES:
            self.connections.labels(outcome)
        for reason in CLOSE_REASONS:
            self.closed.labels(reason)
        for outcome in MESSAGE_OUTCOMES:
            self.messages.labels(outcome)
        for outcome in RECIPIENT_OUTCOMES:
            self.recipients.labels(outcome)


class SummaryLog:
    """Folds repeated events into one line per event per interval (rate-limited, deduped)."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._counts: dict[str, Tally[str]] = {}
        self._since = clock()

    def record(self, event: str, key: str) -> None:
        """Count one occurrence of `event` for client `key`; nothing is logged yet."""
        tally = self._counts.get(event)
        if tally is None:
            tally = self._counts[event] = Tally()
        if key in tally or len(tally) < 10_000:  # bounded: keys past the cap are not named
            tally[key] += 1
        else:
            tally["(other)"] += 1

    def flush(self, force: bool = False) -> list[str]:
        """Log (and return) the summary lines if the interval has passed."""
        now = self._clock()
        if not force and now - self._since < self._interval:
            return []
        lines = []
        seconds = max(now - self._since, 0.001)
        for event, tally in sorted(self._counts.items()):
            fields = {
                "event": event,
                "count": sum(tally.values()),
                "clients": len(tally),
                "seconds": f"{seconds:.0f}",
                "top": " ".join(f"{k}:{n}" for k, n in tally.most_common(3)),
            }
            log.info(event, extra={"fields": fields})
            lines.append(logfmt(fields))
        self._counts.clear()
        self._since = now
        return lines


def emit(event: str, **fields: object) -> None:
    """Log one rare event as one structured record (`event=name key=value ...`): INFO when
    routine, WARNING when something is wrong."""
    level = logging.WARNING if event in WARNING_EVENTS else logging.INFO
    log.log(level, event, extra={"fields": {"event": event, **fields}})
