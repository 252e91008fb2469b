"""One log format for every line: logfmt (or JSON lines), quoted and escaped."""

from __future__ import annotations

import json
import logging
import re

import httpx

from floodgate.logs import DedupFilter, Formatter
from receiver.telemetry.events import logfmt, quote
from tests.conftest import ServiceFactory
from tests.support.faultproxy import FaultProxy
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient, wait_for

LINE = re.compile(r"^ts=\S+ level=(debug|info|warning|error|critical) logger=\S+ ")


def test_values_are_quoted_and_escaped_when_needed() -> None:
    assert quote("mx.test") == "mx.test"
    assert quote("bad host name") == '"bad host name"'
    assert quote('say "hi"') == '"say \\"hi\\""'
    assert quote("a=b") == '"a=b"'
    assert quote("line\nforged=1 \x1b[31m") == '"line\\nforged=1 \\u001b[31m"'
    assert quote("") == '""'
    assert logfmt({"event": "x", "n": 3}) == "event=x n=3"


def record(message: str, **fields: object) -> logging.LogRecord:
    item = logging.LogRecord("floodgate.receiver", logging.INFO, __file__, 1, message, None, None)
    if fields:
        item.fields = fields
    return item


def test_structured_and_plain_records_share_one_format() -> None:
    text = Formatter().format(record("ignored", event="store_down", reason="disk full"))
    assert LINE.match(text) and text.endswith('event=store_down reason="disk full"')
    plain = Formatter().format(record("Started server process [12]"))
    assert LINE.match(plain) and plain.endswith('msg="Started server process [12]"')
    parsed = json.loads(Formatter("json").format(record("x", event="autoban", key="192.0.2.1")))
    assert parsed["event"] == "autoban" and parsed["level"] == "info" and "ts" in parsed


def test_a_receivers_log_is_all_logfmt_with_routine_events_at_info(
    receiver: ServiceProcess,
) -> None:
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    client.cmd("QUIT")
    receiver.stop()
    lines = [line for line in receiver.log().splitlines() if line.strip()]
    assert lines and all(LINE.match(line) for line in lines), lines[:5]
    listening = [line for line in lines if "event=receiver_listening" in line]
    assert listening and " level=info " in listening[0]


def test_repeats_are_dropped_but_never_a_change_of_state() -> None:
    dedup = DedupFilter(interval=60)
    routine = [record("x", event="stats_not_published", error="AutoReconnect") for _ in range(3)]
    assert [dedup.filter(r) for r in routine] == [True, False, False]
    flapping = ["store_down", "store_up", "store_down", "store_up", "stress_on", "stress_off"]
    changes = [record("x", event=e, reason="timeout") for e in flapping + flapping]
    assert all(dedup.filter(r) for r in changes)


def test_a_receivers_log_ends_on_the_state_its_store_is_in(
    make_receiver: ServiceFactory, store_fault: FaultProxy
) -> None:
    """A store that pauses twice within the duplicate filter's interval: both outages and
    both recoveries are in the log, each outage with its cause, and the log ends on up."""
    receiver = make_receiver(
        mongodb_uri=store_fault.uri, store_timeout="1", log_summary_interval="60"
    )

    def events() -> list[str]:
        return re.findall(r"event=(store_down|store_up)", receiver.log())

    assert wait_for(lambda: events() == ["store_up"], timeout=15), receiver.log()
    for outage in (1, 2):
        store_fault.set_mode("stall")
        assert wait_for(lambda n=outage: events().count("store_down") == n, timeout=20)
        store_fault.set_mode("pass")
        assert wait_for(lambda n=outage: events().count("store_up") == n + 1, timeout=20)
    assert events() == ["store_up", "store_down", "store_up", "store_down", "store_up"]
    downs = [line for line in receiver.log().splitlines() if "event=store_down" in line]
    assert all('reason="timeout: no durable write within 1s"' in line for line in downs), downs
    assert httpx.get(f"{receiver.http_url}/readyz", timeout=5).status_code == 200
