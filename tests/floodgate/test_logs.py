"""One log format for every line: logfmt (or JSON lines), quoted and escaped."""

from __future__ import annotations

import json
import logging
import re

from floodgate.logs import Formatter
from receiver.events import logfmt, quote
from tests.support.processes import ServiceProcess
from tests.support.smtp import RawClient

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
