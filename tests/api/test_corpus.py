"""A corpus nobody here wrote: CPython's email test messages (tests/api/corpus/cpython,
real-world and malformed MIME), each sent over SMTP to a real receiver and read through
a real API: every view, attachment and raw answer is 200 JSON or a documented error,
never a 500, and every string valid UTF-8."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.conftest import ServiceFactory
from tests.support.api import AUTH, deliver
from tests.support.processes import ServiceProcess

CORPUS = sorted((Path(__file__).parent / "corpus" / "cpython").glob("msg_*.txt"))
DOCUMENTED = {200, 404, 422, 503}


def as_sent(path: Path) -> bytes:
    """The file as an MTA would send it: CRLF line ends, ending in one."""
    text = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return text if text.endswith(b"\r\n") else text + b"\r\n"


def test_the_corpus_is_all_there() -> None:
    assert len(CORPUS) == 48


def test_every_corpus_message_reads_back(
    make_receiver: ServiceFactory, api: ServiceProcess
) -> None:
    # One receiver and one API for the whole corpus (a failure names the file); one client
    # sends it all, so no rate limit of the receiver's applies.
    receiver = make_receiver(connection_rate=0, message_rate=0, recipient_rate=0, mailbox_rate=0)
    for path in CORPUS:
        read_back(receiver, api, path)


def read_back(receiver: ServiceProcess, api: ServiceProcess, path: Path) -> None:
    raw = as_sent(path)
    message_id = deliver(receiver, "corpus@mx.test", raw)
    url = f"{api.http_url}/v1/messages/{message_id}"
    view = httpx.get(url, headers=AUTH, timeout=30)
    assert view.status_code == 200, (path.name, view.text[:300])
    body = view.json()
    json.dumps(body, ensure_ascii=False).encode("utf-8")  # valid UTF-8 throughout
    # msg_19 has no header section at all: its text is still shown.
    assert body["headers"] or body["text"] or body["parse_error"], path.name
    for index in range(len(body["attachments"])):
        download = httpx.get(f"{url}/attachments/{index}", headers=AUTH, timeout=30)
        assert download.status_code in DOCUMENTED, (path.name, index, download.text[:300])
        if download.status_code == 200:
            assert len(download.content) == body["attachments"][index]["size"], path.name
        else:
            assert "/raw" in download.json()["error"], path.name
    raw_answer = httpx.get(f"{url}/raw", headers=AUTH, timeout=30)
    assert raw_answer.status_code == 200 and raw_answer.content.endswith(raw), path.name
