"""Every interval the receiver's processes keep, as one frozen value with its defaults and
ranges beside it; each is a setting (`FLOODGATE_<NAME>`), declared here once.

Tests shorten them to fractions of a second instead of sleeping through real ones; the
hysteresis of the store's health is counted in probes, so it shortens with the probe.
"""

from __future__ import annotations

from dataclasses import dataclass

# Accepted range of every interval, in seconds: `Intervals` checks it, and the settings
# declare each variable's range from it.
RANGES: dict[str, tuple[float, float]] = {
    "store_probe_interval": (0.05, 60),
    "stats_interval": (0.05, 300),
    "sweep_interval": (0.05, 3600),
    "tls_reload_interval": (0.05, 3600),
    "worker_status_interval": (0.05, 60),
    "worker_restart_delay": (0.01, 60),
    "replay_idle": (0.01, 60),
    "replay_backoff": (0.01, 600),
}


@dataclass(frozen=True, slots=True)
class Intervals:
    """How often the periodic jobs run and how fast the runtime reacts."""

    # A small durable write judges the store (3 failures down, 2 successes up).
    store_probe_interval: float = 2.0
    stats_interval: float = 5.0  # the live statistics are published this often
    sweep_interval: float = 30.0  # expired mail leaves the store within about this long
    tls_reload_interval: float = 2.0  # certificate files are checked this often
    # A worker process reports its readiness, store, spool and metrics this often: the
    # host's /readyz and /metrics are at most this far behind.
    worker_status_interval: float = 1.0
    worker_restart_delay: float = 0.5  # a dead worker's successor starts after this
    replay_idle: float = 0.5  # the spool's replay looks again this often while idle
    replay_backoff: float = 2.0  # ... and waits this long after a failed pass

    def __post_init__(self) -> None:
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(f"{name}={value} is out of range [{low}, {high}]")

    @property
    def sweep_lease(self) -> float:
        """A dead sweeper's lease passes to another receiver after this long."""
        return 3 * self.sweep_interval

    @property
    def worker_silent_after(self) -> float:
        """A worker process this long without a status is not ready."""
        return 5 * self.worker_status_interval


DEFAULTS = Intervals()
