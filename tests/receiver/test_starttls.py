"""STARTTLS through real sockets against a real receiver process: Python's smtplib,
`openssl s_client -starttls smtp`, swaks where installed; the command-injection case; a
handshake that stalls; certificate reload with connections open."""

from __future__ import annotations

import functools
import shutil
import socket
import ssl
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from receiver.smtp.tls import self_signed
from tests.conftest import ADMIN_TOKEN, ServiceFactory
from tests.support.metrics import sample
from tests.support.processes import ServiceProcess
from tests.support.smtp import (
    RawClient,
    insecure_context,
    queued_id,
    send_message,
    smtp_from,
    wait_for,
)

Mongo = MongoClient[dict[str, Any]]
BODY = b"From: a@sender.example\r\nSubject: over tls\r\n\r\nsecret code 1234\r\n"


def handshakes(receiver: ServiceProcess, outcome: str, version: str = "none") -> float:
    return sample(
        receiver.http_url, "floodgate_tls_handshakes_total", outcome=outcome, version=version
    )


def test_smtplib_delivers_over_starttls_and_the_message_says_so(
    shared_receiver: ServiceProcess,
    make_api: ServiceFactory,
    mongo: Mongo,
    db_name: str,
    client_ip: str,
) -> None:
    # Counted by this test alone: the receiver is the module's.
    ok = {v: handshakes(shared_receiver, "ok", v) for v in ("TLSv1.2", "TLSv1.3")}
    with smtp_from(shared_receiver, client_ip) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        client.starttls(context=insecure_context())
        # RFC 3207: the session starts over; EHLO again, and STARTTLS is no longer offered.
        code, _ = client.ehlo()
        assert code == 250 and not client.has_extn("starttls")
        refused = client.sendmail("a@sender.example", ["tls@mx.test"], BODY)
        assert refused == {}
        cipher = client.sock.cipher()  # type: ignore[union-attr]
    doc = mongo[db_name]["messages"].find_one({"rcpt": "tls@mx.test"})
    assert doc is not None
    assert doc["tls"] == {"version": cipher[1], "cipher": cipher[0]}
    trace = bytes(doc["received_header"]).decode()
    assert " with ESMTPS id " in trace, trace
    assert f"(using {cipher[1]} with cipher {cipher[0]})" in trace, trace
    api = make_api()
    shown = httpx.get(
        f"{api.http_url}/v1/messages/{doc['_id']}",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ).json()
    assert shown["tls"] == {"version": cipher[1], "cipher": cipher[0]}
    assert handshakes(shared_receiver, "ok", cipher[1]) >= ok[cipher[1]] + 1


def test_tls_1_1_and_older_are_refused(shared_receiver: ServiceProcess, client_ip: str) -> None:
    failed = handshakes(shared_receiver, "failed")
    client = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    client.hello()
    old = insecure_context()
    old.set_ciphers("DEFAULT:@SECLEVEL=0")  # so that this client may offer TLS 1.1 at all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        client.starttls(old)
    # The server refused it (the client did offer TLS 1.1), and counted a failed handshake.
    assert wait_for(lambda: handshakes(shared_receiver, "failed") >= failed + 1)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl missing")
def test_openssl_s_client_negotiates_tls_1_3(shared_receiver: ServiceProcess) -> None:
    with subprocess.Popen(
        [
            "openssl",
            "s_client",
            "-starttls",
            "smtp",
            "-name",
            "client.test",
            "-connect",
            f"{shared_receiver.host}:{shared_receiver.port}",
            "-brief",
            "-crlf",
            "-nocommands",  # "QUIT" is sent, not taken as s_client's own Q command
            "-ign_eof",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as process:
        assert process.stdin is not None and process.stdout is not None
        try:
            # EHLO ends a group (RFC 2920 3.1): QUIT goes only once its reply is in.
            process.stdin.write(b"EHLO client.test\n")
            process.stdin.flush()
            session = b""
            deadline = time.monotonic() + 20
            while b"250 " not in session and time.monotonic() < deadline:
                session += process.stdout.readline()
            process.stdin.write(b"QUIT\n")
            rest, report = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
    dialogue = (session + rest).decode(errors="replace")
    assert "Protocol version: TLSv1.3" in report.decode(), report
    # stdout is the dialogue inside TLS: EHLO again, no STARTTLS offered any more.
    assert "250-PIPELINING" in dialogue and "STARTTLS" not in dialogue, dialogue
    assert "221 2.0.0" in dialogue, dialogue


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks missing")
def test_swaks_delivers_with_tls(
    shared_receiver: ServiceProcess, mongo: Mongo, db_name: str, client_ip: str
) -> None:
    result = subprocess.run(
        [
            "swaks",
            "--server",
            f"{shared_receiver.host}:{shared_receiver.port}",
            "--to",
            "swaks@mx.test",
            "--from",
            "a@sender.example",
            "--helo",
            "client.test",
            "--tls",
            "--local-interface",
            client_ip,
        ],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout.decode(errors="replace")
    doc = mongo[db_name]["messages"].find_one({"rcpt": "swaks@mx.test"})
    assert doc is not None and doc["tls"]["version"] in ("TLSv1.2", "TLSv1.3")


def test_commands_pipelined_after_starttls_are_never_run(
    shared_receiver: ServiceProcess, mongo: Mongo, db_name: str, client_ip: str
) -> None:
    injection, failed = (handshakes(shared_receiver, o) for o in ("injection", "failed"))
    # The exact injection of CVE-2011-0411: plaintext commands in the STARTTLS packet.
    client = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    client.hello()
    client.send(b"STARTTLS\r\nMAIL FROM:<evil@attacker.example>\r\nRCPT TO:<x@mx.test>\r\n")
    reply = client.reply()
    assert reply.code == 554 and reply.lines[0].startswith("5.5.0"), reply
    assert client.closed_by_server()
    assert handshakes(shared_receiver, "injection") >= injection + 1

    # The same bytes in a second packet, once our 220 is out: the TLS layer takes them as
    # a handshake, which fails; nothing is answered in cleartext and the session closes.
    late = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    late.hello()
    late.send(b"STARTTLS\r\n")
    time.sleep(0.05)
    late.send(b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<x@mx.test>\r\nDATA\r\n")
    assert late.reply().code == 220
    assert late.closed_by_server()
    assert b"250" not in late._buffer
    assert handshakes(shared_receiver, "failed") >= failed + 1
    assert mongo[db_name]["messages"].count_documents({}) == 0


@functools.cache
def client_hello() -> bytes:
    """The bytes of a real ClientHello (the first flight of Python's TLS client), made
    once: a stalled client sends it right after the 220, within the hello deadline however
    loaded the host (a context made each time took a good part of that deadline)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = insecure_context().wrap_bio(incoming, outgoing, server_side=False)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def stalled_after_hello(receiver: ServiceProcess, source: str) -> RawClient:
    """A client that says STARTTLS, sends its ClientHello, and then nothing."""
    client = RawClient(receiver.host, receiver.port, source=source)
    client.hello()
    assert client.cmd("STARTTLS").code == 220
    client.send(client_hello())
    return client


def test_silence_after_starttls_is_cut_at_the_hello_deadline(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(tls_hello_timeout="1")
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    assert client.cmd("STARTTLS").code == 220
    started = time.monotonic()
    assert client.closed_by_server(timeout=6)
    assert 0.8 <= time.monotonic() - started < 4
    assert handshakes(receiver, "no_hello")


def test_a_stalled_handshake_is_cut_at_its_deadline(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(tls_handshake_timeout="1")
    client = stalled_after_hello(receiver, "127.0.0.2")
    started = time.monotonic()
    assert client.closed_by_server(timeout=6)
    assert 0.8 <= time.monotonic() - started < 4
    assert handshakes(receiver, "timeout")


def test_half_open_starttls_from_16_addresses_holds_no_handshake_slot(
    make_receiver: ServiceFactory, mongo: Mongo, db_name: str
) -> None:
    """64 sockets that say STARTTLS and then nothing (16 addresses x 4, the cap's worth)
    once switched STARTTLS off for everyone for the 10 s timeout. A slot is now taken only
    by a complete ClientHello: a legitimate client keeps STARTTLS and its TLS."""
    receiver = make_receiver(tls_max_handshakes="64", tls_hello_timeout="30")
    silent = []
    for n in range(16):
        for _ in range(4):
            client = RawClient(receiver.host, receiver.port, source=f"127.0.41.{n + 1}")
            client.hello()
            assert client.cmd("STARTTLS").code == 220
            silent.append(client)
    legit = RawClient(receiver.host, receiver.port, source="127.0.42.1")
    assert "STARTTLS" in legit.hello().lines
    assert legit.starttls().code == 220
    assert "STARTTLS" not in legit.cmd("EHLO client.test").lines  # inside TLS now
    reply = send_message(legit, "a@sender.example", ["tls@mx.test"], BODY)
    assert reply.code == 250
    assert all(not client.closed_by_server(timeout=0.01) for client in silent)  # still open
    for client in silent:
        client.close()
    assert handshakes(receiver, "ok", "TLSv1.3") == 1


def test_a_hello_that_finds_every_slot_busy_waits_for_one_instead_of_a_refusal(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(
        tls_max_handshakes="2", tls_handshake_timeout="1", tls_hello_timeout="4"
    )
    stalled = [stalled_after_hello(receiver, f"127.0.43.{n}") for n in (1, 2)]
    time.sleep(0.2)  # both slots held by complete hellos that never finish
    client = RawClient(receiver.host, receiver.port, source="127.0.43.3")
    assert "STARTTLS" in client.hello().lines  # offered though every slot is busy
    started = time.monotonic()
    assert client.starttls().code == 220  # handshake done once a stalled one timed out
    assert 0.3 <= time.monotonic() - started < 3.5
    assert client.cmd("EHLO client.test").code == 250
    assert send_message(client, "a@sender.example", ["wait@mx.test"], BODY).code == 250
    assert all(stall.closed_by_server(timeout=3) for stall in stalled)
    assert handshakes(receiver, "timeout") == 2


def test_a_hello_that_finds_no_slot_within_the_deadline_is_closed_uncounted(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(
        tls_max_handshakes="1",
        tls_handshake_timeout="5",
        tls_hello_timeout="1",
        autoban_threshold="1",
    )
    stalled = stalled_after_hello(receiver, "127.0.44.1")
    time.sleep(0.2)
    waiting = stalled_after_hello(receiver, "127.0.44.2")
    assert waiting.closed_by_server(timeout=4)
    assert handshakes(receiver, "busy") == 1
    # Not its fault: no violation, so no ban at a threshold of one.
    assert RawClient(receiver.host, receiver.port, source="127.0.44.2").reply().code == 220
    stalled.close()


def test_per_client_and_per_network_handshake_caps(make_receiver: ServiceFactory) -> None:
    # Held slots last 10 s; a hello waits 1 s for one: the waiting ones are refused busy.
    receiver = make_receiver(
        tls_max_handshakes_per_ip="1",
        tls_max_handshakes_per_network="2",
        tls_handshake_timeout="10",
        tls_hello_timeout="1",
    )
    # Two hellos of one client and two more of its /24. Which of them get a slot is the
    # receiver's first look at each (it polls each waiting socket); whichever they are,
    # two are held (one a client, two the /24) and the other two refused.
    sources = ("127.0.45.1", "127.0.45.1", "127.0.45.2", "127.0.45.3")
    clients = {stalled_after_hello(receiver, source): source for source in sources}
    closed: set[RawClient] = set()

    def two_closed() -> bool:
        closed.update(c for c in clients if c.closed_by_server(timeout=0.01))
        return len(closed) >= 2

    assert wait_for(two_closed, timeout=8, interval=0.1), closed
    held = [source for client, source in clients.items() if client not in closed]
    assert len(held) == 2 and len(set(held)) == 2, held
    assert handshakes(receiver, "busy") == 2, [
        (outcome, handshakes(receiver, outcome)) for outcome in ("no_hello", "timeout")
    ]
    elsewhere = RawClient(receiver.host, receiver.port, source="127.0.46.1")  # another /24
    elsewhere.hello()
    assert elsewhere.starttls().code == 220
    for client in clients:
        client.close()


def test_the_handshake_rate_is_per_client_and_answers_454(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(tls_handshake_rate="3")
    rated = 0
    for _ in range(5):
        client = RawClient(receiver.host, receiver.port, source="127.0.0.5")
        client.hello()
        code = client.starttls().code
        if code == 454:
            rated += 1
        client.close()
    assert rated == 2
    assert handshakes(receiver, "refused_rate")


def _peer_key(receiver: ServiceProcess, context: ssl.SSLContext, source: str | None = None) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    client = RawClient(receiver.host, receiver.port, source=source)
    client.hello()
    client.starttls(context)
    assert isinstance(client.sock, ssl.SSLSocket)
    der = client.sock.getpeercert(binary_form=True)
    client.close()
    assert der is not None
    key = x509.load_der_x509_certificate(der).public_key()
    return (
        "ecdsa"
        if isinstance(key, ec.EllipticCurvePublicKey)
        else ("rsa" if isinstance(key, rsa.RSAPublicKey) else "other")
    )


def test_the_self_signed_pair_serves_ecdsa_and_rsa_clients(
    shared_receiver: ServiceProcess, client_ip: str
) -> None:
    # A modern client gets the ECDSA certificate (a far cheaper signature for us)...
    assert _peer_key(shared_receiver, insecure_context(), client_ip) == "ecdsa"
    # ...one that can only verify RSA still gets a certificate it takes.
    rsa_only = insecure_context()
    rsa_only.maximum_version = ssl.TLSVersion.TLSv1_2
    rsa_only.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    assert _peer_key(shared_receiver, rsa_only, client_ip) == "rsa"


def _peer_name(receiver: ServiceProcess) -> str:
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    client.starttls()
    assert isinstance(client.sock, ssl.SSLSocket)
    der = client.sock.getpeercert(binary_form=True)
    client.close()
    assert der is not None
    from cryptography import x509

    return str(x509.load_der_x509_certificate(der).subject.rfc4514_string())


def test_a_replaced_certificate_is_used_by_new_sessions_only(
    make_receiver: ServiceFactory, tmp_path: Path
) -> None:
    first = self_signed(tmp_path / "one", "one.test")
    second = self_signed(tmp_path / "two", "two.test")
    live = tmp_path / "live.pem"
    shutil.copy(first, live)
    receiver = make_receiver(tls_cert=str(live))
    assert _peer_name(receiver) == "CN=one.test"

    open_session = RawClient(receiver.host, receiver.port)
    open_session.hello()
    open_session.starttls()
    assert open_session.cmd("EHLO client.test").code == 250

    staged = tmp_path / "staged.pem"
    shutil.copy(second, staged)
    staged.replace(live)
    assert wait_for(lambda: _peer_name(receiver) == "CN=two.test", timeout=10, interval=0.5), (
        "the new certificate was never used"
    )
    # The session opened before the reload carries on with its own TLS session.
    reply = send_message(open_session, "a@sender.example", ["reload@mx.test"], BODY)
    assert reply.code == 250 and queued_id(reply.text)


def test_starttls_off_and_a_broken_certificate(
    make_receiver: ServiceFactory, tmp_path: Path
) -> None:
    plain = make_receiver(starttls="false")
    client = RawClient(plain.host, plain.port)
    assert "STARTTLS" not in client.hello().lines
    assert client.cmd("STARTTLS").code == 454
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate\n")
    with pytest.raises(RuntimeError, match="cannot use the TLS certificate"):
        make_receiver(tls_cert=str(broken))


def test_no_cleartext_reply_after_220(shared_receiver: ServiceProcess, client_ip: str) -> None:
    """The 220 is the last cleartext the server sends on that connection."""
    address = (shared_receiver.host, shared_receiver.port)
    sock = socket.create_connection(address, timeout=5, source_address=(client_ip, 0))
    try:
        sock.recv(1024)
        sock.sendall(b"EHLO client.test\r\n")
        time.sleep(0.2)
        sock.recv(4096)
        sock.sendall(b"STARTTLS\r\n")
        assert sock.recv(1024) == b"220 2.0.0 Ready to start TLS\r\n"
        wrapped = insecure_context().wrap_socket(sock)
        wrapped.sendall(b"MAIL FROM:<a@b.example>\r\n")
        assert wrapped.recv(1024).startswith(b"503 5.5.1")  # EHLO first, as RFC 3207 says
        wrapped.close()
    finally:
        sock.close()


def test_the_api_serves_the_mta_sts_policy(make_api: ServiceFactory) -> None:
    api = make_api(
        mta_sts_mode="enforce", mta_sts_mx="mx1.example.com,*.mx.example.net", mta_sts_max_age=86400
    )
    answer = httpx.get(api.http_url + "/.well-known/mta-sts.txt")  # public: no token
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.text == (
        "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.mx.example.net\r\n"
        "max_age: 86400\r\n"
    )
    unset = make_api()
    missing = httpx.get(unset.http_url + "/.well-known/mta-sts.txt")
    assert missing.status_code == 404 and "error" in missing.json()


def test_starttls_out_of_sequence(shared_receiver: ServiceProcess, client_ip: str) -> None:
    client = RawClient(shared_receiver.host, shared_receiver.port, source=client_ip)
    assert client.reply().code == 220
    assert client.cmd("STARTTLS").code == 503  # EHLO first (RFC 3207 4)
    assert client.cmd("HELO client.test").code == 250
    assert client.cmd("STARTTLS").code == 503  # HELO offers no extensions
    assert "STARTTLS" in client.cmd("EHLO client.test").lines
    assert client.cmd("STARTTLS now").code == 501
    assert client.starttls().code == 220
    assert client.cmd("EHLO client.test").code == 250
    reply = client.cmd("STARTTLS")
    assert reply.code == 503 and reply.lines[0] == "5.5.1 TLS already active"


def test_tls_sessions_give_their_connection_slots_back(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(max_connections_per_ip="2")
    for _ in range(6):  # three times the per-client cap, one after another
        client = RawClient(receiver.host, receiver.port, source="127.0.0.7")
        client.hello()
        assert client.starttls().code == 220
        assert client.cmd("EHLO client.test").code == 250
        assert client.cmd("QUIT").code == 221
        client.close()
    stalled = RawClient(receiver.host, receiver.port, source="127.0.0.7")
    stalled.hello()
    assert stalled.cmd("STARTTLS").code == 220
    stalled.close()  # gone mid-handshake
    connections = "floodgate_connections_open"
    released = wait_for(lambda: sample(receiver.http_url, connections) == 0, timeout=5)
    assert released, "a TLS session kept its slot"
    assert handshakes(receiver, "ok", "TLSv1.3") == 6
