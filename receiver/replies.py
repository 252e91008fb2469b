"""Every SMTP reply the receiver sends, in one table (RFC 5321 codes, RFC 3463 enhanced codes).

Code and tests use these constants; nobody re-types a reply string.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Replies that are the client's fault and count against the hard error limit. Not 450: our
# rate deferrals are policy, and a Postfix that reuses a connection for its queue would
# otherwise collect 21 of them and be cut off (Postfix's own anvil replies count there).
CLIENT_ERRORS = frozenset({500, 501, 502, 503, 504, 550, 553, 555})
# Our rate deferrals: a budget of their own per session, never a step toward a ban.
DEFERRALS = frozenset({450})


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: basic code, enhanced status code (RFC 3463; "" for none, as on the
    EHLO reply, RFC 2034 3) and text. A text with newlines is a multi-line reply."""

    code: int
    status: str
    text: str
    wire: bytes = field(init=False, repr=False, compare=False)
    # Our policy, not the client's mistake: never counted against its error budget.
    policy: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        # Rendered once: a reply costs one bytes object, written as it is.
        lines = self.text.split("\n")
        prefix = f"{self.status} " if self.status else ""
        rendered = [f"{self.code}-{prefix}{line}\r\n" for line in lines[:-1]]
        rendered.append(f"{self.code} {prefix}{lines[-1]}\r\n")
        object.__setattr__(self, "wire", "".join(rendered).encode("ascii"))

    def __str__(self) -> str:
        return (
            f"{self.code} {self.status} {self.text}" if self.status else f"{self.code} {self.text}"
        )

    def with_text(self, text: str) -> Reply:
        """The same codes with another human text (e.g. a queue id)."""
        return Reply(self.code, self.status, text, self.policy)

    def line(self) -> bytes:
        """The wire form, CRLF-terminated, for writing straight to a transport."""
        return self.wire

    @property
    def counts_as_error(self) -> bool:
        return self.code in CLIENT_ERRORS and not self.policy

    @property
    def deferral(self) -> bool:
        return self.code in DEFERRALS


# Refusals decided before the banner (the connection is closed right after).
BLOCKED = Reply(554, "5.7.1", "Access denied: your address is blocklisted")
TOO_MANY_CONNECTIONS_FROM_IP = Reply(421, "4.7.0", "Too many connections from your address")
TOO_MANY_CONNECTIONS = Reply(421, "4.3.2", "Server busy, try again later")
CONNECTION_RATE = Reply(421, "4.7.0", "Connection rate limit exceeded, slow down")
PREGREET = Reply(554, "5.5.1", "Protocol error: talking before the greeting")
UNTRUSTED_PROXY = Reply(554, "5.7.1", "PROXY header not accepted from your address")
SHUTTING_DOWN = Reply(421, "4.3.2", "Server shutting down, try again later")
# Listed by DNS lists past the threshold (receiver.door.screen), as postscreen words them; the
# text names the list and the client. `drop`: instead of the banner, then close (RFC 7504:
# 521, this host does not accept mail from you); `enforce`: to every RCPT, never counted as
# the client's error: a listed MTA sending to many recipients must not earn a ban by it.
SCREEN_BUSY = Reply(421, "4.7.0", "Too many new addresses from your network, try again later")
DNSBL_DROP = Reply(521, "5.7.1", "Service unavailable; client blocked using a DNS list")
DNSBL_ENFORCE = Reply(
    550, "5.7.1", "Service unavailable; client blocked using a DNS list", policy=True
)

# Deadlines (closed right after).
IDLE_TIMEOUT = Reply(421, "4.4.2", "Idle timeout, closing connection")
SESSION_TIMEOUT = Reply(421, "4.4.2", "Session time limit reached, closing connection")
DATA_TIMEOUT = Reply(421, "4.4.2", "DATA time limit reached, closing connection")
DATA_TOO_SLOW = Reply(421, "4.4.2", "DATA transfer too slow, closing connection")

# Dialogue limits.
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_COMMANDS = Reply(421, "4.7.0", "Too many commands, closing connection")
TOO_MANY_DEFERRALS = Reply(421, "4.7.0", "Rate limit exceeded, try again later")
MESSAGE_RATE = Reply(450, "4.7.1", "Message rate limit exceeded, try again later")
RECIPIENT_RATE = Reply(450, "4.7.1", "Recipient rate limit exceeded, try again later")
MAILBOX_RATE = Reply(450, "4.2.1", "Mailbox receiving too fast, try again later")
RELAY_DENIED = Reply(550, "5.7.1", "Relaying denied: we only accept mail for our domains")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
BAD_ADDRESS = Reply(553, "5.1.3", "Recipient address not accepted")
BAD_SENDER = Reply(553, "5.1.7", "Sender address not accepted")
SYNTAX_RECIPIENT = Reply(501, "5.1.3", "Syntax error in recipient address")
SYNTAX_SENDER = Reply(501, "5.1.7", "Syntax error in sender address")
NOT_ASCII_ADDRESS = Reply(553, "5.6.7", "Non-ASCII address needs SMTPUTF8")
BAD_PARAMETER = Reply(555, "5.5.4", "Unsupported parameter")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
HEADER_TOO_BIG = Reply(552, "5.3.4", "Message header section too large")
TOO_MANY_HEADER_FIELDS = Reply(552, "5.3.4", "Too many header fields")
SIZE_DECLARED_TOO_BIG = Reply(552, "5.3.4", "Declared message size exceeds fixed maximum")
BAD_SEQUENCE_NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
NEED_HELO = Reply(503, "5.5.1", "Send HELO/EHLO first")
NEED_EHLO = Reply(503, "5.5.1", "Send EHLO first")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")

# Syntax and protocol hygiene (see README: smuggling and protocol hygiene).
UNKNOWN_COMMAND = Reply(500, "5.5.2", "Command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
CONTROL_CHARACTERS = Reply(501, "5.5.2", "Syntax error: control characters in command")
NOT_ASCII_COMMAND = Reply(501, "5.5.2", "Syntax error: 8-bit characters in command")
BARE_LF_COMMAND = Reply(501, "5.5.2", "Syntax error: command line ends in bare <LF>")
SYNTAX_HELO = Reply(501, "5.5.4", "Syntax: HELO hostname")
SYNTAX_EHLO = Reply(501, "5.5.4", "Syntax: EHLO hostname")
SYNTAX_MAIL = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
SYNTAX_RCPT = Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
SYNTAX_DATA = Reply(501, "5.5.4", "Syntax: DATA")
SYNTAX_STARTTLS = Reply(501, "5.5.4", "Syntax: STARTTLS")
SYNTAX_VRFY = Reply(501, "5.5.4", "Syntax: VRFY <address>")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
AUTH_UNSUPPORTED = Reply(502, "5.5.1", "AUTH not supported: this server only receives mail")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")
# RFC 3207 4: "454 TLS not available due to temporary reason" (handshake budget spent).
TLS_BUSY = Reply(454, "4.7.0", "TLS not available due to temporary reason, try again later")
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")
ALREADY_TLS = Reply(503, "5.5.1", "TLS already active")
IMPROPER_PIPELINING = Reply(554, "5.5.0", "Protocol error: improper command pipelining")
BARE_NEWLINE = Reply(521, "5.5.2", "Protocol error: bare <CR>, <LF> or NUL in message")

# Storage outcome.
STORED = Reply(250, "2.0.0", "Ok: queued as {id}")
NOT_STORED = Reply(451, "4.3.0", "Temporary storage failure, try again later")
NO_MEMORY = Reply(452, "4.3.1", "Insufficient system storage, try again later")
STORE_BUSY = Reply(451, "4.3.0", "Storage busy, try again later")
UNSTORABLE = Reply(554, "5.6.0", "Message cannot be stored as sent")
# A first line starting with SP or HTAB would fold into the Received field we prepend
# (RFC 5322 2.2.3 unfolding), letting the sender write inside our trace line.
FOLDED_START = Reply(554, "5.6.0", "Message cannot start with white space (RFC 5322 2.2.3)")

OK = Reply(250, "2.1.0", "Ok")
RCPT_OK = Reply(250, "2.1.5", "Ok")
RSET_OK = Reply(250, "2.0.0", "Ok")
NOOP_OK = Reply(250, "2.0.0", "Ok")
BYE = Reply(221, "2.0.0", "Bye")
VRFY_CANNOT = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message")
HELP = Reply(214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
