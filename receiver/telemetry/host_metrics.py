"""One /metrics for a host: the gate's own metrics and each worker's, labelled `worker`.

Workers send their exposition with their status every second (receiver.door.channel); the
gate parses the last one of each and serves every family once, each sample with a
`worker` label (`gate`, `w1` ... `wN`: a bounded set, at most FLOODGATE_WORKERS + 1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

Sources = Callable[[], Iterable[tuple[str, Iterable[Metric]]]]


def parsed(text: str) -> list[Metric]:
    """A worker's exposition as families (nothing if it cannot be read)."""
    try:
        return list(text_string_to_metric_families(text))
    except ValueError:
        return []


def labelled(sources: Iterable[tuple[str, Iterable[Metric]]]) -> list[Metric]:
    """Every family once, with the samples of every source under its `worker` label."""
    merged: dict[str, Metric] = {}
    for worker, families in sources:
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = Metric(family.name, family.documentation, family.type, family.unit)
                merged[family.name] = into
            for sample in family.samples:
                labels = {**sample.labels, "worker": worker}
                into.samples.append(
                    Sample(sample.name, labels, sample.value, sample.timestamp, sample.exemplar)
                )
    return list(merged.values())


class HostCollector(Collector):
    """Collects the gate's registry and the workers' last expositions as one."""

    def __init__(self, gate: CollectorRegistry, workers: Callable[[], list[tuple[str, str]]]):
        self.gate = gate
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        sources: list[tuple[str, Iterable[Metric]]] = [("gate", self.gate.collect())]
        sources += [(name, parsed(text)) for name, text in self.workers() if text]
        yield from labelled(sources)


def host_registry(
    gate: CollectorRegistry, workers: Callable[[], list[tuple[str, str]]]
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostCollector(gate, workers))
    return registry
