import logging

import pytest

from floodgate.logs import DedupFilter
from receiver.telemetry.summary import SummaryLog
from tests.conftest import ServiceFactory
from tests.support.smtp import RawClient, wait_for


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


def test_session_end_summaries_name_the_heaviest_clients(make_receiver: ServiceFactory) -> None:
    """Idle timeouts from three addresses: the summary line names them, heaviest first
    (it said `top=-:6`, every session end under one anonymous key)."""
    receiver = make_receiver(idle_timeout="1", log_summary_interval="1")
    clients = [
        RawClient(receiver.host, receiver.port, source=f"127.0.37.{n}")
        for n, count in ((1, 3), (2, 2), (3, 1))
        for _ in range(count)
    ]
    for client in clients:
        assert client.reply().code == 220
    for client in clients:
        assert client.reply().code == 421  # the idle deadline

    def summary() -> str:
        lines = receiver.log().splitlines()
        return next((line for line in lines if "event=idle_timeout" in line), "")

    assert wait_for(lambda: summary() != "", timeout=15), receiver.log()
    line = summary()
    assert "count=6 clients=3" in line, line
    assert 'top="127.0.37.1:3 127.0.37.2:2 127.0.37.3:1"' in line, line
