"""One SMTP connection as a state machine on `asyncio.Protocol`.

The door (receiver.door) judged and counted the connection before this starts: the client
is known, and the session's first act is the banner. Bytes arrive in `data_received`; a
capped line splitter feeds one verb function per command (`receiver.smtp.commands`);
replies produced while handling one read go out in one write, multi-line replies and
pipelined groups (RFC 2920) included. DATA bytes go to the bounded body reader, and the
final dot hands the envelope and bytes to the intake, which answers with the reply. No task
or stream exists per connection: one lazily re-armed timer carries every deadline, and a
task lives only while a message waits for its reply. Every refusal goes through `refuse`.
Nothing a client sends reaches a log unescaped; no exception text reaches a client.
"""

from __future__ import annotations

import asyncio
import re
from typing import cast

from mailstore.message import TlsInfo
from receiver import replies
from receiver.door.client import Client
from receiver.replies import Reply
from receiver.smtp import data as data_stage
from receiver.smtp import deadlines, starttls
from receiver.smtp.body import BareNewline, BodyReader
from receiver.smtp.commands import GROUP_ENDERS, VERBS
from receiver.smtp.context import SessionContext, Transaction
from receiver.smtp.data import MAX_BUFFERED
from receiver.smtp.phase import Phase
from receiver.smtp.wire import Wire
from receiver.vocabulary import Closed, Refused, TlsOutcome, Violation

# 512 octets per RFC 5321 4.5.3.1.4, plus room for MAIL parameters (SIZE, BODY, SMTPUTF8)
# and UTF-8 addresses (RFC 6531 3.3): a longer line is answered 500 and dropped unread.
MAX_LINE = 2048
_CONTROLS = re.compile(rb"[\x00-\x1f\x7f]")


class Session(asyncio.Protocol):
    """One admitted SMTP connection."""

    __slots__ = (
        "_paused",
        "_timer",
        "_timer_at",
        "body",
        "buffer",
        "client",
        "close_reason",
        "commands",
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
        "phase_deadline",
        "rcpt_count",
        "recipients",
        "reserved",
        "screened",
        "sender",
        "session_at",
        "slot_held",
        "tls",
        "transaction",
        "transport",
        "utf8",
        "wire",
    )

    def __init__(self, ctx: SessionContext, wire: Wire, client: Client) -> None:
        self.ctx = ctx
        self.wire = wire
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.phase = Phase.COMMAND
        self.buffer = bytearray()
        self.out: list[bytes] = []
        self.body: BodyReader | None = None
        self.helo: str | None = None
        self.esmtp = False
        self.sender: str | None = None
        self.recipients: list[str] = []
        self.transaction: Transaction | None = None  # from MAIL FROM to its reply
        self.rcpt_count = self.errors = self.junk_count = self.commands = self.reserved = 0
        self.deferrals = 0
        self.utf8 = self.more_input = self.overlong = False
        self.tls: TlsInfo | None = None  # (version, cipher) once upgraded
        self.close_reason = Closed.CLIENT_CLOSED
        # The screen's `enforce`: said to every RCPT (the dialogue goes on, counted).
        self.screened = (
            replies.DNSBL_ENFORCE.with_text(client.screened) if client.screened else None
        )
        self.generation = ctx.policy.generation()  # the blocklist as the door saw it
        self.slot_held = True  # the door counted this connection; `release` gives it back
        now = ctx.clock.time()
        self.session_at = now + ctx.policy.normal.session_timeout
        self.idle_at = now + ctx.policy.limits.idle_timeout
        self.data_start = 0.0
        self.phase_deadline = self.session_at
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._paused = 0  # bit 1: input held while storing, bit 2: transport write buffer full

    # --- connection lifecycle -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.ctx.sessions.add(self)
        self.out.append(self.wire.banner)
        self.flush()
        self.schedule()

    def connection_lost(self, error: Exception | None) -> None:
        self.phase = Phase.CLOSED
        if self.transaction is not None:  # a transaction the client abandoned
            self.transaction.cancel()
            self.transaction = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.body is not None:
            self.body.drop()  # the client vanished mid-DATA: give the memory back
            self.body = None
        self.transport = None
        self.release()

    def release(self) -> None:
        """Give back the door's slot: exactly once, however the connection ended."""
        self.ctx.sessions.discard(self)
        if not self.slot_held:
            return
        self.slot_held = False
        self.ctx.host.released(self.client.key)
        self.ctx.events.closed(self.client, self.close_reason)

    def pause_writing(self) -> None:
        self.pause(2)  # a client that does not read its replies stops being read

    def resume_writing(self) -> None:
        self._resume(2)

    def pause(self, reason: int) -> None:
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

    # --- input ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # No timer work here: within a phase deadlines only move later (the one timer
        # fires early and re-arms); each phase change re-arms it (see _schedule's callers).
        phase = self.phase
        if phase is Phase.COMMAND or phase is Phase.STORING:
            self._input(data)
        elif phase is Phase.DATA:
            self._body_input(data)
        self.flush()

    def _input(self, data: bytes) -> None:
        self.buffer += data
        if self.phase is Phase.STORING:
            if len(self.buffer) > MAX_BUFFERED:
                self.pause(1)
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
                self.reply(replies.LINE_TOO_LONG)
            else:
                self._command(line)
        # DATA never starts with bytes left over: those would be content sent before
        # our 354, refused by the DATA verb as improper pipelining.
        del buffer[:position]

    def _command(self, line: bytes) -> None:
        self.commands += 1
        if self.generation != self.ctx.policy.generation() and self._banned():
            return
        if line.endswith(b"\r\n"):
            text = line[:-2]
        elif self.ctx.bare_newline is BareNewline.REJECT:
            self.reply(replies.BARE_LF_COMMAND)
            return
        else:
            text = line[:-1].rstrip(b"\r")
        if _CONTROLS.search(text):
            self.reply(replies.CONTROL_CHARACTERS)
            return
        verb, _, arg = text.partition(b" ")
        verb = verb.upper()
        if self.more_input and (not self.esmtp or verb in GROUP_ENDERS):
            if verb == b"STARTTLS" and self.ctx.tls is not None:
                self.ctx.events.tls(TlsOutcome.INJECTION, "none")
            self.improper_pipelining()
            return
        handler = VERBS.get(verb)
        if handler is None:
            self.refuse(Refused.UNKNOWN_COMMAND, replies.UNKNOWN_COMMAND)
            return
        reply = handler(self, arg)
        if reply is not None:
            self.reply(reply)

    def _banned(self) -> bool:
        """The blocklist changed since we last looked: end the session if it now covers
        this client (a ban made elsewhere reaches open sessions at their next command)."""
        self.generation = self.ctx.policy.generation()
        if not self.ctx.policy.banned(self.client.ip):
            return False
        self.refuse(Refused.BLOCKED, replies.BLOCKED, close=Closed.BLOCKED)
        return True

    def reply(self, reply: Reply) -> None:
        """Queue a reply and apply the dialogue budgets it affects."""
        self.out.append(reply.wire)
        limits = self.ctx.policy.limits
        if reply.code < 400:
            # Only success buys time: a client cannot stay by sending bad commands.
            self.idle_at = self.ctx.clock.time() + limits.idle_timeout
        elif reply.counts_as_error:
            self.errors += 1
            if self.errors > limits.hard_error_limit:  # "exceeded", as in Postfix
                self.ctx.policy.violation(
                    self.client.key, Violation.TOO_MANY_ERRORS, self.client.allowed
                )
                self.close_with(replies.TOO_MANY_ERRORS, Closed.TOO_MANY_ERRORS)
                return
        elif reply.deferral:
            # A client that keeps asking after being told to wait is sent away (never
            # banned for it): an MTA retries later on a new connection, within its own
            # pace; a flood that reconnects at once meets the connection rate, and the
            # connections refused there are what earn a ban.
            self.deferrals += 1
            if self.deferrals > limits.hard_error_limit:
                self.close_with(replies.TOO_MANY_DEFERRALS, Closed.TOO_MANY_DEFERRALS)
                return
        if self.commands > limits.max_commands:
            self.close_with(replies.TOO_MANY_COMMANDS, Closed.TOO_MANY_COMMANDS)

    # --- called by the verb functions ----------------------------------------------

    def refuse(
        self,
        reason: Refused,
        reply: Reply | None,
        *,
        violation: Violation | None = None,
        close: Closed | None = None,
    ) -> None:
        """Every refusal of the dialogue, one way (Haraka's `deny`): counted and summarised
        under `reason`, a step toward an auto-ban when it is a `violation`, then `reply`
        said, closing the session when `close` says why (no reply: dropped at once)."""
        self.ctx.events.refused(self.client, reason)
        if violation is not None:
            self.ctx.policy.violation(self.client.key, violation, self.client.allowed)
        if close is not None:
            if reply is None:
                self.abort(close)
            else:
                self.close_with(reply, close)
        elif reply is not None:
            self.reply(reply)

    def open_transaction(self, sender: str, utf8: bool) -> None:
        """MAIL FROM was accepted: the intake's checks that need only this start now."""
        self.sender = sender
        self.utf8 = utf8
        self.transaction = self.ctx.intake.begin(self.client, self.helo or "", sender)

    def reset_transaction(self) -> None:
        if self.transaction is not None:
            self.transaction.cancel()
            self.transaction = None
        self.sender = None
        self.recipients = []
        self.rcpt_count = 0
        self.utf8 = False

    def junk(self) -> bool:
        """Count a command that moves no mail (NOOP/RSET loops); False once over budget."""
        self.junk_count += 1
        if self.junk_count > self.ctx.policy.limits.junk_command_limit:
            self.close_with(replies.TOO_MANY_COMMANDS, Closed.TOO_MANY_COMMANDS)
            return False
        return True

    def improper_pipelining(self) -> None:
        """A command or content sent without waiting for the reply it depends on."""
        self.refuse(
            Refused.IMPROPER_PIPELINING,
            replies.IMPROPER_PIPELINING,
            violation=Violation.IMPROPER_PIPELINING,
            close=Closed.IMPROPER_PIPELINING,
        )

    def start_data(self) -> None:
        limits = self.ctx.policy.normal
        self.body = BodyReader(limits.max_message_size, self.ctx.budget, self.ctx.bare_newline)
        self.phase = Phase.DATA
        self.data_start = self.ctx.clock.time()
        self.out.append(replies.START_DATA.wire)
        self.schedule()

    def start_tls(self) -> None:
        """Say 220 and hand the connection to the TLS handshake (receiver.smtp.starttls)."""
        starttls.start(self)

    def secured(self, transport: asyncio.Transport, tls: TlsInfo) -> None:
        """TLS is up: RFC 3207 4.2, everything learnt before it is forgotten; the client
        says EHLO again."""
        self.transport = transport
        self.tls = tls
        self.helo = None
        self.esmtp = False
        self.reset_transaction()
        self.phase = Phase.COMMAND
        self.idle_at = self.ctx.clock.time() + self.ctx.policy.limits.idle_timeout
        self.schedule()

    def close_with(self, reply: Reply, reason: Closed) -> None:
        """Send a final reply and close (deadlines, budgets, refusals, QUIT, shutdown).

        The door's slot goes back before the reply goes out: a client that reconnects as
        soon as it reads our `221` finds its slot free, with workers in other processes too.
        """
        if self.phase is Phase.CLOSED or self.transport is None:
            return
        if self.phase is Phase.HANDSHAKE:
            self.abort(reason)  # no cleartext reply inside a TLS handshake
            return
        self.close_reason = reason
        self.release()
        self.out.append(reply.wire)
        self.flush()
        self.abort(reason, graceful=True)

    def abort(self, reason: Closed, *, graceful: bool = False) -> None:
        self.close_reason = reason
        self.phase = Phase.CLOSED
        if self.transport is not None:
            if graceful:
                self.transport.close()
            else:
                self.transport.abort()

    # --- DATA (receiver.smtp.data) ------------------------------------------------------

    def _body_input(self, data: bytes) -> None:
        if data_stage.received(self, data):
            self._run()

    def stored(self, reply: Reply) -> None:
        """The intake answered the final dot: back to commands, and those pipelined
        after the dot are read now (RFC 2920 3.1)."""
        if self.phase is not Phase.STORING:
            return  # the client left, or we are closing: nobody to tell
        self.phase = Phase.COMMAND
        self.reply(reply)
        self._run()
        self.flush()
        self._resume(1)
        self.schedule()

    # --- time (receiver.smtp.deadlines) ------------------------------------------------

    def deadline_in(self, seconds: float) -> None:
        """A deadline of the current phase (the TLS handshake's)."""
        self.phase_deadline = self.ctx.clock.time() + seconds
        self.schedule()

    def schedule(self) -> None:
        """Arm the one timer for the nearest deadline; later deadlines re-arm it lazily."""
        if self.phase is Phase.CLOSED:
            return
        due = deadlines.next_deadline(self)
        if self._timer is not None:
            if due >= self._timer_at:
                return  # fires early, finds nothing due, and re-arms
            self._timer.cancel()
        self._timer_at = due
        self._timer = self.ctx.clock.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        deadlines.fire(self)
        self.flush()
        self.schedule()

    def rearm_for_stress(self) -> None:
        """Shorten this session's idle deadline to the stressed limit (stress just began)."""
        if self.phase is Phase.COMMAND:
            limit = self.ctx.clock.time() + self.ctx.policy.limits.idle_timeout
            self.idle_at = min(self.idle_at, limit)
            self.schedule()

    # --- output ---------------------------------------------------------------------

    def flush(self) -> None:
        """Everything queued goes out in one write (RFC 2920: whole groups of replies)."""
        out = self.out
        if out:
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
