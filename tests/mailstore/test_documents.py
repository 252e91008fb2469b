"""The stored document (mailstore.documents): what one insert writes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from mailstore.documents import to_document
from mailstore.message import MessageDocument

MESSAGE = MessageDocument(
    id="01testtesttesttesttesttest",
    raw=b"Subject: s\r\n\r\nbody\r\n",
    mail_from="A@Example.org",
    rcpt=("u@mx.test",),
    peer_ip="192.0.2.1",
    helo="client.test",
    received_at=datetime(2026, 12, 1, tzinfo=UTC),
    received_header=b"Received: x\r\n",
)


def test_auth_is_written_only_when_the_checks_ran() -> None:
    assert "auth" not in to_document(MESSAGE, 60)
    auth = {"spf": {"result": "fail", "domain": "example.org", "reason": "matched -all"}}
    document = to_document(dataclasses.replace(MESSAGE, auth=auth), 60)
    assert document["auth"] == auth
    assert document["size"] == len(MESSAGE.raw)
