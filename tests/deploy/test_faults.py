"""Between receiver and store: drop, stall and reset connections mid-insert while mail flows.

Whatever the network does, a sender gets `250` only for a message that is stored (exactly
once: the `_id` is fixed at DATA time, so the driver's retried write cannot duplicate it),
and otherwise `451 4.3.0` within the store deadline; once the faults stop, mail flows again.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from pymongo import MongoClient

from tests.conftest import ServiceFactory
from tests.support.faultproxy import FaultProxy
from tests.support.smtp import RawClient, queued_id, send_message, wait_for

STORE_TIMEOUT = 2.0


class Sender(threading.Thread):
    """Sends messages back to back, each tagged, recording (code, text, id, seconds)."""

    def __init__(self, host: str, port: int, source: str, pause: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.source = host, port, source
        self.pause = pause
        self.results: list[tuple[int, str, str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            self._send_until_stopped()
        except (AssertionError, OSError) as error:  # recorded; the test fails on it
            self.results.append((0, f"sender failed: {error}", "", 0.0))

    def _send_until_stopped(self) -> None:
        client: RawClient | None = None
        sent = 0
        while not self.stop.is_set():
            if client is None or sent % 50 == 0:  # as MTAs do: a fresh session now and then
                if client is not None:
                    client.close()
                client = RawClient(self.host, self.port, source=self.source, timeout=30)
                client.hello()
            tag = secrets.token_hex(8)
            started = time.monotonic()
            body = f"Subject: fault {tag}\r\n\r\nbody {tag}\r\n".encode()
            reply = send_message(client, "s@example.org", ["box@mx.test"], body)
            self.results.append((reply.code, reply.text, tag, time.monotonic() - started))
            sent += 1
            self.stop.wait(self.pause)  # steady, not flat out: a few thousand messages in all
            if reply.code >= 500 or reply.code == 421:
                client.close()
                client = None


def _flowing(sender: Sender, since: int, run: int = 5) -> bool:
    """The sender's last `run` messages, all sent after its first `since`, were accepted."""
    last = sender.results[since:][-run:]
    return len(last) == run and all(code == 250 for code, *_ in last)


def test_faults_never_lose_or_duplicate_an_accepted_message(
    make_receiver: ServiceFactory,
    store_fault: FaultProxy,
    mongo: MongoClient[dict[str, Any]],
    db_name: str,
) -> None:
    receiver = make_receiver(
        mongodb_uri=store_fault.uri,
        store_timeout=str(STORE_TIMEOUT),
        message_rate="0",
        recipient_rate="0",
        connection_rate="0",
        autoban_threshold="0",
        # Every accepted message must be found stored: no per-mailbox cap trimming them.
        mailbox_max_messages="0",
        # The 451 path: with the spool on (tests/receiver/test_spool.py) they would be 250.
        spool="false",
    )
    senders = [Sender(receiver.host, receiver.port, f"127.0.70.{n}") for n in (1, 2, 3)]
    for sender in senders:
        sender.start()
    schedule = [
        ("pass", 0),
        ("reset", 0),
        ("pass", 0),
        ("stall", 0),
        ("pass", 0),
        ("reset_after", 200),
        ("pass", 0),
        ("reset_after", 2000),
        ("pass", 0),
        ("stall", 0),
    ]
    for mode, after in schedule:
        store_fault.set_mode(mode, after_bytes=after)
        time.sleep(1.2)
    store_fault.set_mode("pass")
    # Recovery: the receiver reconnects by itself, and every sender's mail flows again.
    since = [len(sender.results) for sender in senders]
    assert wait_for(
        lambda: all(_flowing(s, n) for s, n in zip(senders, since, strict=True)), timeout=30
    )
    for sender in senders:
        sender.stop.set()
    for sender in senders:
        sender.join(60)
        assert not sender.is_alive()

    results = [r for sender in senders for r in sender.results]
    codes = {code for code, *_ in results}
    assert codes <= {250, 451}, [r for r in results if r[0] not in (250, 451)][:3]
    assert 451 in codes and 250 in codes, "the faults did bite, and mail still flowed"
    assert store_fault.resets > 0 and store_fault.connections > 1
    for code, text, _tag, seconds in results:
        # Bounded by the store deadline (plus one retried write and slack), never a hang.
        assert seconds < 3 * STORE_TIMEOUT + 3, (code, text, seconds)
        if code == 451:
            assert text.startswith("4.3.0"), text

    stored: dict[str, list[str]] = {}  # subject -> ids of the documents carrying it
    for document in mongo[db_name]["messages"].find({}, {"headers": 1}):
        stored.setdefault(document["headers"]["subject"], []).append(document["_id"])
    for code, text, tag, _ in results:
        ids = stored.get(f"fault {tag}", [])
        # Nothing stored twice, including messages whose 451 raced a write that did land.
        assert len(ids) <= 1, (tag, ids)
        if code == 250:
            assert ids == [queued_id(text)], f"250 given but {queued_id(text)} is not stored"
    # After the faults: the last messages of every sender were accepted.
    for sender in senders:
        assert sender.results[-1][0] == 250, sender.results[-5:]
