"""One /metrics for a host: the door's own metrics and each worker's, every family once,
each sample labelled `worker` (`gate`, `w1` ... `wN`: a bounded set, at most
FLOODGATE_WORKERS + 1). The same families and labels whether the host's one worker runs in
its process or N workers in theirs (those send their exposition with their status:
receiver.door.channel).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

# Per worker: its registry (in the host's process) or its last exposition (a process).
WorkerSources = list[tuple[str, CollectorRegistry | str]]


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
    """Collects the door's registry and each worker's metrics as one: a worker in the
    host's own process is collected directly, a worker process from its last exposition."""

    def __init__(self, door: CollectorRegistry, workers: Callable[[], WorkerSources]) -> None:
        self.door = door
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        sources: list[tuple[str, Iterable[Metric]]] = [("gate", self.door.collect())]
        for name, source in self.workers():
            if isinstance(source, CollectorRegistry):
                sources.append((name, source.collect()))
            elif source:
                sources.append((name, parsed(source)))
        yield from labelled(sources)


def host_registry(
    door: CollectorRegistry, workers: Callable[[], WorkerSources]
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostCollector(door, workers))
    return registry
