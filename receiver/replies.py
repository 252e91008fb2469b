"""Every SMTP reply the receiver sends, in one table (RFC 5321 codes, RFC 3463 enhanced codes).

Code and tests use these constants; nobody re-types a reply string.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: basic code, enhanced status code and human text."""

    code: int
    status: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"

    def with_text(self, text: str) -> Reply:
        """The same codes with another human text (e.g. a queue id)."""
        return Reply(self.code, self.status, text)

    def line(self) -> bytes:
        """The wire form, CRLF-terminated, for writing straight to a transport."""
        return f"{self}\r\n".encode("ascii")


# Refusals decided before the banner (the connection is closed right after).
BLOCKED = Reply(554, "5.7.1", "Access denied: your address is blocklisted")
TOO_MANY_CONNECTIONS_FROM_IP = Reply(421, "4.7.0", "Too many connections from your address")
TOO_MANY_CONNECTIONS = Reply(421, "4.3.2", "Server busy, try again later")
CONNECTION_RATE = Reply(421, "4.7.0", "Connection rate limit exceeded, slow down")
PREGREET = Reply(554, "5.5.1", "Protocol error: talking before the greeting")
UNTRUSTED_PROXY = Reply(554, "5.7.1", "PROXY header not accepted from your address")
SHUTTING_DOWN = Reply(421, "4.3.2", "Server shutting down, try again later")

# Deadlines (closed right after).
IDLE_TIMEOUT = Reply(421, "4.4.2", "Idle timeout, closing connection")
SESSION_TIMEOUT = Reply(421, "4.4.2", "Session time limit reached, closing connection")
DATA_TIMEOUT = Reply(421, "4.4.2", "DATA time limit reached, closing connection")
DATA_TOO_SLOW = Reply(421, "4.4.2", "DATA transfer too slow, closing connection")

# Dialogue limits.
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_COMMANDS = Reply(421, "4.7.0", "Too many commands, closing connection")
MESSAGE_RATE = Reply(450, "4.7.1", "Message rate limit exceeded, try again later")
RECIPIENT_RATE = Reply(450, "4.7.1", "Recipient rate limit exceeded, try again later")
RELAY_DENIED = Reply(550, "5.7.1", "Relaying denied: we only accept mail for our domains")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
BAD_ADDRESS = Reply(553, "5.1.3", "Malformed address")
BAD_SENDER = Reply(553, "5.1.7", "Malformed sender address")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
HEADER_TOO_BIG = Reply(552, "5.3.4", "Message header section too large")
TOO_MANY_HEADER_FIELDS = Reply(552, "5.3.4", "Too many header fields")
SIZE_DECLARED_TOO_BIG = Reply(552, "5.3.4", "Declared message size exceeds fixed maximum")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
BAD_SEQUENCE_NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command")

# Storage outcome.
STORED = Reply(250, "2.0.0", "Ok: queued as {id}")
NOT_STORED = Reply(451, "4.3.0", "Temporary storage failure, try again later")
NO_MEMORY = Reply(452, "4.3.1", "Insufficient system storage, try again later")
STORE_BUSY = Reply(451, "4.3.0", "Storage busy, try again later")
UNSTORABLE = Reply(554, "5.6.0", "Message cannot be stored as sent")
INTERNAL_ERROR = Reply(451, "4.3.0", "Internal error, try again later")

OK = Reply(250, "2.1.0", "Ok")
RCPT_OK = Reply(250, "2.1.5", "Ok")
RSET_OK = Reply(250, "2.0.0", "Ok")
NOOP_OK = Reply(250, "2.0.0", "Ok")
BYE = Reply(221, "2.0.0", "Bye")
START_DATA = "354 End data with <CR><LF>.<CR><LF>"
