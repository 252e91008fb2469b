"""The restart policy: how soon a dead child's successor starts, and when a child that keeps
dying is a fault for its own supervisor to see rather than something to hide by restarting
it for ever."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """At most `max_restarts` deaths within `window` seconds are restarted, each after
    `delay` seconds; one more and the parent gives up (and says so)."""

    max_restarts: int = 5
    window: float = 60.0
    delay: float = 0.5

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.window <= 0 or self.delay < 0:
            raise ValueError(f"not a restart policy: {self}")


RESTART_POLICY = RestartPolicy()  # the one policy every part uses


class RestartBudget:
    """The deaths of one child within the policy's window."""

    __slots__ = ("_clock", "_deaths", "policy")

    def __init__(
        self, policy: RestartPolicy = RESTART_POLICY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._deaths: list[float] = []

    def died(self) -> bool:
        """Record a death; True if the child may be restarted, False once it keeps dying."""
        now = self._clock()
        self._deaths = [t for t in self._deaths if now - t < self.policy.window]
        self._deaths.append(now)
        return len(self._deaths) <= self.policy.max_restarts

    @property
    def deaths(self) -> int:
        """Deaths within the window, as of the last one recorded."""
        return len(self._deaths)
