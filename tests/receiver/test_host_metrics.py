"""One /metrics per host: every family once, each sample labelled with its worker."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from receiver.telemetry.host_metrics import host_registry


def _worker(count: int) -> str:
    registry = CollectorRegistry()
    counter = Counter("floodgate_messages", "Messages", ["outcome"], registry=registry)
    counter.labels("stored").inc(count)
    return generate_latest(registry).decode()


def test_the_gate_and_every_worker_appear_once_per_family_with_a_worker_label() -> None:
    gate = CollectorRegistry()
    Counter("floodgate_messages", "Messages", ["outcome"], registry=gate).labels("stored")
    workers = [("w1", _worker(3)), ("w2", _worker(4)), ("w3", "")]  # w3: no status yet
    text = generate_latest(host_registry(gate, lambda: workers)).decode()
    assert text.count("# TYPE floodgate_messages_total counter") == 1
    values = {
        sample.labels["worker"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "floodgate_messages_total"
    }
    assert values == {"gate": 0.0, "w1": 3.0, "w2": 4.0}


def test_an_unreadable_exposition_is_left_out() -> None:
    gate = CollectorRegistry()
    text = generate_latest(host_registry(gate, lambda: [("w1", "not { metrics")])).decode()
    assert 'worker="w1"' not in text
