"""The few header fields a listing needs, found by one linear, capped scan of the raw bytes.

No MIME or RFC 2047 work happens here: this runs on the receiver's event loop for every
message, so its cost must be bounded whatever the sender writes (the read side decodes).
Each header field costs one regex search over its own bytes, never a Python loop over its
continuation lines, and the scan stops at a byte cap and a field cap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SELECTED_HEADERS = ("subject", "from", "to", "date", "message-id")
MAX_HEADER_VALUE = 998  # RFC 5322 2.1.1 line limit; longer values are cut for listings
MAX_HEADER_BYTES = 256 * 1024
MAX_HEADER_FIELDS = 1_000
MAX_NAME = 76  # a field name longer than this is not a field (RFC 5322 2.1.1 spirit)

# A field starts with a name of printable ASCII except ':' (RFC 5322 3.6.8), then ':'.
_FIELD = re.compile(rb"([!-9;-~]{1,%d})[ \t]*:" % MAX_NAME)
# A field ends at the first CRLF not followed by white space (RFC 5322 2.2.3 folding).
_FIELD_END = re.compile(rb"\r\n(?![ \t])")
_FOLD = re.compile(rb"\r\n(?=[ \t])")
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_WANTED = frozenset(name.encode() for name in SELECTED_HEADERS)


@dataclass(frozen=True, slots=True)
class HeaderScan:
    """What the scan found: selected values, or why the header section is refused."""

    values: dict[str, str]
    fields: int
    too_big: bool = False
    too_many: bool = False

    @property
    def refused(self) -> bool:
        return self.too_big or self.too_many


def scan_headers(
    raw: bytes, max_bytes: int = MAX_HEADER_BYTES, max_fields: int = MAX_HEADER_FIELDS
) -> HeaderScan:
    """Scan the header section of `raw` (up to the blank line or the first non-field line).

    Values are undecoded text: folding removed, control characters dropped, cut at
    `MAX_HEADER_VALUE` characters; only the first occurrence of each name is kept.
    """
    values: dict[str, str] = {}
    size = len(raw)
    limit = min(size, max_bytes)
    position = fields = 0
    while position < size and not raw.startswith(b"\r\n", position):
        field = _FIELD.match(raw, position, limit)
        if field is None:
            break  # not a field: the body starts here (tolerated, as by every MTA)
        fields += 1
        if fields > max_fields:
            return HeaderScan(values, fields, too_many=True)
        end_match = _FIELD_END.search(raw, field.end(), limit + 2)
        end = end_match.start() if end_match else size
        if end > limit:
            return HeaderScan(values, fields, too_big=True)
        name = field.group(1).lower()
        if name in _WANTED:
            key = name.decode().replace("-", "_")
            if key not in values:
                values[key] = _value(raw, field.end(), end)
        position = end + 2
    return HeaderScan(values, fields)


def _value(raw: bytes, start: int, end: int) -> str:
    # Fold markers are at most a few bytes per character kept: a slice of 4x the kept
    # length is enough, and bounds the work for a value folded over a million lines.
    piece = raw[start : min(end, start + 4 * MAX_HEADER_VALUE)]
    text = _FOLD.sub(b"", piece).decode("utf-8", "replace").strip(" \t")
    return _CONTROLS.sub("", text)[:MAX_HEADER_VALUE]
