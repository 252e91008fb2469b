"""The session engine fed bytes directly, with a fake clock: no sockets, no store."""

from __future__ import annotations

import asyncio

import pytest

from mailstore.errors import StoreError, StoreRejected
from receiver import replies
from receiver.smtp import BareNewline
from tests.support.engine import Client, Harness, settle
from tests.support.proxy_headers import v1, v2

HELLO = b"EHLO client.test\r\n"


def ready(harness: Harness, ip: str = "192.0.2.1") -> Client:
    client = harness.connect(ip)
    assert client.codes() == [220]
    assert client.send("EHLO client.test") == [250]
    return client


def envelope(client: Client, rcpt: str = "box@mx.test") -> None:
    assert client.send("MAIL FROM:<a@example.org>") == [250]
    assert client.send(f"RCPT TO:<{rcpt}>") == [250]
    assert client.send("DATA") == [354]


# --- the dialogue ------------------------------------------------------------------


def test_banner_and_ehlo_reply_each_go_out_whole_in_one_write() -> None:
    harness = Harness()
    client = harness.connect()
    client.feed(HELLO)
    assert client.transport.writes == [
        b"220 mx.test ESMTP Floodgate\r\n",
        b"250-mx.test\r\n250-SIZE 10485760\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
        b"250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n",
    ]


async def test_a_pipelined_group_is_answered_in_order_in_one_write() -> None:
    harness = Harness()
    client = ready(harness)
    writes = len(client.transport.writes)
    client.feed(
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<x@elsewhere.test>\r\n"
        b"RCPT TO:<b@mx.test>\r\nDATA\r\n"
    )
    assert client.transport.writes[writes:] == [
        b"250 2.1.0 Ok\r\n" + replies.RELAY_DENIED.wire + b"250 2.1.5 Ok\r\n"
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
    ]
    client.new()
    client.feed(b"Subject: hi\r\nFrom: A <a@example.org>\r\n\r\n..dot\r\n.\r\n")
    await settle()
    [stored] = harness.sink.messages
    assert stored.raw == b"Subject: hi\r\nFrom: A <a@example.org>\r\n\r\n.dot\r\n"
    assert stored.rcpt == ("b@mx.test",) and stored.mail_from == "a@example.org"
    assert stored.headers == {"subject": "hi", "from": "A <a@example.org>"}
    assert client.new() == [f"250 2.0.0 Ok: queued as {stored.id}".encode()]


async def test_commands_pipelined_after_the_final_dot_wait_for_the_store() -> None:
    harness = Harness()
    harness.sink.gate = asyncio.Event()
    client = ready(harness)
    envelope(client)
    client.feed(b"x\r\n.\r\nMAIL FROM:<b@example.org>\r\nRCPT TO:<c@mx.test>\r\nDATA\r\n")
    await settle()
    assert client.new() == []  # nothing is answered before the message is stored
    harness.sink.gate.set()
    await settle()
    assert client.codes() == [250, 250, 250, 354]  # RFC 2920: content may open a group
    client.feed(b"second\r\n.\r\nQUIT\r\n")
    await settle()
    assert client.codes() == [250, 221] and len(harness.sink.messages) == 2


def test_sequence_errors_are_503_and_help_lists_the_commands() -> None:
    client = Harness().connect()
    client.new()
    assert client.send("MAIL FROM:<a@example.org>") == [503]  # no EHLO yet
    client.send("EHLO c.test")
    assert client.send("RCPT TO:<a@mx.test>") == [503]
    assert client.send("DATA") == [503]
    assert client.send("MAIL FROM:<a@example.org>") == [250]
    assert client.send("MAIL FROM:<a@example.org>") == [503]  # nested
    assert client.send("DATA") == [503]  # no recipient
    client.feed(b"HELP\r\n")
    [help_line] = client.new()
    assert help_line.startswith(b"214 2.0.0 Commands:") and b"RCPT" in help_line
    assert client.send("EXPN list") == [502] and client.send("VRFY someone") == [252]
    assert client.send("AUTH PLAIN") == [502] and client.send("STARTTLS") == [454]
    assert client.send("BOGUS") == [500]


def test_quit_closes_and_is_counted_as_quit() -> None:
    harness = Harness()
    client = ready(harness)
    assert client.send("QUIT") == [221] and client.closed
    client.lose()
    assert harness.events.closed == {"quit": 1} and harness.open_connections == 0


# --- hygiene: synchronisation and bare line ends ------------------------------------


@pytest.mark.parametrize(
    "hello, pipelined",
    [
        (None, b"EHLO client.test\r\nMAIL FROM:<a@example.org>\r\n"),
        (None, b"HELO client.test\r\nMAIL FROM:<a@example.org>\r\n"),
        (None, b"NOOP\r\nEHLO client.test\r\n"),  # nothing offered PIPELINING yet
        ("EHLO client.test", b"NOOP\r\nNOOP\r\n"),
        ("EHLO client.test", b"VRFY a\r\nRSET\r\n"),
        ("EHLO client.test", b"QUIT\r\nNOOP\r\n"),
        # A HELO client was never offered PIPELINING: no group at all.
        ("HELO client.test", b"MAIL FROM:<a@example.org>\r\nRCPT TO:<box@mx.test>\r\n"),
        # DATA refused (no recipient): what follows it is still not a command.
        ("EHLO client.test", b"DATA\r\nSubject: smuggled\r\n\r\nhi\r\n.\r\n"),
        ("EHLO client.test", b"MAIL FROM:<a@example.org>\r\nDATA\r\nRSET\r\n"),
    ],
)
def test_input_after_a_command_that_ends_a_group_is_refused_and_closes(
    hello: str | None, pipelined: bytes
) -> None:
    harness = Harness()
    client = harness.connect()
    if hello is not None:
        assert client.codes()[-1] == 220 and client.send(hello) == [250]
    client.new()
    client.feed(pipelined)
    assert client.codes()[-1] == 554 and client.replies()[-1].startswith(b"554 5.5.0")
    assert client.closed and not harness.sink.messages
    assert harness.events.refused["improper_pipelining"] == 1


async def test_a_group_ended_by_data_and_the_dot_then_quit_are_pipelining_done_right() -> None:
    harness = Harness()
    client = ready(harness)
    client.feed(
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@mx.test>\r\nRCPT TO:<c@mx.test>\r\nDATA\r\n"
    )
    assert client.codes()[-4:] == [250, 250, 250, 354]
    client.feed(b"Subject: ok\r\n\r\nhi\r\n.\r\nQUIT\r\n")
    await settle()
    assert client.codes()[-2:] == [250, 221] and len(harness.sink.messages) == 1


@pytest.mark.parametrize("first", [b" ", b"\t"])
async def test_content_starting_with_white_space_cannot_continue_our_trace_line(
    first: bytes,
) -> None:
    harness = Harness()
    client = ready(harness)
    envelope(client)
    client.feed(first + b"by evil.example; forged hop\r\nSubject: x\r\n\r\nhi\r\n.\r\n")
    await settle()
    assert client.codes() == [554]
    assert client.replies()[-1] + b"\r\n" == replies.FOLDED_START.wire
    assert not harness.sink.messages and not client.closed
    assert client.send("RSET") == [250]


async def test_a_session_ends_at_its_next_command_once_its_client_is_blocked() -> None:
    harness = Harness()
    client = ready(harness)
    other = ready(harness, "192.0.2.2")
    harness.block("192.0.2.1")
    assert client.send("NOOP") == [554] and client.closed
    assert other.send("NOOP") == [250] and not other.closed
    assert harness.events.refused["blocked"] == 1


def test_content_sent_before_the_354_is_improper_pipelining() -> None:
    harness = Harness()
    client = ready(harness)
    client.feed(
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@mx.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n"
    )
    lines = client.new()
    assert lines[-1] == replies.IMPROPER_PIPELINING.wire.rstrip()
    assert client.closed and not harness.sink.messages
    assert harness.events.refused["improper_pipelining"] == 1
    client.lose()
    assert harness.events.closed == {"improper_pipelining": 1}


async def test_a_second_message_smuggled_behind_the_first_dot_is_refused() -> None:
    harness = Harness()
    client = ready(harness)
    envelope(client)
    client.feed(
        b"first\r\n.\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@mx.test>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nx\r\n.\r\n"
    )
    await settle()
    assert client.codes() == [250, 250, 250, 554]
    assert [m.raw for m in harness.sink.messages] == [b"first\r\n"] and client.closed


@pytest.mark.parametrize("verb", [b"QUIT", b"STARTTLS"])
def test_nothing_may_follow_quit_or_starttls_in_a_group(verb: bytes) -> None:
    client = ready(Harness())
    client.feed(verb + b"\r\nMAIL FROM:<a@example.org>\r\n")
    assert client.codes() == [554] and client.closed


def test_bare_lf_in_data_is_refused_at_once_with_521_and_close() -> None:
    harness = Harness()
    client = ready(harness)
    envelope(client)
    client.feed(b"Subject: x\r\n\r\nsmuggle\n.\nMAIL FROM:<e@vil.test>\n")
    assert client.codes() == [521] and client.closed
    client.lose()
    assert harness.budget.used == 0 and harness.events.messages["bare_newline"] == 1


async def test_normalize_mode_stores_crlf_only() -> None:
    harness = Harness(bare_newline=BareNewline.NORMALIZE)
    client = ready(harness)
    envelope(client)
    client.feed(b"Subject: x\r\n\r\na\nb\rc\x00\r\n.\r\n")
    await settle()
    assert client.codes() == [250]
    assert harness.sink.messages[0].raw == b"Subject: x\r\n\r\na\r\nb\r\nc\r\n"


def test_command_lines_ending_in_bare_lf_are_501_unless_normalizing() -> None:
    strict = ready(Harness())
    assert strict.codes() == []
    strict.feed(b"NOOP\n")
    assert strict.codes() == [501]
    lenient = ready(Harness(bare_newline=BareNewline.NORMALIZE))
    lenient.feed(b"NOOP\n")
    assert lenient.codes() == [250]


@pytest.mark.parametrize(
    "line", [b"NOOP \x00", b"HELO a\x01b", b"MAIL FROM:<a\rb@c.test>", b"RCPT TO:<a\x7f@mx.test>"]
)
def test_control_bytes_anywhere_in_a_command_are_501(line: bytes) -> None:
    client = ready(Harness())
    client.feed(line + b"\r\n")
    [reply] = client.new()
    assert reply.startswith(b"501 5.5.2 ")


def test_an_overlong_line_arriving_whole_is_500_too() -> None:
    client = ready(Harness())
    assert client.send(b"NOOP " + b"x" * 3000) == [500]
    client.feed(b"MAIL FROM:<" + b"a" * 2100 + b"@example.org>\r\nNOOP\r\n")
    assert client.codes() == [500, 250]


def test_an_overlong_line_is_500_and_dropped_unread_then_the_session_goes_on() -> None:
    client = ready(Harness())
    for _ in range(20):
        client.feed(b"A" * 10_000)  # 200 KB without a line end
    assert len(client.session.buffer) <= 2048 + 10_000
    client.feed(b"\r\n")
    assert client.codes() == [500]
    assert client.send("NOOP") == [250]


# --- the envelope grammar, through the engine ------------------------------------


@pytest.mark.parametrize(
    ("line", "code", "status"),
    [
        (b"MAIL FROM:<", 501, b"5.1.7"),
        (b"MAIL FROM:<a@[", 501, b"5.1.7"),
        (b"MAIL FROM:<\xff\xfe@example.org>", 553, b"5.1.7"),  # not UTF-8
        ("MAIL FROM:<jö@example.org>".encode(), 553, b"5.6.7"),  # no SMTPUTF8
        (b"MAIL FROM:<a@example.org> FOO=1", 555, b"5.5.4"),
        (b"MAIL FROM:<a@example.org> SIZE=99999999999", 552, b"5.3.4"),
        (b"MAIL FROM:<postmaster>", 553, b"5.1.7"),
    ],
)
def test_bad_senders_get_precise_replies(line: bytes, code: int, status: bytes) -> None:
    client = ready(Harness())
    client.feed(line + b"\r\n")
    [reply] = client.new()
    assert reply.startswith(b"%d %s " % (code, status)), reply


async def test_smtputf8_sender_and_recipient_are_accepted_and_traced() -> None:
    harness = Harness()
    client = ready(harness)
    client.feed("MAIL FROM:<jö@example.org> SMTPUTF8\r\nRCPT TO:<bü@mx.test>\r\nDATA\r\n".encode())
    assert client.codes() == [250, 250, 354]
    client.feed(b"x\r\n.\r\n")
    await settle()
    stored = harness.sink.messages[0]
    assert stored.mail_from == "jö@example.org" and stored.rcpt == ("bü@mx.test",)
    assert b"with UTF8SMTP" in stored.received_header
    assert b"for <" not in stored.received_header  # a non-ASCII mailbox is not named


@pytest.mark.parametrize(
    ("rcpt", "code"),
    [
        (b'<"a\\rX-Injected: yes"@mx.test>', 553),  # quoted: needs its quotes
        (b'<"a;by evil"@mx.test>', 553),
        (b"<a@mx.test.example>", 550),
        (b"<a@mx.test.>", 250),
        (b"<Postmaster>", 250),
        (b"<@relay.test:u@mx.test>", 250),
        (b"<>", 553),
        (b"<u@mx.test> NOTIFY=NEVER", 555),
    ],
)
def test_recipients(rcpt: bytes, code: int) -> None:
    client = ready(Harness())
    assert client.send("MAIL FROM:<a@example.org>") == [250]
    assert client.send(b"RCPT TO:" + rcpt) == [code]


async def test_postmaster_trailing_dots_and_source_routes_land_in_canonical_mailboxes() -> None:
    harness = Harness()
    client = ready(harness)
    client.feed(
        b"MAIL FROM:<a@example.org>\r\nRCPT TO:<postmaster>\r\nRCPT TO:<U@MX.test.>\r\n"
        b"RCPT TO:<@r.test:u@mx.test>\r\nDATA\r\n"
    )
    assert client.codes() == [250, 250, 250, 250, 354]
    client.feed(b"x\r\n.\r\n")
    await settle()
    assert harness.sink.messages[0].rcpt == ("postmaster@mx.test", "u@mx.test")


def test_duplicate_recipients_count_toward_the_cap() -> None:
    client = ready(Harness(max_recipients=3))
    assert client.send("MAIL FROM:<a@example.org>") == [250]
    for _ in range(3):
        assert client.send("RCPT TO:<same@mx.test>") == [250]
    assert client.send("RCPT TO:<same@mx.test>") == [452]


async def test_received_line_holds_only_sanitised_client_text() -> None:
    harness = Harness()
    client = harness.connect()
    client.feed(b"EHLO evil;by\tforged.test\r\n")  # a tab is a control: refused
    assert client.codes() == [220, 501]
    assert client.send(b"EHLO evil;by_forged.test(x)") == [250]
    envelope(client)
    client.feed(b"x\r\n.\r\n")
    await settle()
    trace = harness.sink.messages[0].received_header
    assert b";" not in trace.split(b"\r\n")[0]  # no ';' that could end the from clause
    assert trace.count(b"by ") == 1 and b"\r\n\tfor <box@mx.test>;" in trace
    assert all(line.startswith((b"Received:", b"\t")) for line in trace.split(b"\r\n")[:-1])


# --- limits and deadlines ------------------------------------------------------------


def test_idle_timeout_closes_and_bad_commands_never_rearm_it() -> None:
    harness = Harness(idle_timeout=10, hard_error_limit=100)
    client = ready(harness)
    for _ in range(8):
        harness.clock.advance(1)
        assert client.send("RCPT TO:<x@mx.test>") == [503]
    harness.clock.advance(2.5)
    assert client.codes() == [421] and client.closed
    assert client.output().endswith(replies.IDLE_TIMEOUT.wire)


async def test_the_idle_deadline_applies_right_after_a_long_allowance_in_data() -> None:
    harness = Harness(idle_timeout=10, min_data_rate=1, data_timeout=300)
    client = ready(harness)
    envelope(client)
    client.feed(b"y" * 1000 + b"\r\n.\r\n")  # 1,000 bytes bought 1,000 s of DATA time
    await settle()
    assert client.codes() == [250]
    harness.clock.advance(10.5)
    assert client.closed and client.output().endswith(replies.IDLE_TIMEOUT.wire)


def test_a_long_data_phase_refused_at_the_dot_still_leaves_the_idle_time() -> None:
    harness = Harness(idle_timeout=10, min_data_rate=1, max_message_size=2000)
    client = ready(harness)
    envelope(client)
    for _ in range(30):  # 30 s in DATA, well past the idle timeout, then too big
        client.feed(b"z" * 100)
        harness.clock.advance(1)
    client.feed(b"\r\n.\r\n")
    assert client.codes() == [552] and not client.closed
    harness.clock.advance(9)
    assert client.send("NOOP") == [250]


def test_good_commands_rearm_the_idle_timer_until_the_session_deadline() -> None:
    harness = Harness(idle_timeout=10, session_timeout=30)
    client = ready(harness)
    for _ in range(5):
        harness.clock.advance(5)
        assert client.send("NOOP") == [250]
    harness.clock.advance(5.5)
    assert client.closed and client.output().endswith(replies.SESSION_TIMEOUT.wire)


def test_a_trickle_in_data_is_closed_by_the_minimum_rate() -> None:
    harness = Harness(idle_timeout=10, min_data_rate=500)
    client = ready(harness)
    envelope(client)
    for _ in range(100):
        if client.closed:
            break
        client.feed(b"x")  # each byte buys 2 ms; a byte per second is far too slow
        harness.clock.advance(1)
    assert client.output().endswith(replies.DATA_TOO_SLOW.wire)
    client.lose()
    assert harness.budget.used == 0 and harness.events.closed == {"data_too_slow": 1}


def test_data_has_a_hard_deadline_however_fast_the_bytes() -> None:
    harness = Harness(idle_timeout=10, data_timeout=20, min_data_rate=1)
    client = ready(harness)
    envelope(client)
    for _ in range(25):
        client.feed(b"y" * 1000)
        harness.clock.advance(1)
    assert client.output().endswith(replies.DATA_TIMEOUT.wire)


def test_junk_commands_and_errors_and_commands_have_budgets() -> None:
    junk = ready(Harness(junk_command_limit=3))
    assert [junk.send("NOOP") for _ in range(4)] == [[250], [250], [250], [421]]
    errors = ready(Harness(hard_error_limit=2))
    errors.feed(b"RCPT TO:<a@mx.test>\r\n" * 3 + b"NOOP\r\n")
    assert errors.codes() == [503, 503, 503, 421] and errors.closed
    commands = ready(Harness(max_commands=10, junk_command_limit=100))
    codes = [code for _ in range(12) for code in commands.send("NOOP")]
    # EHLO was the first command: the tenth NOOP is the eleventh, answered, then closed.
    assert codes == [250] * 10 + [421] and commands.closed


def test_stress_shortens_the_idle_deadline_of_open_sessions() -> None:
    harness = Harness(idle_timeout=60, stress_idle_timeout=5)
    client = ready(harness)
    harness.worker.stress(True)  # the door decided it: every open session is re-armed
    harness.clock.advance(5.5)
    assert client.closed and client.output().endswith(replies.IDLE_TIMEOUT.wire)


def test_pregreet_talkers_are_refused_and_patient_clients_greeted() -> None:
    harness = Harness(greet_wait=2)
    early = harness.connect("192.0.2.5")
    early.feed(b"EHLO bot.test\r\n")
    assert early.replies() == [b"220-mx.test ESMTP", replies.PREGREET.wire.rstrip()]
    assert early.closed and harness.events.refused["pregreet"] == 1
    patient = harness.connect("192.0.2.6")
    harness.clock.advance(2.1)
    assert patient.new() == [b"220-mx.test ESMTP", b"220 mx.test ESMTP Floodgate"]
    assert patient.send("EHLO c.test") == [250]


# --- the store ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"), [(StoreError("down"), 451), (StoreRejected("bad"), 554), (ValueError(), 451)]
)
async def test_store_failures_never_give_250(error: Exception, code: int) -> None:
    harness = Harness()
    harness.sink.fail = error
    client = ready(harness)
    envelope(client)
    client.feed(b"x\r\n.\r\n")
    await settle()
    assert client.codes() == [code]
    assert client.send("NOOP") == [250] and harness.budget.used == 0


async def test_a_known_dead_store_answers_451_without_trying() -> None:
    harness = Harness()
    harness.store_down()
    client = ready(harness)
    envelope(client)
    client.feed(b"x\r\n.\r\n")
    await settle()
    assert client.codes() == [451] and not harness.sink.messages


async def test_input_held_while_storing_is_bounded_by_pausing_the_transport() -> None:
    harness = Harness()
    harness.sink.gate = asyncio.Event()
    client = ready(harness)
    envelope(client)
    client.feed(b"x\r\n.\r\n")
    for _ in range(10):
        client.feed(b"RSET\r\n" * 2000)  # 12 KB a read, nothing answered yet
    assert not client.transport.reading
    harness.sink.gate.set()
    await settle()
    assert client.transport.reading
    assert client.codes()[:2] == [250, 250]


async def test_header_section_past_the_cap_is_552_and_not_stored() -> None:
    harness = Harness()
    client = ready(harness)
    envelope(client)
    client.feed(b"Subject: x\r\n" + b" y\r\n" * 100_000 + b"\r\nbody\r\n.\r\n")
    await settle()
    assert client.codes() == [552] and not harness.sink.messages


# --- the admission slot: released exactly once, on every path ------------------------


async def test_every_way_of_leaving_releases_the_slot_exactly_once() -> None:
    harness = Harness(greet_wait=1, max_connections_per_ip=100)
    before_banner = harness.connect("192.0.2.9")
    before_banner.lose()  # closed during the pregreet wait
    after_quit = harness.connect("192.0.2.9")
    harness.clock.advance(1.5)
    after_quit.send("QUIT")
    after_quit.lose()
    in_data = harness.connect("192.0.2.9")
    harness.clock.advance(1.5)
    in_data.send("EHLO c.test")
    envelope(in_data)
    in_data.feed(b"half a message")
    in_data.lose()
    harness.sink.gate = asyncio.Event()
    storing = harness.connect("192.0.2.9")
    harness.clock.advance(1.5)
    storing.send("EHLO c.test")
    envelope(storing)
    storing.feed(b"x\r\n.\r\n")
    storing.lose()
    harness.sink.gate.set()
    await settle()
    for client in (before_banner, after_quit, in_data, storing):
        client.lose()  # a second loss report changes nothing
    assert harness.open_connections == 0 and harness.admission.counts.of("192.0.2.9") == 0
    # Three sessions ended; the first never was one (it left before its banner, at the door).
    assert sum(harness.events.closed.values()) == 3 and harness.budget.used == 0
    assert storing.output().count(b"queued") == 0  # nobody left to tell


def test_a_client_that_closes_before_the_banner_frees_its_slot_for_the_next() -> None:
    harness = Harness(max_connections_per_ip=1)
    first = harness.connect("192.0.2.10")
    first.lose()
    harness.connect("192.0.2.10")  # would be refused (421) if the slot leaked
    assert harness.open_connections == 1


# --- PROXY protocol ------------------------------------------------------------------


def test_proxy_header_names_the_client_and_its_slot() -> None:
    harness = Harness(max_connections_per_ip=1)
    client = harness.connect("127.0.0.1", proxied=True)
    client.feed(v2("198.51.100.7") + HELLO)
    assert client.codes() == [220, 250]
    assert client.session.client.ip == "198.51.100.7"
    second = harness.connect("127.0.0.1", proxied=True)
    second.feed(v1("198.51.100.7"))
    assert second.codes() == [421] and second.closed  # capped by the client in the header
    for each in (client, second):
        each.lose()
    assert harness.open_connections == 0 and harness.admission.counts.of("198.51.100.7") == 0


@pytest.mark.parametrize("wait", [b"", b"PROXY TCP4 1.2", b"HELO x\r\n"])
def test_a_proxy_that_stalls_or_sends_garbage_is_dropped_and_released(wait: bytes) -> None:
    harness = Harness(proxy_timeout=3)
    client = harness.connect("127.0.0.1", proxied=True)
    client.feed(wait)
    harness.clock.advance(3.5)
    assert client.transport.aborted and client.output() == b""
    client.lose()
    assert harness.open_connections == 0


# --- exactly once across sender retries ----------------------------------------------


async def test_a_retry_of_a_message_stored_after_all_is_answered_with_the_first_id() -> None:
    harness = Harness()
    client = ready(harness)
    harness.sink.fail = StoreError("not durable within 5s")  # the write may still land
    envelope(client)
    client.feed(b"Subject: once\r\n\r\nx\r\n.\r\n")
    await settle()
    assert client.codes() == [451]  # no spool here: the sender retries
    harness.sink.fail = None
    envelope(client)
    client.feed(b"Subject: once\r\n\r\nx\r\n.\r\n")  # the retry, byte for byte
    await settle()
    [first] = harness.sink.messages
    assert client.new() == [f"250 2.0.0 Ok: queued as {first.id}".encode()]
    envelope(client)
    client.feed(b"Subject: once\r\n\r\nx\r\n.\r\n")  # again: the same message, one copy
    await settle()
    assert client.new() == [f"250 2.0.0 Ok: queued as {first.id}".encode()]
    assert len(harness.sink.messages) == 1
    envelope(client, rcpt="other@mx.test")
    client.feed(b"Subject: once\r\n\r\nx\r\n.\r\n")  # other envelope, other message
    await settle()
    assert len({m.id for m in harness.sink.messages}) == 2


def test_a_client_that_keeps_asking_past_its_rate_is_sent_away_but_not_banned() -> None:
    harness = Harness(message_rate=1, hard_error_limit=3, autoban_threshold=1)
    client = ready(harness)
    assert client.send("MAIL FROM:<a@example.org>") == [250]
    assert client.send("RSET") == [250]
    codes = [code for _ in range(5) for code in client.send("MAIL FROM:<a@example.org>")]
    assert codes == [450, 450, 450, 450, 421] and client.closed
    assert harness.blocked == set() and len(harness.policy.violations) == 0


def test_a_proxied_connection_is_counted_for_the_client_its_header_names() -> None:
    harness = Harness()
    client = harness.connect("10.0.0.1", proxied=True)
    client.feed(v1("198.51.100.9"))
    assert client.codes() == [220]
    assert harness.admission.counts.of("198.51.100.9") == 1
    assert harness.admission.counts.of("10.0.0.1") == 0


def test_headers_awaited_from_one_proxy_are_capped_and_hold_no_slot_of_anyone() -> None:
    # Stalled PROXY headers from a trusted proxy used to hold global slots: 2,000 of them
    # refused every direct client. Now they are bounded per proxy and count toward nothing.
    harness = Harness(proxy_max_pending=3, max_connections=2)
    stalled = [harness.connect("127.0.0.1", proxied=True) for _ in range(4)]
    assert [c.closed for c in stalled] == [False, False, False, True]  # the 4th is dropped
    assert stalled[3].output() == b""  # a proxy's connection: no client to tell
    assert harness.open_connections == 0
    direct = harness.connect("192.0.2.40")
    assert direct.codes() == [220]
    stalled[0].feed(v1("198.51.100.40"))  # one header completes: that client is judged
    assert stalled[0].codes() == [220] and harness.open_connections == 2
    assert harness.events.refused == {"proxy_busy": 1}
