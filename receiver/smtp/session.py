"""One SMTP connection as a state machine on `asyncio.Protocol`.

Bytes arrive in `data_received`; a capped line splitter feeds one verb function per
command (`receiver.smtp.commands`); replies produced while handling one read go out in
one write, multi-line replies and pipelined groups (RFC 2920) included. DATA bytes go to
the bounded body reader. No task or stream exists per connection: one lazily re-armed
timer carries every deadline, and a task lives only while a message waits for the store.
Nothing a client sends reaches a log unescaped; no exception text reaches a client.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from typing import TYPE_CHECKING, cast

from mailstore.headers import scan_headers
from mailstore.ids import new_message_id
from mailstore.message import MessageDocument, TlsInfo, utcnow
from receiver import replies
from receiver.delivery.deliver import fingerprint
from receiver.door import proxy
from receiver.door.screen import PASS, screen_deadline
from receiver.intake.trace import DateCache, received_header, safe_name
from receiver.replies import Reply
from receiver.smtp.body import BareNewline, Body, BodyReader, Outcome
from receiver.smtp.commands import GROUP_ENDERS, VERBS
from receiver.smtp.context import Screener, SessionContext
from receiver.smtp.tls import GONE, NO_HELLO, Handshakes, describe

if TYPE_CHECKING:
    from receiver.intake.authcheck import Pending

log = logging.getLogger("floodgate.receiver")

# 512 octets per RFC 5321 4.5.3.1.4, plus room for MAIL parameters (SIZE, BODY, SMTPUTF8)
# and UTF-8 addresses (RFC 6531 3.3): a longer line is answered 500 and dropped unread.
MAX_LINE = 2048
MAX_BUFFERED = 64 * 1024  # pipelined input held while a message waits for the store
_CONTROLS = re.compile(rb"[\x00-\x1f\x7f]")
EARLY = 0.001  # timers may fire this much early (uvloop rounds to milliseconds)


class Phase(enum.Enum):
    PROXY = "proxy"  # waiting for a trusted proxy's header
    GREETING = "greeting"  # pregreet wait or reverse DNS: the banner is not out yet
    COMMAND = "command"
    DATA = "data"
    STORING = "storing"  # the message waits for the store; input is held
    HANDSHAKE = "handshake"  # after our 220 to STARTTLS, until TLS is up (or failed)
    CLOSED = "closed"


class Wire:
    """Replies that depend on the context, rendered once per receiver."""

    def __init__(self, ctx: SessionContext) -> None:
        size = ctx.admission.normal.max_message_size
        extensions = [f"SIZE {size}", "8BITMIME", "SMTPUTF8", "PIPELINING"]
        self.ehlo = Reply(250, "", "\n".join([ctx.hostname, *extensions, "ENHANCEDSTATUSCODES"]))
        offer = [ctx.hostname, *extensions, "STARTTLS", "ENHANCEDSTATUSCODES"]
        self.ehlo_starttls = Reply(250, "", "\n".join(offer))
        self.helo = Reply(250, "", ctx.hostname)
        self.banner = f"220 {ctx.hostname} ESMTP Floodgate\r\n".encode("ascii")
        self.teaser = f"220-{ctx.hostname} ESMTP\r\n".encode("ascii")
        self.dates = DateCache()


class Session(asyncio.Protocol):
    """One admitted SMTP connection."""

    __slots__ = (
        "_deadline",
        "_paused",
        "_timer",
        "_timer_at",
        "allowed",
        "auth",
        "body",
        "buffer",
        "client_ip",
        "client_key",
        "client_name",
        "close_reason",
        "commands",
        "counted_key",
        "ctx",
        "data_start",
        "deferrals",
        "errors",
        "esmtp",
        "generation",
        "helo",
        "idle_at",
        "junk_count",
        "more_input",
        "out",
        "overlong",
        "phase",
        "rcpt_count",
        "recipients",
        "reserved",
        "screened",
        "screening",
        "sender",
        "session_at",
        "slot_held",
        "tls",
        "transport",
        "utf8",
        "wire",
    )

    def __init__(self, ctx: SessionContext, wire: Wire, key: str | None, ip: str) -> None:
        self.ctx = ctx
        self.wire = wire
        self.client_key = key or ctx.admission.key(ip)
        self.client_ip = ip
        # Allowlisted: no rates, never auto-banned (its concurrency cap was applied).
        self.allowed = key is not None and ctx.admission.allowed(ip)
        self.client_name: str | None = None
        self.transport: asyncio.Transport | None = None
        self.phase = Phase.PROXY if key is None else Phase.GREETING
        self.buffer = bytearray()
        self.out: list[bytes] = []
        self.body: BodyReader | None = None
        self.helo: str | None = None
        self.esmtp = False
        self.sender: str | None = None
        self.recipients: list[str] = []
        self.auth: Pending | None = None  # the transaction's authentication checks
        self.rcpt_count = self.errors = self.junk_count = self.commands = self.reserved = 0
        self.deferrals = 0
        self.utf8 = self.more_input = self.overlong = False
        self.tls: TlsInfo | None = None  # (version, cipher) once upgraded
        self.close_reason = "client_closed"
        self.screened: Reply | None = None  # the screen's `enforce`: said to every RCPT
        self.screening = 0  # 1: the screen runs, 2: and the banner waits for it
        self.generation = ctx.admission.generation()  # the blocklist as admission saw it
        # Admission counted this connection already: under `key`, or (a trusted proxy's,
        # client not known yet) in the total only.
        self.slot_held = True
        self.counted_key = key
        now = ctx.clock.time()
        limits = ctx.admission.normal
        self.session_at = now + limits.session_timeout
        self.idle_at = now + ctx.admission.limits.idle_timeout
        self.data_start = 0.0
        self._deadline = now + (ctx.proxy_timeout if key is None else limits.greet_wait)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._paused = 0  # bit 1: input held while storing, bit 2: transport write buffer full

    # --- connection lifecycle -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.ctx.sessions.add(self)
        if self.phase is Phase.GREETING:
            self._before_banner()
        self._schedule()

    def connection_lost(self, error: Exception | None) -> None:
        self.phase = Phase.CLOSED
        if self.auth is not None:  # a transaction the client abandoned
            self.auth.cancel()
            self.auth = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.body is not None:
            self.body.drop()  # the client vanished mid-DATA: give the memory back
            self.body = None
        self.transport = None
        self.release()

    def release(self) -> None:
        """Give back the admission slot: exactly once, however the connection ended."""
        self.ctx.sessions.discard(self)
        if not self.slot_held:
            return
        self.slot_held = False
        self.ctx.admission.release(self.counted_key)
        self.ctx.events.on_session_closed(self.close_reason, self.client_key)

    def pause_writing(self) -> None:
        self._pause(2)  # a client that does not read its replies stops being read

    def resume_writing(self) -> None:
        self._resume(2)

    def _pause(self, reason: int) -> None:
        if not self._paused and self.transport is not None:
            self.transport.pause_reading()
        self._paused |= reason

    def _resume(self, reason: int) -> None:
        was = self._paused
        self._paused &= ~reason
        if was and not self._paused and self.transport is not None:
            self.transport.resume_reading()

    @property
    def in_transaction(self) -> bool:
        """From DATA until its reply: shutdown lets it finish."""
        return self.phase is Phase.DATA or self.phase is Phase.STORING

    # --- before the banner ----------------------------------------------------------

    def _before_banner(self) -> None:
        """The screen (when configured) and the pregreet teaser, or straight to the banner."""
        if self.ctx.screen is not None:
            self.screening = 1
            self.ctx.clock.create_task(self._screen(self.ctx.screen))
        if self.ctx.admission.normal.greet_wait > 0:
            # Postscreen's teaser: the first line of a multi-line greeting. A real client
            # waits for the final "220 " line; a bot that fires its commands now is caught.
            self._write(self.wire.teaser)
            self._deadline = self.ctx.clock.time() + self.ctx.admission.normal.greet_wait
        else:
            self._greet()

    def _greet(self) -> None:
        if self.screening:
            self.screening = 2
            self._deadline = self.session_at  # the screen has its own short deadline
            return
        self.phase = Phase.COMMAND
        self.idle_at = self.ctx.clock.time() + self.ctx.admission.limits.idle_timeout
        self.out.append(self.wire.banner)
        self._run()
        self._flush()
        self._schedule()

    async def _screen(self, screen: Screener) -> None:
        admission = self.ctx.admission
        deadline = screen_deadline(
            admission.normal.greet_wait, admission.limits.screen_timeout, admission.stressed
        )
        try:
            verdict = await screen.screen(self.client_ip, self.allowed, deadline)
        except Exception as error:  # fail open: a bug in a check never costs a client
            fields = {"event": "screen_exception", "error": type(error).__name__}
            log.error("screen_exception", extra={"fields": fields})
            verdict = PASS
        banner_due = self.screening == 2
        self.screening = 0
        if self.phase is not Phase.GREETING:
            return  # gone, or refused meanwhile (talked before the banner)
        if verdict.client_name is not None:
            self.client_name = verdict.client_name
        if verdict.action is not None:
            self.ctx.events.on_refused(self.client_key, verdict.reason)
            if verdict.action == "drop" and verdict.reply is not None:
                self.close_with(verdict.reply, "dnsbl")
                return
            self.screened = verdict.reply  # None when the action is `ignore`
        if banner_due:
            self._greet()

    def _proxy_header(self) -> None:
        length = proxy.header_length(self.buffer)
        if length is None:
            return
        valid, ip = (False, None)
        if length > 0:
            valid, ip = proxy.client_address(bytes(self.buffer[:length]))
        if not valid:
            self.ctx.events.on_refused(self.client_key, "bad_proxy_header")
            self._abort("bad_proxy_header")
            return
        del self.buffer[:length]
        if ip is not None:
            self.client_ip = ip
        # A v2 LOCAL command (the proxy's own health check) names no client: it is
        # judged as the proxy itself.
        key, refusal = self.ctx.admission.identify(self.client_ip)
        if refusal is not None:
            self.ctx.events.on_refused(key, refusal.reason)
            self.client_key = key
            self.close_with(refusal.reply, refusal.reason)
            return
        self.client_key = self.counted_key = key
        self.ctx.events.on_identified(key)  # behind a proxy, the client is known only now
        self.allowed = self.ctx.admission.allowed(self.client_ip)
        self.phase = Phase.GREETING
        early = bytes(self.buffer)
        self.buffer.clear()
        self._before_banner()
        if early:  # the client's first bytes came with the header
            self._dispatch(early)
        self._schedule()

    def _early_talker(self) -> None:
        self.ctx.admission.violation(self.client_key, "pregreet", self.allowed)
        self.ctx.events.on_refused(self.client_key, "pregreet")
        self.close_with(replies.PREGREET, "pregreet")

    # --- input ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # No timer work here: within a phase deadlines only move later (the one timer
        # fires early and re-arms); each phase change re-arms it (see _schedule's callers).
        self._dispatch(data)
        self._flush()

    def _dispatch(self, data: bytes) -> None:
        phase = self.phase
        if phase is Phase.COMMAND or phase is Phase.STORING:
            self._input(data)
        elif phase is Phase.DATA:
            self._body_input(data)
        elif phase is Phase.GREETING:
            if self.ctx.admission.normal.greet_wait > 0:
                self._early_talker()
            elif len(self.buffer) < MAX_LINE:  # waiting on reverse DNS: keep a little
                self.buffer += data
        elif phase is Phase.PROXY:
            self.buffer += data[: proxy.MAX_HEADER]
            self._proxy_header()

    def _input(self, data: bytes) -> None:
        self.buffer += data
        if self.phase is Phase.STORING:
            if len(self.buffer) > MAX_BUFFERED:
                self._pause(1)
            return
        self._run()

    def _run(self) -> None:
        """Handle every complete command line in the buffer, in order."""
        buffer = self.buffer
        position = 0
        while self.phase is Phase.COMMAND:
            end = buffer.find(b"\n", position)
            if end < 0:
                if len(buffer) - position > MAX_LINE:
                    self.overlong = True  # drop it unread; answer once its end arrives
                    position = len(buffer)
                break
            line = bytes(buffer[position : end + 1])
            position = end + 1
            self.more_input = position < len(buffer)
            if self.overlong or len(line) > MAX_LINE:
                self.overlong = False
                self._reply(replies.LINE_TOO_LONG)
            else:
                self._command(line)
        # DATA never starts with bytes left over: those would be content sent before
        # our 354, refused by the DATA verb as improper pipelining.
        del buffer[:position]

    def _command(self, line: bytes) -> None:
        self.commands += 1
        if self.generation != self.ctx.admission.generation() and self._banned():
            return
        if line.endswith(b"\r\n"):
            text = line[:-2]
        elif self.ctx.bare_newline is BareNewline.REJECT:
            self._reply(replies.BARE_LF_COMMAND)
            return
        else:
            text = line[:-1].rstrip(b"\r")
        if _CONTROLS.search(text):
            self._reply(replies.CONTROL_CHARACTERS)
            return
        verb, _, arg = text.partition(b" ")
        verb = verb.upper()
        if self.more_input and (not self.esmtp or verb in GROUP_ENDERS):
            if verb == b"STARTTLS" and self.ctx.tls is not None:
                self.ctx.events.on_tls("injection", "none")
            self.improper_pipelining()
            return
        handler = VERBS.get(verb)
        if handler is None:
            self.ctx.events.on_refused(self.client_key, "unknown_command")
            self._reply(replies.UNKNOWN_COMMAND)
            return
        reply = handler(self, arg)
        if reply is not None:
            self._reply(reply)

    def _banned(self) -> bool:
        """The blocklist changed since we last looked: end the session if it now covers
        this client (a ban made elsewhere reaches open sessions at their next command)."""
        self.generation = self.ctx.admission.generation()
        refusal = self.ctx.admission.banned(self.client_ip)
        if refusal is None:
            return False
        self.ctx.events.on_refused(self.client_key, refusal.reason)
        self.close_with(refusal.reply, "blocked")
        return True

    def _reply(self, reply: Reply) -> None:
        """Queue a reply and apply the dialogue budgets it affects."""
        self.out.append(reply.wire)
        limits = self.ctx.admission.limits
        if reply.code < 400:
            # Only success buys time: a client cannot stay by sending bad commands.
            self.idle_at = self.ctx.clock.time() + limits.idle_timeout
        elif reply.counts_as_error:
            self.errors += 1
            if self.errors > limits.hard_error_limit:  # "exceeded", as in Postfix
                self.ctx.admission.violation(self.client_key, "too_many_errors", self.allowed)
                self.close_with(replies.TOO_MANY_ERRORS, "too_many_errors")
                return
        elif reply.deferral:
            # A client that keeps asking after being told to wait is sent away (never
            # banned for it): an MTA retries later on a new connection, within its own
            # pace; a flood that reconnects at once meets the connection rate, and the
            # connections refused there are what earn a ban.
            self.deferrals += 1
            if self.deferrals > limits.hard_error_limit:
                self.close_with(replies.TOO_MANY_DEFERRALS, "too_many_deferrals")
                return
        if self.commands > limits.max_commands:
            self.close_with(replies.TOO_MANY_COMMANDS, "too_many_commands")

    # --- called by the verb functions ----------------------------------------------

    def begin_auth(self) -> None:
        """Start the authentication checks of the transaction MAIL FROM just opened."""
        checker = self.ctx.auth
        if checker is not None and self.sender is not None:
            self.auth = checker.begin(
                self.client_ip, safe_name(self.helo), self.sender, self.ctx.clock
            )

    def reset_transaction(self) -> None:
        if self.auth is not None:
            self.auth.cancel()
            self.auth = None
        self.sender = None
        self.recipients = []
        self.rcpt_count = 0
        self.utf8 = False

    def junk(self) -> bool:
        """Count a command that moves no mail (NOOP/RSET loops); False once over budget."""
        self.junk_count += 1
        if self.junk_count > self.ctx.admission.limits.junk_command_limit:
            self.close_with(replies.TOO_MANY_COMMANDS, "too_many_commands")
            return False
        return True

    def improper_pipelining(self) -> None:
        """A command or content sent without waiting for the reply it depends on."""
        self.ctx.admission.violation(self.client_key, "improper_pipelining", self.allowed)
        self.ctx.events.on_refused(self.client_key, "improper_pipelining")
        self.close_with(replies.IMPROPER_PIPELINING, "improper_pipelining")

    def start_data(self) -> None:
        limits = self.ctx.admission.normal
        self.body = BodyReader(limits.max_message_size, self.ctx.budget, self.ctx.bare_newline)
        self.phase = Phase.DATA
        self.data_start = self.ctx.clock.time()
        self.out.append(replies.START_DATA.wire)
        self._schedule()

    def start_tls(self) -> None:
        """Say 220 and hand the connection to the TLS handshake.

        Reading stops before anything else can be read in cleartext: bytes the client sent
        after STARTTLS in the same read were refused before the verb ran; anything later is
        read by the TLS layer as handshake data, where it fails the handshake. A handshake
        slot is taken only once the ClientHello is complete (`Handshakes.hello`).
        """
        tls = self.ctx.tls
        transport = self.transport
        assert tls is not None and transport is not None
        self.out.append(replies.READY_FOR_TLS.wire)
        self._flush()
        transport.pause_reading()
        self.phase = Phase.HANDSHAKE
        # The hello wait, then the loop's own handshake deadline, which fires first.
        self._deadline = self.ctx.clock.time() + tls.hello_timeout + tls.timeout + 1.0
        self._schedule()
        self.ctx.clock.create_task(self._handshake(tls, transport))

    async def _handshake(self, tls: Handshakes, raw: asyncio.Transport) -> None:
        waiting = await tls.hello(
            raw, self.client_key, self.allowed, lambda: self.phase is Phase.HANDSHAKE
        )
        if waiting is not None:
            self._no_handshake(waiting, raw)
            return
        events = self.ctx.events
        started = self.ctx.clock.time()
        try:
            secure = await tls.upgrade(raw, self)
        except Exception as error:
            tls.end(self.client_key)
            # The loop's handshake deadline aborts the connection (ConnectionAbortedError).
            late = self.ctx.clock.time() - started >= tls.timeout - EARLY
            outcome = "timeout" if late or isinstance(error, TimeoutError) else "failed"
            events.on_tls(outcome, "none")
            if self.phase is Phase.HANDSHAKE:  # not already closed by us (drain, deadline)
                # A failed handshake is a client error, as in Postfix.
                self.ctx.admission.violation(self.client_key, "tls_failed", self.allowed)
                events.on_refused(self.client_key, "tls_failed")
                self._abort("tls_" + outcome)
            raw.abort()
            self.connection_lost(None)  # the TLS layer never calls it for a failed start
            return
        tls.end(self.client_key)
        if self.phase is not Phase.HANDSHAKE:  # closed while the handshake ran
            secure.abort()
            self.connection_lost(None)  # idempotent: the slot goes back exactly once
            return
        self.transport = secure
        self.tls = describe(secure)
        events.on_tls("ok", self.tls[0])
        # RFC 3207 4.2: everything learnt before TLS is forgotten; the client says EHLO again.
        self.helo = None
        self.esmtp = False
        self.reset_transaction()
        self.phase = Phase.COMMAND
        self.idle_at = self.ctx.clock.time() + self.ctx.admission.limits.idle_timeout
        self._schedule()

    def _no_handshake(self, why: str, raw: asyncio.Transport) -> None:
        """No handshake ran: no ClientHello in time (a client error: a compliant client
        sends it at once), no slot in time (ours), or the session is gone already."""
        if why == GONE or self.phase is not Phase.HANDSHAKE:
            if self.phase is Phase.HANDSHAKE:
                self._abort("client_closed")
            return
        self.ctx.events.on_tls(why, "none")
        if why == NO_HELLO:
            self.ctx.admission.violation(self.client_key, "tls_failed", self.allowed)
            self.ctx.events.on_refused(self.client_key, "tls_failed")
        self._abort("tls_" + why)

    def close_with(self, reply: Reply, reason: str) -> None:
        """Send a final reply and close (deadlines, budgets, refusals, QUIT, shutdown)."""
        if self.phase is Phase.CLOSED or self.transport is None:
            return
        if self.phase is Phase.HANDSHAKE:
            self._abort(reason)  # no cleartext reply inside a TLS handshake
            return
        self.out.append(reply.wire)
        self._flush()
        self._abort(reason, graceful=True)

    def _abort(self, reason: str, *, graceful: bool = False) -> None:
        self.close_reason = reason
        self.phase = Phase.CLOSED
        if self.transport is not None:
            if graceful:
                self.transport.close()
            else:
                self.transport.abort()

    # --- DATA -----------------------------------------------------------------------

    def _body_input(self, data: bytes) -> None:
        body = self.body
        assert body is not None
        used = body.feed(data)
        if body.refused:  # a bare CR/LF: refused at once, before more is read
            self.body = None
            self.ctx.events.on_message("bare_newline")
            self.ctx.events.on_refused(self.client_key, "bare_newline")
            self.ctx.admission.violation(self.client_key, "bare_newline", self.allowed)
            self.close_with(replies.BARE_NEWLINE, "bare_newline")
            return
        if used < 0:
            return
        self.body = None
        self._end_of_data(body.finish())
        self._schedule()  # the DATA deadline may be far later than the idle one
        if self.phase is not Phase.CLOSED:
            self.buffer += data[used:]
            if self.phase is Phase.COMMAND:
                self._run()
            elif len(self.buffer) > MAX_BUFFERED:
                self._pause(1)

    def _end_of_data(self, body: Body) -> None:
        self.phase = Phase.COMMAND
        # A whole message was received: that is activity, whatever the reply.
        self.idle_at = self.ctx.clock.time() + self.ctx.admission.limits.idle_timeout
        events = self.ctx.events
        reply = _refusal(body)
        scan = scan_headers(body.content) if reply is None else None
        if scan is not None:
            if body.content[:1] in (b" ", b"\t"):
                reply = replies.FOLDED_START
                events.on_message("folded_start")
            elif scan.refused:
                reply = replies.HEADER_TOO_BIG if scan.too_big else replies.TOO_MANY_HEADER_FIELDS
                events.on_message("header_too_big")
        else:
            events.on_message(body.outcome.value)
        if reply is not None:
            self.ctx.budget.give(body.reserved)
            self._reply(reply)
            self.reset_transaction()
            return
        self.phase = Phase.STORING
        self.reserved = body.reserved
        assert scan is not None
        sender = self.sender or ""
        print_ = fingerprint(sender, self.recipients, body.content)
        message = self._message(new_message_id(), body.content, scan.values, print_)
        auth, self.auth = self.auth, None  # taken before the reset: it finishes in _deliver
        self.reset_transaction()
        self.ctx.clock.create_task(self._deliver(message, auth))

    def _message(
        self, message_id: str, raw: bytes, headers: dict[str, str], print_: str
    ) -> MessageDocument:
        now = utcnow()
        helo = safe_name(self.helo)
        trace = received_header(
            helo=helo,
            ip=self.client_ip,
            client_name=self.client_name,
            hostname=self.ctx.hostname,
            protocol=_protocol(self.esmtp, self.utf8, self.tls is not None),
            tls=self.tls,
            message_id=message_id,
            recipients=self.recipients,
            when=self.wire.dates.format(now),
        )
        return MessageDocument(
            id=message_id,
            raw=raw,
            mail_from=self.sender or "",
            rcpt=tuple(self.recipients),
            peer_ip=self.client_ip,
            helo=helo,
            received_at=now,
            received_header=trace,
            headers=headers,
            tls=self.tls,
            fp=print_,
        )

    async def _deliver(self, message: MessageDocument, auth: Pending | None = None) -> None:
        try:
            if auth is not None:  # within its own deadline; never raises
                message = await auth.finish(message)
            reply = await self.ctx.delivery.deliver(message, self.client_key)
        finally:
            self.ctx.budget.give(self.reserved)  # stored, spooled or refused: memory back
            self.reserved = 0
        self._stored(reply)

    def _stored(self, reply: Reply) -> None:
        if self.phase is not Phase.STORING:
            return  # the client left, or we are closing: nobody to tell
        self.phase = Phase.COMMAND
        self._reply(reply)
        self._run()  # commands pipelined after the final dot (RFC 2920 3.1)
        self._flush()
        self._resume(1)
        self._schedule()

    # --- time -----------------------------------------------------------------------

    def _next_deadline(self) -> float:
        phase = self.phase
        if phase is Phase.COMMAND:
            due = self.idle_at
        elif phase is Phase.DATA:
            due = self.data_start + self._data_allowance()
        elif phase is Phase.STORING:
            due = self.session_at  # the store has its own deadline
        else:
            due = self._deadline
        return min(due, self.session_at)

    def _data_allowance(self) -> float:
        """Seconds DATA may take so far: idle time plus what the bytes sent have earned.

        Postfix's smtpd_min_data_rate: each byte received buys 1/min_data_rate seconds,
        so a trickling client runs out of time while a fast one never notices.
        """
        limits = self.ctx.admission.limits
        received = self.body.received if self.body is not None else 0
        earned = received / limits.min_data_rate if limits.min_data_rate else 1e9
        return min(limits.idle_timeout + earned, self.ctx.admission.normal.data_timeout)

    def _schedule(self) -> None:
        """Arm the one timer for the nearest deadline; later deadlines re-arm it lazily."""
        if self.phase is Phase.CLOSED:
            return
        due = self._next_deadline()
        if self._timer is not None:
            if due >= self._timer_at:
                return  # fires early, finds nothing due, and re-arms
            self._timer.cancel()
        self._timer_at = due
        self._timer = self.ctx.clock.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.ctx.clock.time() + EARLY
        if now >= self.session_at:
            self.close_with(replies.SESSION_TIMEOUT, "session_timeout")
        elif now >= self._next_deadline():
            self._expired()
        self._flush()
        self._schedule()

    def _expired(self) -> None:
        phase = self.phase
        if phase is Phase.COMMAND:
            self.close_with(replies.IDLE_TIMEOUT, "idle_timeout")
        elif phase is Phase.DATA:
            if self._data_allowance() >= self.ctx.admission.normal.data_timeout:
                self.close_with(replies.DATA_TIMEOUT, "data_timeout")
            else:
                self.close_with(replies.DATA_TOO_SLOW, "data_too_slow")
        elif phase is Phase.GREETING:
            self._greet()  # the pregreet wait passed in silence
        elif phase is Phase.PROXY:
            self.ctx.events.on_refused(self.client_key, "bad_proxy_header")
            self._abort("bad_proxy_header")
        elif phase is Phase.HANDSHAKE:
            self._abort("tls_timeout")

    def rearm_for_stress(self) -> None:
        """Shorten this session's idle deadline to the stressed limit (stress just began)."""
        if self.phase is Phase.COMMAND:
            limit = self.ctx.clock.time() + self.ctx.admission.limits.idle_timeout
            self.idle_at = min(self.idle_at, limit)
            self._schedule()

    # --- output ---------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _flush(self) -> None:
        """Everything queued goes out in one write (RFC 2920: whole groups of replies)."""
        out = self.out
        if out:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()


def _protocol(esmtp: bool, utf8: bool, tls: bool) -> str:
    """The `with` keyword of the trace line (RFC 3848, RFC 6531)."""
    if not esmtp:
        return "SMTP"
    return ("UTF8SMTP" if utf8 else "ESMTP") + ("S" if tls else "")


def _refusal(body: Body) -> Reply | None:
    if body.outcome is Outcome.TOO_BIG:
        return replies.MESSAGE_TOO_BIG
    if body.outcome is Outcome.NO_MEMORY:
        return replies.NO_MEMORY
    return None
