"""The local spool: records that survive torn writes and corruption, and a real receiver that
keeps taking mail while its store is away, then stores every acknowledged message once."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient

from mailstore.embedded import EmbeddedStore
from mailstore.ids import new_message_id
from mailstore.message import MessageDocument, TlsInfo, utcnow
from receiver.delivery.records import Segment
from receiver.delivery.records import encode as encode_with
from receiver.delivery.records import read_records as read_with
from receiver.delivery.spool import Spool, SpoolFull, segment_paths
from receiver.intake.message import fingerprint
from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.deploy.test_faults import Sender
from tests.receiver.test_readiness import readyz
from tests.support.metrics import sample
from tests.support.processes import ServiceProcess, clean_environ, start_service
from tests.support.smtp import RawClient, queued_id, send_message, wait_for


def message(n: int = 0, raw: bytes = b"Subject: s\r\n\r\nbody\r\n") -> MessageDocument:
    return MessageDocument(
        id=new_message_id(),
        raw=raw,
        mail_from=f"s{n}@example.org",
        rcpt=(f"r{n}@mx.test", "other@mx.test"),
        peer_ip="192.0.2.1",
        helo="client.test",
        received_at=utcnow(),
        received_header=b"Received: from client.test\r\n",
        headers={"subject": f"s {n}"},
        tls=TlsInfo("TLSv1.3", "TLS_AES_256_GCM_SHA384") if n % 2 else None,
        fp=fingerprint(f"s{n}@example.org", [f"r{n}@mx.test"], raw),
    )


# --- records -------------------------------------------------------------------------

KEY = bytes(range(32))  # a spool's key, as `spool_key` makes one


def encode(message: MessageDocument) -> bytes:
    return encode_with(message, KEY)


def read_records(data: bytes) -> list:  # type: ignore[type-arg]
    return read_with(data, KEY).records


def test_a_record_reads_back_exactly() -> None:
    original = message(1, raw=b"Subject: caf\xc3\xa9\r\n\r\n\x00\xff bytes as sent\r\n")
    [record] = read_records(encode(original))
    assert record.message == original and record.offset == 0


def test_a_spooled_message_keeps_its_authentication_verdicts() -> None:
    auth = {"spf": {"result": "pass", "domain": "example.org", "reason": ""}, "dkim": []}
    original = dataclasses.replace(message(2), auth=auth)
    [record] = list(read_records(encode(original)))
    assert record.message == original and record.message.auth == auth
    [plain] = list(read_records(encode(message(3))))
    assert plain.message.auth is None


def test_a_record_carries_the_stored_documents_field_names() -> None:
    original = message(1)
    record = encode(original)
    (meta_size,) = struct.unpack_from(">I", record, 24)
    meta = json.loads(record[28 : 28 + meta_size])
    stored = {k for k in original.fields() if k not in ("raw", "received_header")}
    assert set(meta) == stored | {"trace"}


def test_a_record_spooled_before_the_one_message_type_is_still_replayed() -> None:
    # Spools written by the previous version (`id`, `rcpt_to`, `fingerprint`, `tls` as a
    # list) must not be stranded by an upgrade: they hold acknowledged mail.
    original = message(1)
    meta = json.dumps(
        {
            "id": original.id,
            "mail_from": original.mail_from,
            "rcpt_to": list(original.rcpt),
            "peer_ip": original.peer_ip,
            "helo": original.helo,
            "received_at": original.received_at.isoformat(),
            "headers": dict(original.headers),
            "tls": list(original.tls) if original.tls else None,
            "fingerprint": original.fp,
            "auth": None,
            "trace": len(original.received_header),
        }
    ).encode()
    payload = struct.pack(">I", len(meta)) + meta + original.received_header + original.raw
    framed = struct.pack(">4sII", b"FGS1", len(payload), zlib.crc32(payload)) + payload
    [record] = read_with(framed, None).records  # a segment of the old format needs no key
    assert record.message == original


def test_a_record_in_a_message_body_is_never_read_as_a_record() -> None:
    # With bare newlines accepted a body can carry a whole framed record; if the record
    # around it is damaged, a reader looking for the next record finds the forged one:
    # its envelope, its verdicts, our own Received line. A forger cannot compute the MAC.
    forged = dataclasses.replace(
        message(9), mail_from="ceo@bank.test", auth={"dmarc": {"result": "pass"}}
    )
    for inner in (encode_with(forged, b"a guess" * 5), encode_with(forged, bytes(32))):
        carrier = encode(message(1, raw=b"Subject: x\r\n\r\n" + inner + b"\r\n"))
        damaged = bytearray(carrier)
        damaged[30] ^= 0xFF  # the carrier's metadata: its MAC fails
        segment = read_with(bytes(damaged) + encode(message(2)), KEY)
        assert [r.message.mail_from for r in segment.records] == ["s2@example.org"]
        assert segment.damaged == len(carrier) and segment.torn == 0


def test_damage_is_counted_apart_from_a_torn_tail() -> None:
    records = [encode(message(n)) for n in range(3)]
    whole = b"".join(records)
    cut = read_with(whole[:-5], KEY)  # a crash mid-append: never acknowledged
    assert len(cut.records) == 2 and cut.damaged == 0 and cut.torn == len(records[2]) - 5
    flipped = bytearray(whole)
    flipped[len(records[0]) + 40] ^= 1  # one bit of the second record
    read = read_with(bytes(flipped), KEY)
    assert [r.message.mail_from for r in read.records] == ["s0@example.org", "s2@example.org"]
    assert read.damaged == len(records[1]) and read.torn == 0
    assert read_with(whole, None) == Segment([], damaged=len(whole))  # no key: nothing proven


async def test_a_damaged_segment_is_kept_in_quarantine_never_deleted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, min_free=0)
    spool.open()
    spool.start()
    try:
        for n in range(3):
            await spool.append(message(n))
    finally:
        await spool.close()
    [path] = segment_paths(tmp_path / "spool")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55  # the middle record's bytes: acknowledged mail, damaged
    path.write_bytes(bytes(data))
    again = Spool(tmp_path / "spool", max_bytes=1 << 20, min_free=0)
    again.open()
    [sealed] = again.sealed()
    segment = again.read(sealed)
    assert len(segment.records) == 2 and segment.damaged > 0
    kept = again.quarantine(sealed, segment)
    assert kept.read_bytes() == bytes(data)  # the evidence, byte for byte
    assert segment_paths(tmp_path / "spool") == [] and again.messages == 0


def test_a_torn_last_record_is_dropped_and_the_ones_before_kept() -> None:
    records = [encode(message(n)) for n in range(3)]
    data = b"".join(records)
    for cut in range(len(data) - len(records[-1]), len(data)):
        assert len(list(read_records(data[:cut]))) == 2


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bodies=st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=8),
    cut=st.integers(min_value=0),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), max_size=4),
    junk=st.binary(max_size=64),
)
def test_cut_or_corrupted_segments_give_back_every_whole_record_and_invent_none(
    bodies: list[bytes], cut: int, flips: list[tuple[int, int]], junk: bytes
) -> None:
    originals = [message(n, raw=b"Subject: p\r\n\r\n" + body) for n, body in enumerate(bodies)]
    encoded = [encode(m) for m in originals]
    data = bytearray(b"".join(encoded) + junk)
    touched: set[int] = set()
    for position, value in flips:
        at = position % len(data)
        data[at] ^= value
        touched.add(at)
    end = cut % (len(data) + 1)
    recovered = [r.message for r in read_records(bytes(data[:end]))]
    assert all(m in originals for m in recovered)  # nothing invented
    assert len(recovered) == len(set(m.id for m in recovered))  # nothing twice
    start = 0
    for original, record in zip(originals, encoded, strict=True):
        span = range(start, start + len(record))
        whole = span.stop <= end and not touched.intersection(span)
        if whole:
            assert original in recovered  # every intact record survives its neighbours
        start = span.stop


async def test_the_spool_appends_with_one_sync_per_batch_and_counts_what_is_left(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "spool", max_bytes=1 << 20, min_free=0)
    spool.open()
    spool.start()
    try:
        batch = [message(n) for n in range(20)]
        await asyncio.gather(*(spool.append(m) for m in batch))
        assert spool.messages == 20 and spool.bytes == sum(len(encode(m)) for m in batch)
        too_big = message(99, raw=b"x" * (1 << 20))
        with pytest.raises(SpoolFull):
            await spool.append(too_big)
    finally:
        await spool.close()
    again = Spool(tmp_path / "spool", max_bytes=1 << 20, min_free=0)
    again.open()  # a restart: what was left is counted, ready for replay
    assert again.messages == 20
    [path] = again.sealed()
    assert [r.message for r in again.read(path).records] == batch
    again.replayed(path)
    assert again.messages == 0 and segment_paths(tmp_path / "spool") == []


async def test_the_free_space_floor_refuses_before_the_disk_is_full(tmp_path: Path) -> None:
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    spool = Spool(tmp_path / "spool", max_bytes=1 << 40, min_free=free + (1 << 30))
    spool.open()
    spool.start()
    try:
        with pytest.raises(SpoolFull):
            await spool.append(message())
    finally:
        await spool.close()


# --- a real receiver, a real store that goes away -----------------------------------


def _stored(uri: str, db_name: str) -> dict[str, list[str]]:
    """Subject -> ids of the documents carrying it."""
    with MongoClient(uri) as check:
        found: dict[str, list[str]] = {}
        for document in check[db_name]["messages"].find({}, {"headers": 1}):
            found.setdefault(document["headers"].get("subject", ""), []).append(document["_id"])
        return found


def _stored_once(uri: str, db_name: str, taken: dict[str, str]) -> None:
    """Every message taken (subject -> the id its 250 named) is stored under that id,
    exactly once, within 30 s."""
    assert wait_for(lambda: all(s in _stored(uri, db_name) for s in taken), timeout=30)
    found = _stored(uri, db_name)
    assert {s: found[s] for s in taken} == {s: [i] for s, i in taken.items()}


def _fill(receiver: ServiceProcess, name: str, count: int) -> tuple[dict[str, str], list[int]]:
    """`count` messages of ~200 KB while the store is away: what was taken (subject -> id)
    and every code answered."""
    client = RawClient(receiver.host, receiver.port, timeout=30)
    client.hello()
    taken: dict[str, str] = {}
    codes = []
    filler = b"x" * 200 + b"\r\n"
    for n in range(count):
        body = f"Subject: {name} {n}\r\n\r\n".encode() + filler * 1000
        reply = send_message(client, "s@example.org", [f"{name}@mx.test"], body)
        codes.append(reply.code)
        if reply.code == 250:
            taken[f"{name} {n}"] = queued_id(reply.text)
    return taken, codes


AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def spooled(receiver: ServiceProcess) -> float:
    """Messages in the receiver's spool, not yet stored."""
    return sample(receiver.http_url, "floodgate_spool_messages")


# The outage's length: 15 s in `make test` (the spool, the replay beside live mail and the
# exactly-once check are the same at any length); the incident's full minute with
# FLOODGATE_TEST_OUTAGE=60.
OUTAGE = float(os.environ.get("FLOODGATE_TEST_OUTAGE", "15"))


def test_store_away_under_load_costs_senders_nothing_and_every_message_lands_once(
    make_receiver: ServiceFactory, tmp_path: Path, db_name: str
) -> None:
    store = EmbeddedStore(tmp_path / "own-store")
    uri = store.start()
    try:
        receiver = make_receiver(
            mongodb_uri=uri,
            store_timeout="1",
            message_rate="0",
            connection_rate="0",
            mailbox_max_messages="0",
        )
        assert wait_for(lambda: readyz(receiver)[0] == 200, timeout=15)
        # Steady, about 10 messages a second each: a minute of it is ~1,800 spooled messages.
        senders = [
            Sender(receiver.host, receiver.port, f"127.0.80.{n}", pause=0.1) for n in (1, 2, 3)
        ]
        for sender in senders:
            sender.start()
        assert wait_for(lambda: all(len(s.results) >= 10 for s in senders), timeout=15)
        store.kill()
        killed = time.monotonic()
        assert wait_for(lambda: "spooling" in readyz(receiver)[1], timeout=15)
        assert readyz(receiver)[0] == 200  # still in the pool: mail is being taken
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - killed)))  # the store away
        store.start()
        back = time.monotonic()
        # Live mail goes on beside the replay for a while: 20 more messages from each.
        sent = [len(sender.results) for sender in senders]
        assert wait_for(
            lambda: all(len(s.results) >= n + 20 for s, n in zip(senders, sent, strict=True)),
            timeout=30,
        )
        for sender in senders:
            sender.stop.set()
        for sender in senders:
            sender.join(60)
        results = [r for sender in senders for r in sender.results]
        assert {code for code, *_ in results} == {250}, [r for r in results if r[0] != 250][:3]
        spooled = receiver.log().count("spool_on")
        assert spooled >= 1, receiver.log()[-2000:]
        # Every acknowledged message readable within 30 s of the store's return, once.
        want = {f"fault {tag}": queued_id(text) for _, text, tag, _ in results}

        def all_stored() -> bool:
            found = _stored(uri, db_name)
            return all(subject in found for subject in want)

        assert wait_for(all_stored, timeout=30, interval=0.5)
        assert time.monotonic() - back < 30
        found = _stored(uri, db_name)
        for subject, first_id in want.items():
            assert found[subject] == [first_id], (subject, found[subject], first_id)
        assert wait_for(lambda: "spooling" not in readyz(receiver)[1], timeout=10)
        assert len(results) > 100  # steady load: it did not stall
    finally:
        store.stop()


def test_a_receiver_killed_while_spooling_stores_everything_once_after_restart(
    make_receiver: ServiceFactory, make_api: ServiceFactory, tmp_path: Path, db_name: str
) -> None:
    store = EmbeddedStore(tmp_path / "own-store")
    uri = store.start()
    data_dir = tmp_path / "receiver-data"
    try:
        receiver = make_receiver(mongodb_uri=uri, store_timeout="1", data_dir=str(data_dir))
        assert wait_for(lambda: readyz(receiver)[0] == 200, timeout=15)
        store.kill()
        client = RawClient(receiver.host, receiver.port, timeout=30)
        client.hello()
        ids = {}
        for n in range(20):
            body = f"Subject: kill {n}\r\n\r\nbody {n}\r\n".encode()
            reply = send_message(client, "s@example.org", ["kill@mx.test"], body)
            assert reply.code == 250, reply
            ids[f"kill {n}"] = queued_id(reply.text)
        receiver.process.send_signal(signal.SIGKILL)
        receiver.process.wait(10)
        store.start()
        # Replayed slowly here, so the operator's views can be seen holding the spool.
        again = make_receiver(
            mongodb_uri=uri, store_timeout="1", data_dir=str(data_dir), spool_replay_rate="2"
        )
        api = make_api(mongodb_uri=uri)

        def spool_shown() -> bool:
            stats = httpx.get(f"{api.http_url}/v1/stats", headers=AUTH, timeout=5).json()
            return any((r.get("spool") or {}).get("messages") for r in stats["receivers"])

        assert wait_for(spool_shown, timeout=15, interval=0.5)
        # Paused, the receiver publishes no newer snapshot: `top` sees the one with the spool
        # held however long it takes to start (the 10 s replay was over before it did on a
        # loaded host), and the replay goes on where it stopped.
        again.process.send_signal(signal.SIGSTOP)
        try:
            assert wait_for(spool_shown, timeout=15, interval=0.5)
            env = {**clean_environ(), "FLOODGATE_ADMIN_TOKEN": ADMIN_TOKEN}
            env["FLOODGATE_DATA_DIR"] = str(tmp_path / "top")
            top = subprocess.run(
                [sys.executable, "-m", "floodgate", "top", "--once", "--api", api.http_url],
                env={**env, "COLUMNS": "160"},
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            again.process.send_signal(signal.SIGCONT)
        assert top.returncode == 0 and "msgs, oldest" in top.stdout, top.stdout + top.stderr
        _stored_once(uri, db_name, ids)
        assert wait_for(lambda: not list((data_dir / "spool").glob("*.spool")), timeout=10)
        assert again.alive()
    finally:
        store.stop()


def test_a_full_spool_answers_451_and_replays_what_it_took(
    make_receiver: ServiceFactory, tmp_path: Path, db_name: str
) -> None:
    store = EmbeddedStore(tmp_path / "own-store")
    uri = store.start()
    try:
        receiver = make_receiver(
            mongodb_uri=uri, store_timeout="1", spool_max_bytes=str(1 << 20), message_rate="0"
        )
        assert wait_for(lambda: readyz(receiver)[0] == 200, timeout=15)
        store.kill()
        taken, codes = _fill(receiver, "full", 12)  # the 1 MiB spool takes four or five
        assert 451 in codes and 250 in codes, codes
        assert codes == sorted(codes)  # once full, full (nothing drains while the store is away)
        status, reason = readyz(receiver)
        # The reason says which bound: the spool's own cap here.
        assert status == 503 and "spool full: " in reason and "bytes held" in reason, reason
        store.start()
        _stored_once(uri, db_name, taken)
        found = _stored(uri, db_name)
        assert not any(s in found for s in (f"full {n}" for n in range(12)) if s not in taken)
    finally:
        store.stop()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a private tmpfs needs root and unshare",
)
def test_a_really_full_disk_answers_451_keeps_whole_records_and_replays_them(
    store_env: dict[str, str], tmp_path: Path, db_name: str
) -> None:
    """The spool on a 1 MiB tmpfs of the receiver's own (a private mount namespace: the
    host's mounts are untouched, and the mount ends with the process), no free-space
    floor: the disk itself fills up mid-write."""
    store = EmbeddedStore(tmp_path / "own-store")
    uri = store.start()
    data_dir = tmp_path / "tiny"
    spool_dir = data_dir / "spool"
    mount = 'mkdir -p "$1" && mount -t tmpfs -o size=1m tmpfs "$1" && shift && exec "$@"'
    env = {
        **store_env,
        "FLOODGATE_MONGODB_URI": uri,
        "FLOODGATE_DATA_DIR": str(data_dir),
        "FLOODGATE_STORE_TIMEOUT": "1",
        "FLOODGATE_SPOOL_MIN_FREE_BYTES": "0",
        "FLOODGATE_MESSAGE_RATE": "0",
        "FLOODGATE_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    wrapper = ("unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh")
    receiver = start_service("receiver", env, tmp_path, wrapper=(*wrapper, str(spool_dir)))
    try:
        assert wait_for(lambda: readyz(receiver)[0] == 200, timeout=15)
        store.kill()
        taken, codes = _fill(receiver, "disk", 10)  # a 1 MiB disk takes four or five
        assert 451 in codes and 250 in codes, codes
        status, reason = readyz(receiver)
        # The free space is checked before each write (the disk full), and a write the disk
        # still refuses is cut back (failing): either way 503 and 451, never a torn record.
        assert status == 503, reason
        assert "spool its disk is full" in reason or "spool failing" in reason, reason
        store.start()
        _stored_once(uri, db_name, taken)
        assert "spool_record_quarantined" not in receiver.log()  # nothing torn or corrupt
    finally:
        receiver.stop()
        store.stop()


def _send_and_leave(receiver: ServiceProcess, body: bytes) -> None:
    """A sender that sends its final dot and is gone before it can read our 250."""
    client = RawClient(receiver.host, receiver.port, timeout=30)
    client.hello()
    assert client.cmd("MAIL FROM:<s@example.org>").code == 250
    assert client.cmd("RCPT TO:<retry@mx.test>").code == 250
    assert client.cmd("DATA").code == 354
    client.send(body + b".\r\n")
    client.close()


@pytest.mark.parametrize("case", ["same receiver", "after a restart", "another receiver"])
def test_a_retry_of_a_message_whose_250_was_never_heard_is_stored_once(
    make_receiver: ServiceFactory, mongo: MongoClient[dict[str, Any]], db_name: str, case: str
) -> None:
    first = make_receiver()
    second = make_receiver() if case == "another receiver" else first
    body = f"Subject: retried {case}\r\n\r\nthe same bytes\r\n".encode()
    messages = mongo[db_name]["messages"]
    _send_and_leave(first, body)
    assert wait_for(lambda: messages.count_documents({"rcpt": "retry@mx.test"}) == 1, timeout=10)
    [stored] = messages.find({"rcpt": "retry@mx.test"}, {"_id": 1})
    if case == "after a restart":
        first.stop()
        second = make_receiver()
    client = RawClient(second.host, second.port, timeout=30)
    client.hello()
    reply = send_message(client, "s@example.org", ["retry@mx.test"], body)  # the retry
    assert reply.code == 250 and queued_id(reply.text) == stored["_id"]
    assert messages.count_documents({"rcpt": "retry@mx.test"}) == 1


def test_a_retry_of_a_spooled_message_is_one_document(
    make_receiver: ServiceFactory, tmp_path: Path, db_name: str
) -> None:
    store = EmbeddedStore(tmp_path / "own-store")
    uri = store.start()
    try:
        receiver = make_receiver(mongodb_uri=uri, store_timeout="1")
        assert wait_for(lambda: readyz(receiver)[0] == 200, timeout=15)
        store.kill()
        body = b"Subject: spooled retry\r\n\r\nsame bytes\r\n"
        client = RawClient(receiver.host, receiver.port, timeout=30)
        client.hello()
        assert send_message(client, "s@example.org", ["sr@mx.test"], body).code == 250
        assert send_message(client, "s@example.org", ["sr@mx.test"], body).code == 250
        store.start()
        assert wait_for(lambda: "spooled retry" in _stored(uri, db_name), timeout=30)
        # Both records replayed: the spool is empty.
        assert wait_for(lambda: spooled(receiver) == 0, timeout=30), spooled(receiver)
        assert len(_stored(uri, db_name)["spooled retry"]) == 1
    finally:
        store.stop()


def test_spool_off_keeps_the_451(make_receiver: ServiceFactory, tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "own-store")
    uri = store.start()
    try:
        receiver = make_receiver(mongodb_uri=uri, store_timeout="1", spool="false")
        store.kill()
        client = RawClient(receiver.host, receiver.port, timeout=30)
        client.hello()
        assert send_message(client, "s@example.org", ["off@mx.test"], b"x\r\n").code == 451
        assert not (Path(receiver.env["FLOODGATE_DATA_DIR"]) / "spool").exists()
    finally:
        store.stop()


def test_damage_in_a_spool_loses_only_the_damaged_record_keeps_the_evidence_and_forges_nothing(
    make_receiver: ServiceFactory, tmp_path: Path, db_name: str
) -> None:
    # With bare newlines accepted, a sender's body can carry a whole framed record: the
    # old CRC-framed kind, or a MAC-framed one under a guessed key. When the record that
    # carries it is damaged, nothing may be read out of it as a message of its own.
    store = EmbeddedStore(tmp_path / "own-store")
    uri = store.start()
    forged = dataclasses.replace(message(7), mail_from="ceo@bank.test")
    meta = json.dumps(
        {
            "id": forged.id,
            "mail_from": forged.mail_from,
            "rcpt_to": ["x@mx.test"],
            "peer_ip": "192.0.2.1",
            "helo": "bank.test",
            "received_at": forged.received_at.isoformat(),
            "headers": {},
            "trace": 0,
        }
    ).encode()
    payload = struct.pack(">I", len(meta)) + meta + b"Subject: forged\r\n\r\nx\r\n"
    old_style = struct.pack(">4sII", b"FGS1", len(payload), zlib.crc32(payload)) + payload
    guessed = encode_with(forged, bytes(32))
    try:
        receiver = make_receiver(
            mongodb_uri=uri, store_timeout="1", message_rate="0", bare_newline="accept"
        )
        assert wait_for(lambda: readyz(receiver)[0] == 200, timeout=15)
        store.kill()
        client = RawClient(receiver.host, receiver.port, timeout=30)
        client.hello()
        taken: dict[str, str] = {}
        for n in range(6):
            carried = (old_style + b"\n" + guessed) if n == 3 else b"plain"
            body = f"Subject: spooled {n}\r\n\r\n".encode() + carried + b"\r\n"
            reply = send_message(client, "s@example.org", ["box@mx.test"], body)
            assert reply.code == 250, reply
            taken[f"spooled {n}"] = queued_id(reply.text)
        client.cmd("QUIT")
        receiver.stop()
        spool_dir = Path(receiver.env["FLOODGATE_DATA_DIR"]) / "spool"
        key = (spool_dir / "key").read_bytes()
        path, carrier = next(
            (path, r)
            for path in segment_paths(spool_dir)
            for r in read_with(path.read_bytes(), key).records
            if b"spooled 3" in r.message.raw
        )
        data = bytearray(path.read_bytes())
        for offset in (30, 31, 32):  # three flipped bytes in the carrier's metadata
            data[carrier.offset + offset] ^= 0xA5
        path.write_bytes(bytes(data))
        store.start()
        again = make_receiver(mongodb_uri=uri, data_dir=str(spool_dir.parent), store_timeout="1")
        del taken["spooled 3"]  # the damaged one is lost: nothing else is
        _stored_once(uri, db_name, taken)
        found = _stored(uri, db_name)
        assert "forged" not in found and "spooled 3" not in found
        assert wait_for(lambda: "event=spool_damaged" in again.log(), 10), again.log()
        [kept] = (spool_dir / "quarantine").glob("damaged-*")
        assert kept.read_bytes() == bytes(data)  # the evidence, whole
        damaged = httpx.get(f"{again.http_url}/metrics", timeout=5).text
        assert "floodgate_spool_damaged_bytes_total" in damaged
        assert f'floodgate_spool_damaged_bytes_total{{worker="w1"}} {carrier.size}.0' in damaged
    finally:
        store.stop()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="a private read-only mount needs root and unshare",
)
def test_a_read_only_spool_is_named_as_such_and_the_receiver_still_starts(
    store_env: dict[str, str], tmp_path: Path
) -> None:
    """The spool directory a read-only bind mount of the receiver's own (a private mount
    namespace: the host's mounts are untouched): it used to read "spool full (0 bytes)"."""
    store = EmbeddedStore(tmp_path / "own-store")
    uri = store.start()
    data_dir = tmp_path / "ro"
    spool_dir = data_dir / "spool"
    spool_dir.mkdir(parents=True)
    mount = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    env = {
        **store_env,
        "FLOODGATE_MONGODB_URI": uri,
        "FLOODGATE_DATA_DIR": str(data_dir),
        "FLOODGATE_STORE_TIMEOUT": "1",
        "FLOODGATE_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    wrapper = ("unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh")
    receiver = start_service("receiver", env, tmp_path, wrapper=(*wrapper, str(spool_dir)))
    try:
        assert wait_for(lambda: readyz(receiver)[0] == 200, timeout=15)  # the store answers
        store.kill()
        status, reason = 0, ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and status != 503:
            status, reason = readyz(receiver)
            time.sleep(0.2)
        assert status == 503 and "spool failing: Read-only file system" in reason, reason
        assert "event=spool_failed" in receiver.log()
        client = RawClient(receiver.host, receiver.port)
        client.hello()
        assert (
            send_message(client, "s@example.org", ["ro@mx.test"], b"Subject: x\r\n\r\ny\r\n").code
            == 451
        )
    finally:
        receiver.stop()
        store.stop()
