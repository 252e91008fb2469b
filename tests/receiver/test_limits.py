"""Every limit against a real receiver process over real sockets.

Client sockets bind distinct loopback sources (127.0.0.2, 127.0.0.3, ...) to be different
clients; Linux routes all of 127/8 to the loopback interface.
"""

from __future__ import annotations

import smtplib
import socket
import struct
import time

from tests.conftest import ServiceFactory
from tests.support.metrics import sample
from tests.support.smtp import RawClient, send_message, wait_for

FAST = {"idle_timeout": "30", "autoban_threshold": "0"}


def test_connection_past_the_per_ip_cap_gets_421_while_another_ip_is_served(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(max_connections_per_ip="3", **FAST)
    held = [RawClient(receiver.host, receiver.port, source="127.0.0.2") for _ in range(3)]
    for client in held:
        assert client.reply().code == 220
    extra = RawClient(receiver.host, receiver.port, source="127.0.0.2")
    refused = extra.reply()
    assert (refused.code, refused.text[:5]) == (421, "4.7.0")
    assert extra.closed_by_server()
    other = RawClient(receiver.host, receiver.port, source="127.0.0.3")
    assert other.hello().code == 250
    assert sample(receiver.http_url, "floodgate_connections_total", outcome="per_ip_cap") == 1


def test_connection_past_the_global_cap_gets_421_4_3_2(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(max_connections="4", **FAST)
    held = [RawClient(receiver.host, receiver.port, source=f"127.0.1.{i}") for i in range(1, 5)]
    for client in held:
        assert client.reply().code == 220
    refused = RawClient(receiver.host, receiver.port, source="127.0.1.9").reply()
    assert (refused.code, refused.text[:5]) == (421, "4.3.2")


def test_silent_client_is_closed_with_421_4_4_2_after_idle_timeout(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(idle_timeout="1")
    client = RawClient(receiver.host, receiver.port)
    assert client.hello().code == 250
    started = time.monotonic()
    reply = client.reply()  # nothing sent: the next thing we hear is the timeout
    assert (reply.code, reply.text[:5]) == (421, "4.4.2")
    assert 0.8 < time.monotonic() - started < 3
    assert client.closed_by_server()


def test_bad_commands_do_not_reset_the_idle_timer(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(idle_timeout="1.5", hard_error_limit="100")
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    started = time.monotonic()
    for _ in range(20):
        reply = client.cmd("RCPT TO:<x@mx.test>")  # 503: no MAIL yet
        if reply.code == 421:
            break
        assert reply.code == 503
        time.sleep(0.25)
    assert reply.code == 421 and reply.text.startswith("4.4.2")
    assert time.monotonic() - started < 3


def test_trickling_client_is_closed_by_the_session_deadline(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(idle_timeout="1", session_timeout="2")
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    started = time.monotonic()
    with_reply = None
    for _ in range(40):  # a well-formed NOOP every 0.3 s keeps the idle timer happy
        reply = client.cmd("NOOP")
        if reply.code != 250:
            with_reply = reply
            break
        time.sleep(0.3)
    assert with_reply is not None and with_reply.code == 421
    assert with_reply.text.startswith("4.4.2")
    assert 1.8 < time.monotonic() - started < 4


def test_byte_per_interval_trickle_in_data_is_closed_by_min_data_rate(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(idle_timeout="1", min_data_rate="500", session_timeout="60")
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    assert client.cmd("MAIL FROM:<slow@example.org>").code == 250
    assert client.cmd("RCPT TO:<s@mx.test>").code == 250
    assert client.cmd("DATA").code == 354
    started = time.monotonic()
    try:
        for _ in range(30):
            client.send(b"x")  # each byte buys 2 ms; a byte every 0.2 s is far too slow
            time.sleep(0.2)
    except OSError:
        pass
    reply = client.reply()
    assert (reply.code, reply.text[:5]) == (421, "4.4.2") and "slow" in reply.text
    assert time.monotonic() - started < 3
    assert sample(receiver.http_url, "floodgate_sessions_closed_total", reason="data_too_slow") == 1


def test_noop_loop_is_closed_by_the_junk_command_limit(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(junk_command_limit="5")
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    for _ in range(5):
        assert client.cmd("NOOP").code == 250
    reply = client.cmd("NOOP")
    assert (reply.code, reply.text[:5]) == (421, "4.7.0")
    assert client.closed_by_server()


def test_repeated_errors_are_closed_by_the_hard_error_limit(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(hard_error_limit="3")
    client = RawClient(receiver.host, receiver.port)
    client.hello()
    assert client.cmd("DATA").code == 503
    assert client.cmd("RCPT TO:<a@mx.test>").code == 503
    assert client.cmd("VRFY").code == 501
    client.send("DATA\r\n")  # the fourth error exceeds the limit of three
    assert client.reply().code == 503
    final = client.reply()
    assert (final.code, final.text[:5]) == (421, "4.7.0")


def test_client_talking_before_the_greeting_is_refused(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(greet_wait="0.5")
    early = RawClient(receiver.host, receiver.port)
    early.send("EHLO spammer.test\r\n")
    reply = early.reply()  # the teaser "220-" line folds into the final reply
    assert reply.code == 554 and reply.lines[-1].startswith("5.5.1")
    assert early.closed_by_server()
    patient = RawClient(receiver.host, receiver.port)
    assert patient.hello().code == 250  # waits for the whole greeting: served
    with smtplib.SMTP(receiver.host, receiver.port, local_hostname="c.test") as client:
        assert client.sendmail("a@example.org", ["p@mx.test"], b"x\r\n") == {}
    assert sample(receiver.http_url, "floodgate_connections_total", outcome="pregreet") == 1


def test_message_rate_per_client_gives_450_4_7_1(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(message_rate="2", **FAST)
    client = RawClient(receiver.host, receiver.port, source="127.0.0.5")
    client.hello()
    for _ in range(2):
        assert send_message(client, "a@example.org", ["r@mx.test"], b"x\r\n").code == 250
    reply = client.cmd("MAIL FROM:<a@example.org>")
    assert (reply.code, reply.text[:5]) == (450, "4.7.1")
    other = RawClient(receiver.host, receiver.port, source="127.0.0.6")
    other.hello()
    assert send_message(other, "b@example.org", ["r@mx.test"], b"x\r\n").code == 250


def test_recipient_rate_per_client_gives_450_4_7_1(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(recipient_rate="3", **FAST)
    client = RawClient(receiver.host, receiver.port, source="127.0.0.7")
    client.hello()
    assert client.cmd("MAIL FROM:<a@example.org>").code == 250
    for n in range(3):
        assert client.cmd(f"RCPT TO:<r{n}@mx.test>").code == 250
    reply = client.cmd("RCPT TO:<r9@mx.test>")
    assert (reply.code, reply.text[:5]) == (450, "4.7.1")


def test_connection_rate_per_client_gives_421(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(connection_rate="3", **FAST)
    for _ in range(3):
        client = RawClient(receiver.host, receiver.port, source="127.0.0.8")
        assert client.reply().code == 220
        client.cmd("QUIT")
    reply = RawClient(receiver.host, receiver.port, source="127.0.0.8").reply()
    assert (reply.code, reply.text[:5]) == (421, "4.7.0")
    assert RawClient(receiver.host, receiver.port, source="127.0.0.9").reply().code == 220


def test_stress_mode_shortens_idle_timeout_and_ends_when_load_falls(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(
        max_connections="8", stress_threshold="0.5", idle_timeout="30", stress_idle_timeout="1"
    )
    url = receiver.http_url
    held = [RawClient(receiver.host, receiver.port, source=f"127.0.2.{i}") for i in range(1, 5)]
    for client in held:
        assert client.reply().code == 220
    assert wait_for(lambda: sample(url, "floodgate_stress_mode") == 1)
    # Under stress the 30 s idle timeout became 1 s, for sessions already open too.
    reply = held[0].reply()
    assert (reply.code, reply.text[:5]) == (421, "4.4.2")
    assert wait_for(lambda: sample(url, "floodgate_connections_open") == 0, timeout=5)
    assert sample(url, "floodgate_stress_mode") == 0
    assert sample(url, "floodgate_stress_transitions_total", to="on") == 1
    assert sample(url, "floodgate_stress_transitions_total", to="off") == 1


def test_abnormal_disconnects_never_leak_connection_slots(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(max_connections_per_ip="50", connection_rate="0", **FAST)
    linger_reset = struct.pack("ii", 1, 0)  # SO_LINGER 0: close() sends RST
    for round_ in range(600):
        sock = socket.create_connection((receiver.host, receiver.port), timeout=5)
        mode = round_ % 4
        if mode == 0:  # reset before reading the banner
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_reset)
        elif mode == 1:  # half-close after a partial command
            sock.sendall(b"EHLO x\r\nMAIL FROM:<a@exa")
            sock.shutdown(socket.SHUT_WR)
        elif mode == 2:  # reset in the middle of DATA
            sock.sendall(b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<r@mx.test>\r\nDATA\r\n")
            sock.recv(4096)
            sock.sendall(b"Subject: cut\r\n\r\npartial")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_reset)
        else:  # garbage then a plain close
            sock.sendall(b"\xff\xfe\x00garbage\r\n" * 3)
        sock.close()
    assert wait_for(
        lambda: sample(receiver.http_url, "floodgate_connections_open") == 0, timeout=15
    ), sample(receiver.http_url, "floodgate_connections_open")
    # Sockets reset before the server accepted them may never reach admission; every
    # other one was admitted, counted, and released.
    assert sample(receiver.http_url, "floodgate_connections_total", outcome="accepted") >= 450
    assert RawClient(receiver.host, receiver.port).hello().code == 250


def test_client_that_keeps_connecting_while_refused_is_autobanned(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(
        max_connections_per_ip="1", autoban_refusal_threshold="3", idle_timeout="30"
    )
    holder = RawClient(receiver.host, receiver.port, source="127.0.0.10")
    assert holder.reply().code == 220
    for _ in range(3):
        assert RawClient(receiver.host, receiver.port, source="127.0.0.10").reply().code == 421
    holder.cmd("QUIT")
    banned = RawClient(receiver.host, receiver.port, source="127.0.0.10").reply()
    assert (banned.code, banned.text[:5]) == (554, "5.7.1")
    assert RawClient(receiver.host, receiver.port, source="127.0.0.11").reply().code == 220
    assert sample(receiver.http_url, "floodgate_autobans_total") == 1


def test_legitimate_sender_is_served_while_1000_idle_sockets_are_held(
    make_receiver: ServiceFactory,
) -> None:
    receiver = make_receiver(
        max_connections_per_ip="50", connection_rate="0", idle_timeout="60", autoban_threshold="0"
    )
    idle = []
    for n in range(1000):
        sock = socket.socket()
        sock.bind((f"127.0.3.{n % 20 + 1}", 0))
        sock.connect((receiver.host, receiver.port))
        idle.append(sock)
    try:
        assert wait_for(
            lambda: sample(receiver.http_url, "floodgate_connections_open") == 1000, timeout=20
        )
        client = RawClient(receiver.host, receiver.port, source="127.0.4.1", timeout=20)
        client.hello()
        codes = [
            send_message(client, "legit@example.org", ["legit@mx.test"], b"hi\r\n").code
            for _ in range(50)
        ]
        assert codes == [250] * 50
        held = sample(receiver.http_url, "floodgate_connections_open")
        assert held == 1001  # every idle socket is still held: no one was starved
    finally:
        for sock in idle:
            sock.close()


def test_ipv6_client_is_capped_per_64_over_real_ipv6(make_receiver: ServiceFactory) -> None:
    receiver = make_receiver(host="::1", max_connections_per_ip="2", **FAST)
    held = [RawClient("::1", receiver.port) for _ in range(2)]
    for client in held:
        assert client.reply().code == 220
    refused = RawClient("::1", receiver.port).reply()
    assert (refused.code, refused.text[:5]) == (421, "4.7.0")
