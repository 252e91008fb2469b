"""The stored document (mailstore.documents): what one insert writes."""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime

import pytest

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


def test_bytes_are_compressed_only_when_it_pays_and_read_back_exactly() -> None:
    text = b"Subject: s\r\n\r\n" + b"the same line of a newsletter\r\n" * 40
    noise = os.urandom(2048)
    small = MESSAGE.raw
    for raw, packed in ((text, True), (noise, False), (small, False)):
        message = dataclasses.replace(MESSAGE, raw=raw)
        document = to_document(message, 60, compress=True)
        assert ("raw_zstd" in document) is packed and ("raw" in document) is not packed
        assert MessageDocument.read(document).raw == raw
        assert MessageDocument.read(document).size == len(raw)
    assert "raw_zstd" not in to_document(dataclasses.replace(MESSAGE, raw=text), 60)


def test_a_frame_never_decompresses_past_the_size_stored_beside_it() -> None:
    document = to_document(dataclasses.replace(MESSAGE, raw=b"a" * 100_000), 60, compress=True)
    document["size"] = 1_000  # a tampered document: the frame says more
    with pytest.raises(ValueError, match="stored size"):
        MessageDocument.read(document)
