"""The SMTP session: aiosmtpd's protocol with the limits it lacks added.

Added here: whole-session and DATA deadlines with a minimum DATA rate, an idle timer that
only successful commands re-arm (so bad commands never buy time), error and command
budgets, pregreet detection, enhanced status codes on every reply, a streaming DATA reader
with bounded memory, and exactly-once release of the connection's admission slot.
No exception text ever reaches a client.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from aiosmtpd.smtp import SMTP

from receiver import replies
from receiver.data import read_body
from receiver.replies import Reply

if TYPE_CHECKING:
    from receiver.server import ReceiverState

log = logging.getLogger("floodgate.receiver")

# Reader buffer limit: DATA is read in chunks of up to this size and a command line longer
# than this is drained, not buffered, so one connection never holds more than ~2x this.
READ_LIMIT = 64 * 1024
IDENT = "Floodgate ESMTP"
JUNK_COMMANDS = frozenset({"NOOP", "RSET", "VRFY", "HELP", "EXPN"})
_PLAIN_PATH = re.compile(r"^<([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+)>(?: +(.*))?$")
_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")
# RFC 3463 defaults for aiosmtpd's own replies, which carry no enhanced code (RFC 2034 3).
_ENHANCED_DEFAULTS = {
    "221": "2.0.0",
    "250": "2.0.0",
    "252": "2.5.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}
# Replies that are the client's fault and count against the hard error limit.
_CLIENT_ERRORS = frozenset({"450", "500", "501", "502", "503", "504", "550", "553", "555"})


class FloodgateSMTP(SMTP):
    """One admitted SMTP connection."""

    line_length_limit = READ_LIMIT

    # Defaults every session shares. A class attribute costs no per-connection memory; an
    # instance attribute appears only when a session changes it. Ten thousand held sockets
    # make this matter (see bench: RSS per held socket).
    client_name: str | None = None  # reverse DNS, only when configured
    close_reason = "client_closed"
    in_data = False
    in_transaction = False  # from DATA until its reply: shutdown lets it finish
    errors = 0
    junk = 0
    _early_talker = False
    _in_hello = False
    _data_timer: asyncio.TimerHandle | None = None
    _data_start = 0.0
    _data_bytes = 0
    # aiosmtpd's settings for a plain-text MX without AUTH or STARTTLS.
    __ident__ = IDENT
    enable_SMTPUTF8 = True
    _decode_data = False
    tls_context = None
    require_starttls = False
    _tls_handshake_okay = True
    _tls_protocol = None
    _original_transport = None
    _auth_require_tls = True
    _authenticator = None
    _auth_callback = None
    _auth_required = False
    _auth_methods: dict[str, Any] = {}  # noqa: RUF012 - never filled: no AUTH, see smtp_AUTH
    _ehlo_hook_ver = "new"
    _enforce_call_limit = False

    def __init__(self, state: ReceiverState, key: str | None, ip: str) -> None:
        self.state = state
        self.client_key = key
        self.client_ip = ip
        self.replies = 0
        self._slot_held = True
        self._greeted = False
        self._session_timer: asyncio.TimerHandle | None = None
        # Per connection: aiosmtpd keeps this on the class and grows it on every EHLO.
        self.command_size_limits: collections.defaultdict[str, int] = collections.defaultdict(
            _default_command_size
        )
        self._init_smtp(state, proxied=key is None)

    def _init_smtp(self, state: ReceiverState, *, proxied: bool) -> None:
        """What aiosmtpd's SMTP.__init__ sets up, minus its per-connection introspection.

        SMTP.__init__ rediscovers the handler's hooks and the AUTH mechanisms with
        inspect.getmembers() and dir() for every connection: ~130 us, the largest cost of
        a short session. The answers never change, so they are computed once per class
        and handler. tests/receiver/test_protocol.py checks that every attribute
        SMTP.__init__ sets is set here or on the class.
        """
        loop = state.loop
        reader = asyncio.StreamReader(loop=loop, limit=READ_LIMIT)
        asyncio.StreamReaderProtocol.__init__(
            self, reader, client_connected_cb=self._cb_client_connected, loop=loop
        )
        self.loop = loop
        self.event_handler = state.handler
        self.data_size_limit = state.admission.normal.max_message_size
        self.hostname = state.hostname  # set explicitly: aiosmtpd would look up our FQDN
        self._timeout_duration = state.admission.limits.idle_timeout
        self._timeout_handle = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._proxy_timeout = state.proxy_timeout if proxied else None
        self._handle_hooks = state.hooks_table
        self._smtp_methods = _Commands(self)

    # --- connection lifecycle -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_idle()
        self._session_timer = self.loop.call_later(
            self.state.admission.normal.session_timeout, self._session_deadline
        )
        self.state.sessions.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        for timer in (self._session_timer, self._data_timer):
            if timer is not None:
                timer.cancel()
        try:
            super().connection_lost(error)
        finally:
            self._release()

    def _release(self) -> None:
        """Give back the admission slot: exactly once, however the connection ended."""
        if not self._slot_held:
            return
        self._slot_held = False
        self.state.sessions.discard(self)
        self.state.admission.release(self.client_key)
        self.state.on_session_closed(self.close_reason)

    def data_received(self, data: bytes) -> None:
        if not self._greeted:
            self._early_talker = True
        super().data_received(data)

    def close_with(self, reply: Reply, reason: str) -> None:
        """Send a final reply and close (deadlines, budgets, shutdown)."""
        transport = cast(asyncio.Transport | None, self.transport)
        if transport is None or transport.is_closing():
            return
        self.close_reason = reason
        transport.write(reply.line())
        transport.close()

    # --- timers ---------------------------------------------------------------------

    def _reset_timeout(self, duration: float | None = None) -> None:
        # aiosmtpd re-arms after any recognised command, even a failed one; we re-arm only
        # on success (see push), so a client cannot stay by sending bad commands.
        if duration is not None:  # the PROXY header wait
            self._arm_idle(duration)

    def _arm_idle(self, duration: float | None = None) -> None:
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        seconds = duration or self.state.admission.limits.idle_timeout
        self._timeout_handle = self.loop.call_later(seconds, self._timeout_cb)

    def _timeout_cb(self) -> None:
        self.close_with(replies.IDLE_TIMEOUT, "idle_timeout")

    def _session_deadline(self) -> None:
        self.close_with(replies.SESSION_TIMEOUT, "session_timeout")

    def rearm_for_stress(self) -> None:
        """Shorten this session's idle timer to the stressed limit (stress just began)."""
        if not self.in_data and self.transport is not None:
            self._arm_idle()

    # --- replies --------------------------------------------------------------------

    async def push(self, status: str | bytes) -> None:
        text = status if isinstance(status, str) else status.decode("utf-8", "replace")
        code = text[:3]
        final = len(text) < 4 or text[3] != "-"
        if (
            self._greeted
            and not self._in_hello
            and self.session is not None
            and self.session.extended_smtp
        ):
            text = _with_enhanced(text, code)
        self._greeted = True
        await super().push(text)
        if not final or self.transport is None:
            return
        self._count_reply(code)

    def _count_reply(self, code: str) -> None:
        limits = self.state.admission.limits
        self.replies += 1
        if code[0] in "23":
            self._arm_idle()
        elif code in _CLIENT_ERRORS:
            self.errors += 1
            if self.errors > limits.hard_error_limit:  # "exceeded", as in Postfix
                self.state.admission.hit(self._key(), "too_many_errors")
                self.close_with(replies.TOO_MANY_ERRORS, "too_many_errors")
                return
        if self.replies > limits.max_commands:
            self.close_with(replies.TOO_MANY_COMMANDS, "too_many_commands")

    def _key(self) -> str:
        return self.client_key or self.state.admission.key(self.client_ip)

    async def handle_exception(self, error: Exception) -> str:
        # Log the details for the operator; the client learns only that it should retry.
        log.error("event=session_exception ip=%s error=%r", self.client_ip, error)
        return str(replies.INTERNAL_ERROR)

    # --- commands -------------------------------------------------------------------

    async def _handle_client(self) -> None:
        if self.client_key is not None and not await self._before_banner():
            return
        await super()._handle_client()

    async def _before_banner(self) -> bool:
        """Pregreet check and optional reverse DNS; False if the client was refused."""
        wait = self.state.admission.normal.greet_wait
        if wait > 0:
            # Postscreen's teaser: the first line of a multi-line greeting. A real client
            # waits for the final "220 " line; a bot that fires its commands now is caught.
            transport = cast(asyncio.Transport, self.transport)
            transport.write(f"220-{self.hostname} ESMTP\r\n".encode("ascii", "replace"))
            await asyncio.sleep(wait)
            if self._early_talker:
                self.state.admission.hit(self._key(), "pregreet")
                self.state.on_refused(self._key(), "pregreet")
                self.close_with(replies.PREGREET, "pregreet")
                return False
        if self.state.reverse_dns is not None:
            self.client_name = await self.state.reverse_dns(self.client_ip)
        return True

    async def identify_client(self) -> bool:
        """Per-client admission once a PROXY header named the client; False if refused."""
        key, refusal = self.state.admission.identify(self.client_ip)
        if refusal is not None:
            self.state.on_refused(key, refusal.reason)
            self.close_with(refusal.reply, refusal.reason)
            return False
        self.client_key = key
        self._early_talker = False  # the header itself was not early talk
        return await self._before_banner()

    async def smtp_PROXY(self, arg: str | None) -> None:
        # Only sessions from trusted proxies read a PROXY header (before the banner); from
        # anyone else it is an attempt to spoof their address.
        self.state.on_refused(self._key(), "untrusted_proxy")
        self.close_with(replies.UNTRUSTED_PROXY, "untrusted_proxy")

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push("502 5.5.1 AUTH not supported: this server only receives mail")

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # Nearly every real address is a plain <local@domain>: match that directly and
        # leave the full RFC 5322 parser (about 50 us a call) for the rest.
        match = _PLAIN_PATH.match(arg)
        if match:
            return match.group(1), match.group(2) or ""
        address, rest = super()._getaddr(arg)
        return address, rest

    async def smtp_EHLO(self, hostname: str) -> None:
        # RFC 2034 3: no enhanced codes on the greeting or the EHLO/HELO response.
        self._in_hello = True
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_hello = False

    async def smtp_HELO(self, hostname: str) -> None:
        self._in_hello = True
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._in_hello = False

    async def smtp_NOOP(self, arg: str) -> None:
        if self._junk():
            await super().smtp_NOOP(arg)

    async def smtp_RSET(self, arg: str) -> None:
        if self._junk():
            await super().smtp_RSET(arg)

    async def smtp_VRFY(self, arg: str) -> None:
        if self._junk():
            await super().smtp_VRFY(arg)

    async def smtp_HELP(self, arg: str) -> None:
        if self._junk():
            await super().smtp_HELP(arg)

    async def smtp_EXPN(self, arg: str) -> None:
        if self._junk():
            await super().smtp_EXPN(arg)

    def _junk(self) -> bool:
        """Count a command that moves no mail (NOOP/RSET loops); False once over budget."""
        self.junk += 1
        if self.junk > self.state.admission.limits.junk_command_limit:
            self.close_with(replies.TOO_MANY_COMMANDS, "too_many_commands")
            return False
        return True

    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed():
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push(str(replies.BAD_SEQUENCE_NEED_RCPT))
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        self.in_transaction = True
        try:
            await self._transaction()
        finally:
            self.in_transaction = False

    async def _transaction(self) -> None:
        assert self.envelope is not None
        await self.push(replies.START_DATA)
        body = await self._receive_body()
        if body is None:
            return
        if body.too_big or body.no_memory:
            self.state.on_message("too_big" if body.too_big else "no_memory")
            self.envelope = self._create_envelope()
            await self.push(str(replies.MESSAGE_TOO_BIG if body.too_big else replies.NO_MEMORY))
            return
        try:
            self.envelope.original_content = body.content
            self.envelope.content = body.content
            status = await self._call_handler_hook("DATA")
        finally:
            self.envelope = self._create_envelope()
            self.state.data_budget.give(body.reserved)  # the store has answered
        await self.push(status)

    async def _receive_body(self) -> Any:
        limits = self.state.admission.normal
        self.in_data = True
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()  # the DATA deadline below replaces the idle timer
        self._data_start = self.loop.time()
        self._data_bytes = 0
        self._data_timer = self.loop.call_later(limits.idle_timeout, self._data_deadline)
        try:
            return await read_body(
                self._reader, limits.max_message_size, self._data_progress, self.state.data_budget
            )
        except asyncio.IncompleteReadError:
            return None  # the client went away mid-DATA; connection_lost cleans up
        finally:
            self.in_data = False
            if self._data_timer is not None:
                self._data_timer.cancel()
                self._data_timer = None
            self._arm_idle()

    def _data_progress(self, received: int) -> None:
        self._data_bytes = received

    def _data_allowance(self) -> float:
        """Seconds DATA may take so far: idle time plus what the bytes sent have earned.

        Postfix's smtpd_min_data_rate: each byte received buys 1/min_data_rate seconds,
        so a trickling client runs out of time while a fast one never notices.
        """
        limits = self.state.admission.limits
        earned = self._data_bytes / limits.min_data_rate if limits.min_data_rate else 1e9
        return min(limits.idle_timeout + earned, self.state.admission.normal.data_timeout)

    def _data_deadline(self) -> None:
        elapsed = self.loop.time() - self._data_start
        allowance = self._data_allowance()
        if elapsed < allowance - 0.01:
            self._data_timer = self.loop.call_later(allowance - elapsed, self._data_deadline)
            return
        if allowance >= self.state.admission.normal.data_timeout:
            self.close_with(replies.DATA_TIMEOUT, "data_timeout")
        else:
            self.close_with(replies.DATA_TOO_SLOW, "data_too_slow")


_COMMANDS = frozenset(name[5:] for name in dir(FloodgateSMTP) if name.startswith("smtp_"))


class _Commands(dict[str, Any]):
    """aiosmtpd's command table, binding a method only when a command arrives.

    aiosmtpd builds a dict of ~20 bound methods per connection (~2.5 KB); this costs one
    small object.
    """

    __slots__ = ("_session",)

    def __init__(self, session: FloodgateSMTP) -> None:
        self._session = session

    def get(self, command: str, default: Any = None) -> Any:
        if command in _COMMANDS:
            return getattr(self._session, "smtp_" + command)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(_COMMANDS)


def _default_command_size() -> int:
    return int(SMTP.command_size_limit)


def _with_enhanced(text: str, code: str) -> str:
    """Prefix an RFC 3463 code where aiosmtpd's reply lacks one."""
    if _HAS_ENHANCED.match(text):
        return text
    enhanced = _ENHANCED_DEFAULTS.get(code)
    if enhanced is None or len(text) < 4:
        return text
    return f"{text[:4]}{enhanced} {text[4:]}"
