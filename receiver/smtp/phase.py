"""Where a session is in its dialogue."""

from __future__ import annotations

import enum


class Phase(enum.Enum):
    COMMAND = "command"
    DATA = "data"
    STORING = "storing"  # the message waits for its reply; input is held
    HANDSHAKE = "handshake"  # after our 220 to STARTTLS, until TLS is up (or failed)
    CLOSED = "closed"
