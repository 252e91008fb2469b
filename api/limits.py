"""The API's limits on reading: render workers and live push. Declared once, here; the
settings fields (`FLOODGATE_RENDER_*`, `FLOODGATE_PUSH_*`) take default and range from it."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024

RANGES: dict[str, tuple[float, float]] = {
    "render_workers": (1, 64),
    "render_queue": (0, 10_000),
    "render_seconds": (0.05, 60),
    "render_memory": (64 * MIB, 16_384 * MIB),
    "push_per_client": (1, 10_000),
    "push_per_mailbox": (1, 10_000),
}


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """How much of the API one message, one client and one mailbox may take."""

    # Processes rendering messages larger than `SMALL_MESSAGE` at once; one more serves
    # small messages only, so everyday mail renders at once while big ones queue.
    render_workers: int = 2
    # Render jobs that may wait for a worker (per lane); beyond: 503 and Retry-After.
    render_queue: int = 16
    # A render's deadline: past it the worker process is killed and the work stops.
    render_seconds: float = 3.0
    # Address space a worker may map beyond its own start-up size (RLIMIT_AS).
    render_memory: int = 256 * MIB
    # Live event streams per client (an IPv4 address or an IPv6 /64), per mailbox.
    push_per_client: int = 20
    push_per_mailbox: int = 20

    def __post_init__(self) -> None:
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name}={value} is outside [{low:g}, {high:g}]")


DEFAULTS = ApiLimits()
