"""What a run observed: outcomes per scenario, a per-second timeline, legit latency.

Memory is bounded whatever the run length: outcome counters are keyed by reply code (a
small set), the timeline has one bucket per second (runs are capped in duration), and
latency samples are kept in a fixed-size reservoir.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

RESERVOIR = 20_000
BUCKET_SAMPLES = 200

# Outcome keys that are not SMTP replies.
CONNECT_REFUSED = "connect refused"
CONNECT_TIMEOUT = "connect timeout"
CLOSED = "closed by server"
TIMEOUT = "reply timeout"
HELD = "held to the end"


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Bucket:
    accepted: int = 0
    refused: int = 0
    legit_ok: int = 0
    legit_failed: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class ScenarioStats:
    name: str
    outcomes: Counter[str] = field(default_factory=Counter)
    attempts: int = 0
    notes: Counter[str] = field(default_factory=Counter)  # extra facts (closes after 220...)

    def record(self, outcome: str) -> None:
        self.attempts += 1
        self.outcomes[outcome] += 1


class Stats:
    def __init__(self, scenarios: list[str]) -> None:
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.finished: float | None = None
        self.scenarios = {name: ScenarioStats(name) for name in scenarios}
        self.timeline: dict[int, Bucket] = {}
        self.latencies: list[float] = []
        self._seen_latencies = 0
        self._random = random.Random(5)
        self.interrupted = False

    def _bucket(self) -> Bucket:
        second = int(time.monotonic() - self.started)
        bucket = self.timeline.get(second)
        if bucket is None:
            bucket = self.timeline[second] = Bucket()
        return bucket

    def record(self, scenario: str, outcome: str) -> None:
        self.scenarios[scenario].record(outcome)
        bucket = self._bucket()
        if outcome.startswith(("2", "3")):
            bucket.accepted += outcome.startswith("250")
        else:
            bucket.refused += outcome[:1] in ("4", "5")

    def note(self, scenario: str, fact: str) -> None:
        self.scenarios[scenario].notes[fact] += 1

    def legit(self, outcome: str, latency: float) -> None:
        self.record("legit", outcome)
        bucket = self._bucket()
        if outcome.startswith("250"):
            bucket.legit_ok += 1
            if len(bucket.latencies) < BUCKET_SAMPLES:
                bucket.latencies.append(latency)
            self._seen_latencies += 1
            if len(self.latencies) < RESERVOIR:
                self.latencies.append(latency)
            else:
                slot = self._random.randrange(self._seen_latencies)
                if slot < RESERVOIR:
                    self.latencies[slot] = latency
        else:
            bucket.legit_failed += 1

    @property
    def elapsed(self) -> float:
        end = self.finished if self.finished is not None else time.monotonic()
        return end - self.started

    def legit_summary(self) -> dict[str, Any]:
        legit = self.scenarios.get("legit")
        if legit is None:
            return {"sent": 0, "accepted": 0, "success_pct": None, "latency_ms": None}
        accepted = sum(n for key, n in legit.outcomes.items() if key.startswith("250"))
        sent = legit.attempts
        return {
            "sent": sent,
            "accepted": accepted,
            "success_pct": round(100.0 * accepted / sent, 2) if sent else None,
            "latency_ms": {
                name: round(percentile(self.latencies, share) * 1000, 1)
                for name, share in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
            },
        }

    def to_json(self, target: str, settings: dict[str, Any]) -> dict[str, Any]:
        return {
            "schema": "floodgate.flood/1",
            "target": target,
            "started_at": self.started_wall,
            "duration_s": round(self.elapsed, 2),
            "interrupted": self.interrupted,
            "settings": settings,
            "scenarios": {
                name: {
                    "attempts": s.attempts,
                    "outcomes": dict(sorted(s.outcomes.items())),
                    "notes": dict(sorted(s.notes.items())),
                }
                for name, s in self.scenarios.items()
            },
            "legit": self.legit_summary(),
            "timeline": [
                {
                    "t": second,
                    "accepted": b.accepted,
                    "refused": b.refused,
                    "legit_ok": b.legit_ok,
                    "legit_failed": b.legit_failed,
                    "legit_p50_ms": _ms(b.latencies, 0.5),
                    "legit_p99_ms": _ms(b.latencies, 0.99),
                }
                for second, b in sorted(self.timeline.items())
            ],
        }


def _ms(values: list[float], share: float) -> float | None:
    """A percentile in milliseconds; None for a second with no samples (not 0 ms)."""
    return round(percentile(values, share) * 1000, 1) if values else None
