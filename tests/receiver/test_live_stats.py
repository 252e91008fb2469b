"""Live statistics: the heavy-hitters summary against exact counts, the sliding windows,
and the snapshot's size whatever the number of clients."""

from __future__ import annotations

import json
import random
from collections import Counter

from receiver.telemetry.stats import CAPACITY, Frequent, LiveStats, merge_top, snapshot


def test_frequent_stays_within_its_bound_against_exact_counts() -> None:
    rng = random.Random(7)
    exact: Counter[str] = Counter()
    summary = Frequent()
    # A flood from a few addresses hidden in a long tail of 20,000 others.
    heavy = [f"198.51.100.{n}" for n in range(5)]
    for _ in range(200_000):
        key = rng.choice(heavy) if rng.random() < 0.3 else f"10.{rng.randrange(20_000)}"
        exact[key] += 1
        summary.add(key)
    bound = summary.error_bound
    assert bound == 200_000 // (CAPACITY + 1)
    for key, reported in summary.counts.items():
        assert exact[key] - bound <= reported <= exact[key], key
    for key, count in exact.items():
        if count > bound:
            assert key in summary.counts, key
    assert [key for key, _ in summary.top(5)] == [k for k, _ in exact.most_common(5)]
    assert len(summary.counts) <= CAPACITY


def test_merged_summaries_keep_the_bound() -> None:
    rng = random.Random(3)
    exact: Counter[str] = Counter()
    parts = [Frequent() for _ in range(4)]
    for part in parts:
        for _ in range(20_000):
            key = "flood" if rng.random() < 0.2 else str(rng.randrange(5_000))
            exact[key] += 1
            part.add(key)
    merged = Frequent()
    for part in parts:
        merged.merge(part)
    assert merged.total == 80_000
    assert exact["flood"] - merged.error_bound <= merged.counts["flood"] <= exact["flood"]
    assert merged.top(1)[0][0] == "flood"


def test_windows_slide() -> None:
    now = [1000.0]
    stats = LiveStats(clock=lambda: now[0])
    for _ in range(50):
        stats.record_refusal("203.0.113.9", "connection_rate")
    now[0] += 120  # two minutes later: out of the 1-minute window, inside the 5-minute one
    stats.record_refusal("203.0.113.10", "per_ip_cap")
    stats.record_stored("192.0.2.1", 1000)
    one, five = stats.window(6), stats.window(30)
    assert one["refusals"] == [["203.0.113.10", 1]]
    assert five["refusals"] == [["203.0.113.9", 50], ["203.0.113.10", 1]]
    assert five["reasons"] == {"connection_rate": 50, "per_ip_cap": 1}
    assert five["by_reason"] == {
        "connection_rate": [["203.0.113.9", 50]],
        "per_ip_cap": [["203.0.113.10", 1]],
    }
    assert one["bytes"] == [["192.0.2.1", 1000]]
    now[0] += 600
    assert stats.window(30)["refusals"] == []
    assert stats.refused_total == 51 and stats.stored_total == 1


def test_connections_are_a_measure_of_their_own() -> None:
    now = [1000.0]
    stats = LiveStats(clock=lambda: now[0])
    for _ in range(60):  # connect and close: never refused, never a message
        stats.record_connection("203.0.113.20")
    stats.record_connection("192.0.2.1")
    one = stats.window(6)
    assert one["connections"] == [["203.0.113.20", 60], ["192.0.2.1", 1]]
    assert one["refusals"] == [] and one["messages"] == []
    assert one["error_bound"]["connections"] == 0
    now[0] += 120
    assert stats.window(6)["connections"] == []
    assert stats.window(30)["connections"][0] == ["203.0.113.20", 60]


def test_the_snapshot_stays_small_with_many_clients() -> None:
    now = [1000.0]
    stats = LiveStats(clock=lambda: now[0])
    for second in range(300):
        now[0] = 1000.0 + second
        for n in range(200):  # 60,000 distinct addresses over five minutes
            stats.record_refusal(f"10.0.{second}.{n}", "connection_rate")
        for _ in range(5):  # 2.4 % of all refusals: a heavy hitter in every bucket
            stats.record_refusal("198.51.100.7", "blocked")
            stats.record_connection("198.51.100.8")
        for n in range(200):
            stats.record_connection(f"10.2.{second}.{n}")
    open_counts = {f"10.1.{n // 250}.{n % 250}": 1 + n % 3 for n in range(10_000)}
    document = snapshot(
        stats,
        receiver="mx1 0.0.0.0:25",
        open_counts=open_counts,
        open_total=sum(open_counts.values()),
        stressed=True,
        store_up=True,
        store_reason="",
        accepted_total=123,
    )
    size = len(json.dumps(document))
    assert size < 6_000, size
    five = document["windows"]["5m"]
    key, count = five["refusals"][0]
    assert key == "198.51.100.7"
    assert 1500 - five["error_bound"]["refusals"] <= count <= 1500
    key, count = five["connections"][0]
    assert key == "198.51.100.8"
    assert 1500 - five["error_bound"]["connections"] <= count <= 1500
    assert document["top_open"][0][1] == 3


def test_merge_top_adds_one_client_across_receivers() -> None:
    merged = merge_top([[["a", 5], ["b", 4]], [["b", 3], ["c", 1]]])
    assert merged == [["b", 7], ["a", 5], ["c", 1]]
