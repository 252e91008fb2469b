"""The receiver's closed vocabularies: why a client was refused, why a session ended, what
became of a message, a recipient, a spooled record and a STARTTLS handshake.

One `StrEnum` each, shared by the door, the session engine, delivery, the metrics (their
label values, a bounded set) and the logs (the summary lines' event names). A value that
is not a member cannot be recorded: the metrics are labelled from the members up front,
and the test fakes refuse anything else (Haraka's CONT/DENY/DENYSOFT are constants too).
"""

from __future__ import annotations

from enum import StrEnum


class Refused(StrEnum):
    """Why a client was refused something: a connection, a command, a recipient."""

    # At the door, before any banner (receiver.door): also `outcome` of the connections.
    BLOCKED = "blocked"
    # Blocked although allowlisted: the explicit blocklist entry wins, counted apart so an
    # operator sees the overlap.
    BLOCKED_ALLOWLISTED = "blocked_allowlisted"
    GLOBAL_CAP = "global_cap"
    PER_IP_CAP = "per_ip_cap"
    CONNECTION_RATE = "connection_rate"
    SHUTTING_DOWN = "shutting_down"
    BAD_PROXY_HEADER = "bad_proxy_header"
    PROXY_BUSY = "proxy_busy"  # too many headers awaited from one trusted proxy
    WORKER_BUSY = "worker_busy"  # no worker took the hand-over
    PREGREET = "pregreet"  # talked before the banner
    DNSBL = "dnsbl"  # the screen's `drop` (before the banner) or `enforce` (at RCPT)
    DNSBL_IGNORED = "dnsbl_ignored"  # the screen's dry run (`ignore`): would have been refused
    SCREEN_BUSY = "screen_busy"  # its network spent its DNS budget: told to come back later
    # In the dialogue (receiver.smtp).
    UNTRUSTED_PROXY = "untrusted_proxy"  # a PROXY header from a client not trusted to send one
    IMPROPER_PIPELINING = "improper_pipelining"
    UNKNOWN_COMMAND = "unknown_command"
    BARE_NEWLINE = "bare_newline"
    TLS_FAILED = "tls_failed"
    MESSAGE_RATE = "message_rate"
    RECIPIENT_RATE = "recipient_rate"
    MAILBOX_RATE = "mailbox_rate"


# Refusals that are a connection's outcome (`floodgate_connections_total{outcome}`), beside
# "accepted": the door's, and those said instead of (or right after) the banner.
CONNECTION_REFUSALS = (
    Refused.BLOCKED,
    Refused.BLOCKED_ALLOWLISTED,
    Refused.GLOBAL_CAP,
    Refused.PER_IP_CAP,
    Refused.CONNECTION_RATE,
    Refused.SHUTTING_DOWN,
    Refused.BAD_PROXY_HEADER,
    Refused.PROXY_BUSY,
    Refused.WORKER_BUSY,
    Refused.PREGREET,
    Refused.DNSBL,
    Refused.SCREEN_BUSY,
    Refused.UNTRUSTED_PROXY,
)
ACCEPTED = "accepted"  # the one connection outcome that is not a refusal


class Violation(StrEnum):
    """A protocol violation: something a compliant client never does, counted toward an
    auto-ban (the reason a ban names, beside the refusals at connect)."""

    PREGREET = "pregreet"
    IMPROPER_PIPELINING = "improper_pipelining"
    BARE_NEWLINE = "bare_newline"
    TOO_MANY_ERRORS = "too_many_errors"
    TLS_FAILED = "tls_failed"


BanReason = Violation | Refused  # what a ban is for: violations, or refusals at connect


class Closed(StrEnum):
    """Why a session ended (`floodgate_sessions_closed_total{reason}`)."""

    QUIT = "quit"
    CLIENT_CLOSED = "client_closed"
    IDLE_TIMEOUT = "idle_timeout"
    SESSION_TIMEOUT = "session_timeout"
    DATA_TIMEOUT = "data_timeout"
    DATA_TOO_SLOW = "data_too_slow"
    TOO_MANY_ERRORS = "too_many_errors"
    TOO_MANY_COMMANDS = "too_many_commands"
    TOO_MANY_DEFERRALS = "too_many_deferrals"
    SHUTDOWN = "shutdown"
    IMPROPER_PIPELINING = "improper_pipelining"
    BARE_NEWLINE = "bare_newline"
    UNTRUSTED_PROXY = "untrusted_proxy"
    BLOCKED = "blocked"  # banned while connected (a ban made anywhere reaches it)
    TLS_FAILED = "tls_failed"
    TLS_TIMEOUT = "tls_timeout"
    TLS_NO_HELLO = "tls_no_hello"
    TLS_BUSY = "tls_busy"


# Closes that say nothing about the client: never folded into the summary lines.
ORDINARY_CLOSES = frozenset({Closed.QUIT, Closed.CLIENT_CLOSED, Closed.SHUTDOWN})


class MessageOutcome(StrEnum):
    """What became of a message at the end of DATA (`floodgate_messages_total{outcome}`)."""

    STORED = "stored"
    SPOOLED = "spooled"  # on this host's disk while the store is away: 250 all the same
    SPOOL_FULL = "spool_full"  # the store away and the spool full (or off): 451
    SPOOL_FAILED = "spool_failed"  # the store away and the spool's disk refusing: 451
    STORE_FAILED = "store_failed"
    STORE_BUSY = "store_busy"
    UNSTORABLE = "unstorable"
    TOO_BIG = "too_big"
    HEADER_TOO_BIG = "header_too_big"
    BARE_NEWLINE = "bare_newline"
    FOLDED_START = "folded_start"
    NO_MEMORY = "no_memory"
    MESSAGE_RATE = "message_rate"


class RecipientOutcome(StrEnum):
    """What became of one RCPT TO (`floodgate_recipients_total{outcome}`)."""

    ACCEPTED = "accepted"
    RELAY_DENIED = "relay_denied"
    TOO_MANY = "too_many"
    RECIPIENT_RATE = "recipient_rate"
    MAILBOX_RATE = "mailbox_rate"
    BAD_ADDRESS = "bad_address"
    DNSBL = "dnsbl"  # the screen's `enforce`


class ReplayOutcome(StrEnum):
    """What became of a spooled record replayed into the store."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    FAILED = "failed"


class TlsOutcome(StrEnum):
    """How a STARTTLS handshake ended. `no_hello`: no complete ClientHello within the hello
    deadline after our 220; `busy`: a ClientHello came but no handshake slot freed up in
    time (never the client's fault)."""

    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    NO_HELLO = "no_hello"
    BUSY = "busy"
    REFUSED_RATE = "refused_rate"
    INJECTION = "injection"


TLS_VERSIONS = ("TLSv1.2", "TLSv1.3", "none", "other")
