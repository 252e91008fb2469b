"""A property-based fuzzer of the session engine: random commands, bytes, splits, clock
jumps, store failures and disconnects, from several clients at once.

Invariants, checked after every step: no exception escapes the engine; every line written
is a well-formed reply with an enhanced code (except the banner, 354 and EHLO/HELO); no
`250 ... queued as <id>` unless the store holds that id; memory per session is bounded;
and at the end every admission slot is released exactly once and the shared message
memory is back to zero.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstore.errors import StoreError, StoreRejected
from receiver.smtp.session import MAX_BUFFERED, MAX_LINE
from tests.support.engine import Client, Harness, settle

REPLY = re.compile(rb"^[2-5]\d\d[ -]")
ENHANCED = re.compile(rb"^([2-5])\d\d[ -]([245])\.\d{1,3}\.\d{1,3} ")
QUEUED = re.compile(rb"^250 2\.0\.0 Ok: queued as ([0-9a-z]{26})$")
BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")

COMMANDS = [
    b"EHLO client.test",
    b"HELO client.test",
    b"EHLO",
    b"MAIL FROM:<a@example.org>",
    b"MAIL FROM:<> SIZE=100 BODY=8BITMIME",
    b"MAIL FROM:<",
    "MAIL FROM:<jö@example.org> SMTPUTF8".encode(),
    b"RCPT TO:<box@mx.test>",
    b"RCPT TO:<Postmaster>",
    b"RCPT TO:<x@elsewhere.test>",
    b'RCPT TO:<"a b"@mx.test>',
    b"DATA",
    b"RSET",
    b"NOOP",
    b"VRFY x",
    b"HELP",
    b"QUIT",
    b"STARTTLS",
    b"AUTH PLAIN",
    b"BOGUS",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2",
]
BODIES = [
    b"Subject: s\r\n\r\nhello\r\n.\r\n",
    b"..dot\r\n.\r\n",
    b".\r\n",
    b"x" * 5000 + b"\r\n.\r\n",
    b"bare\nlf\r\n.\r\n",
    b"nul\x00\r\n.\r\n",
    b"Subject: x\r\n" + b" y\r\n" * 2000 + b"\r\n.\r\n",
]

TRANSACTION = b"EHLO c.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<box@mx.test>\r\nDATA\r\n"

step = st.one_of(
    st.tuples(st.just("line"), st.integers(0, 2), st.sampled_from(COMMANDS)),
    st.tuples(st.just("txn"), st.integers(0, 2), st.just(TRANSACTION)),
    st.tuples(st.just("body"), st.integers(0, 2), st.sampled_from(BODIES)),
    st.tuples(st.just("bytes"), st.integers(0, 2), st.binary(max_size=300)),
    st.tuples(st.just("clock"), st.integers(0, 2), st.sampled_from([0.5, 3.0, 11.0, 70.0, 700.0])),
    st.tuples(
        st.just("store"), st.integers(0, 2), st.sampled_from(["ok", "fail", "reject", "hold"])
    ),
    st.tuples(st.just("release"), st.integers(0, 2), st.none()),
    st.tuples(st.just("lose"), st.integers(0, 2), st.none()),
    st.tuples(st.just("connect"), st.integers(0, 2), st.none()),
)


@dataclass
class Run:
    harness: Harness
    clients: list[Client] = field(default_factory=list)
    connected: int = 0

    def client(self, n: int) -> Client | None:
        live = [c for c in self.clients if c.session.transport is not None]
        return live[n % len(live)] if live else None

    def connect(self) -> None:
        ip = f"192.0.2.{len(self.clients) % 3 + 1}"
        client = self.harness.connect(ip)
        if not client.handed:  # the door refused it (its cap): no session
            assert client.closed and client.codes() == [421]
            return
        self.clients.append(client)
        self.connected += 1


def feed_split(client: Client, data: bytes, cuts: int) -> None:
    """Feed `data` in up to four pieces (reads never align with lines)."""
    size = max(1, len(data) // (cuts + 1))
    for start in range(0, len(data), size):
        client.feed(data[start : start + size])


def check_output(run: Run) -> None:
    stored = {m.id for m in run.harness.sink.messages}
    for client in run.clients:
        for write in client.transport.writes:
            assert write.endswith(b"\r\n") and not BARE.search(write), write
            assert write.isascii(), write
        for line in client.output().split(b"\r\n")[:-1]:
            assert REPLY.match(line), line
            enhanced = ENHANCED.match(line)
            if enhanced is None:  # only the banner, 354 and EHLO/HELO lack one (RFC 2034 3)
                assert line[:3] in (b"220", b"354", b"250"), line
                continue
            assert enhanced.group(1) == enhanced.group(2), line
            queued = QUEUED.match(line)
            if queued:
                assert queued.group(1).decode() in stored, line
        assert len(client.session.buffer) <= MAX_BUFFERED + MAX_LINE + 6000


async def play(steps: list[tuple[str, int, object]], tight: bool) -> None:
    limits = {"max_recipients": 3, "hard_error_limit": 5, "junk_command_limit": 6}
    if tight:
        limits.update(max_message_size=4096, max_commands=30, idle_timeout=10.0)
    run = Run(Harness(max_connections_per_ip=2, autoban_threshold=0, **limits))
    run.connect()
    for kind, who, value in steps:
        client = run.client(who)
        if kind == "connect":
            run.connect()
        elif kind == "clock":
            assert isinstance(value, float)
            run.harness.clock.advance(value)
        elif kind == "store":
            sink = run.harness.sink
            sink.fail = {"fail": StoreError("down"), "reject": StoreRejected("bad")}.get(str(value))
            if value == "hold" and sink.gate is None:
                sink.gate = asyncio.Event()
        elif kind == "release" and run.harness.sink.gate is not None:
            run.harness.sink.gate.set()
            run.harness.sink.gate = None
        elif client is None:
            continue
        elif kind == "lose":
            client.lose()
        elif kind == "line":
            assert isinstance(value, bytes)
            feed_split(client, value + b"\r\n", who)
        elif kind == "txn":
            assert isinstance(value, bytes)
            client.feed(value)  # one pipelined group, DATA last (RFC 2920)
        elif isinstance(value, bytes):
            feed_split(client, value, who + 1)
        await settle()
        check_output(run)
    await finish(run)


async def finish(run: Run) -> None:
    if run.harness.sink.gate is not None:
        run.harness.sink.gate.set()
    await settle()
    for client in run.clients:
        client.lose()
        client.lose()  # a second report of the same loss changes nothing
    await settle()
    check_output(run)
    assert run.harness.open_connections == 0
    assert sum(run.harness.events.closed.values()) == run.connected
    assert run.harness.budget.used == 0
    assert run.harness.clock.pending == 0  # every timer cancelled with its session


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(step, max_size=40), st.booleans())
def test_the_engine_keeps_its_invariants_whatever_the_clients_do(
    steps: list[tuple[str, int, object]], tight: bool
) -> None:
    asyncio.run(play(steps, tight))
