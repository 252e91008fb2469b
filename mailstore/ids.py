"""Message IDs: assigned at DATA time and used as the document `_id`.

A retried insert therefore can never store the same message twice. IDs sort by time
(48-bit milliseconds first, like a ULID) and carry 80 random bits. Within one process they
are strictly increasing (ULID's monotonic mode): a second ID in the same millisecond adds
one to the previous one's random part, so messages that arrive in the same millisecond
still list in arrival order (listings sort by time, then id).
"""

from __future__ import annotations

import base64
import os
import re
import time

# RFC 4648 base32, mapped to Crockford's alphabet (lowercase): both are in ascending
# order, so IDs still sort by time.
_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz"
)
ID_PATTERN = re.compile(r"^[0-9a-hjkmnp-tv-z]{26}$")


_TAIL = 1 << 80
_last = [0, 0]  # the previous ID's milliseconds and random part (this process)


def new_message_id(now: float | None = None) -> str:
    """A fresh 26-character, time-ordered, URL-safe message ID (strictly increasing within
    this process unless `now` is given)."""
    millis = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    tail = int.from_bytes(os.urandom(10), "big")
    if now is None:
        if millis <= _last[0]:  # the same millisecond (or the clock stepped back)
            millis, tail = _last[0], _last[1] + 1
            if tail >= _TAIL:  # 2^80 IDs in one millisecond: borrow the next one
                millis, tail = millis + 1, 0
        _last[0], _last[1] = millis, tail
    raw = millis.to_bytes(6, "big") + tail.to_bytes(10, "big")
    # 128 bits are 25.6 base32 digits: the 26th carries the last 3 bits and 2 zero bits.
    return base64.b32encode(raw)[:26].translate(_CROCKFORD).decode("ascii")


def id_floor(when: float) -> str:
    """The smallest id of the millisecond `when` (a POSIX time): ids at or after `when`
    compare >= it, so a time bound is an id bound (and sorts on the id index)."""
    millis = int(when * 1000) & ((1 << 48) - 1)
    raw = millis.to_bytes(6, "big") + bytes(10)
    return base64.b32encode(raw)[:26].translate(_CROCKFORD).decode("ascii")


def is_message_id(text: str) -> bool:
    """Whether `text` has the shape of a message ID (cheap check before a query)."""
    return bool(ID_PATTERN.match(text))
