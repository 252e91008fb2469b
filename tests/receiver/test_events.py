import logging

import pytest

from floodgate.logs import DedupFilter
from receiver.events import SummaryLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_refusals_is_one_line_per_reason_per_interval() -> None:
    clock = Clock()
    summary = SummaryLog(interval=10, clock=clock)
    for n in range(5000):
        summary.record("per_ip_cap", f"192.0.2.{n % 4}")
    summary.record("blocked", "198.51.100.1")
    assert summary.flush() == []  # interval not over: nothing logged yet
    clock.now = 10
    lines = summary.flush()
    assert len(lines) == 2
    assert "event=per_ip_cap count=5000 clients=4" in lines[1]
    assert summary.flush(force=True) == []


def test_identical_log_lines_are_suppressed_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    dedup = DedupFilter(interval=60)
    records = [
        logging.LogRecord("x", logging.WARNING, __file__, 1, "store down", None, None)
        for _ in range(1000)
    ]
    passed = [r for r in records if dedup.filter(r)]
    assert len(passed) == 1
