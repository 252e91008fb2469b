"""Read a receiver's Prometheus metrics in tests."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples(url: str, name: str, **labels: str) -> list[Sample]:
    """Every sample named `name` whose labels include `labels`, from one fetch of the
    metrics at `url`/metrics."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return [
        item
        for family in text_string_to_metric_families(text)
        for item in family.samples
        if item.name == name and all(item.labels.get(k) == v for k, v in labels.items())
    ]


def sample(url: str, name: str, **labels: str) -> float:
    """The value of one sample (0 if absent) from the metrics at `url`/metrics."""
    found = samples(url, name, **labels)
    return float(found[0].value) if found else 0.0
