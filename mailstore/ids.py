"""Message IDs: assigned at DATA time and used as the document `_id`.

A retried insert therefore can never store the same message twice. IDs sort by time
(48-bit milliseconds first, like a ULID) and carry 80 random bits.
"""

from __future__ import annotations

import os
import re
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lowercase
ID_PATTERN = re.compile(r"^[0-9a-hjkmnp-tv-z]{26}$")


def new_message_id(now: float | None = None) -> str:
    """A fresh 26-character, time-ordered, URL-safe message ID."""
    millis = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_message_id(text: str) -> bool:
    """Whether `text` has the shape of a message ID (cheap check before a query)."""
    return bool(ID_PATTERN.match(text))
