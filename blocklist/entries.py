"""What a blocklist entry is: a normalized network, why it is there, who put it there, until when.

Addresses are parsed strictly. A bare address means the single host (`/32` or `/128`). A
CIDR whose host bits are set (`203.0.113.7/24`) is *rejected*, not masked: the operator
probably meant something else, and silently widening a ban to 256 addresses is worse than
asking. IPv4-mapped IPv6 (`::ffff:203.0.113.7`) is stored as the IPv4 network it names, so a
client arriving over either family meets the same entry.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Source = Literal["manual", "auto"]
SOURCES: tuple[Source, ...] = ("manual", "auto")

MAX_REASON_LENGTH = 500
MIN_TTL_SECONDS = 1
MAX_TTL_SECONDS = 366 * 86_400  # a year and a day: longer bans should be permanent

_V4_MAPPED = bytes(10) + b"\xff\xff"


class InvalidEntry(ValueError):
    """An entry that cannot be stored; the message says exactly why."""


@dataclass(frozen=True, slots=True, order=True)
class Net:
    """A network as the index stores it: family (4 or 6), prefix length, network integer."""

    version: int
    prefixlen: int
    value: int

    @property
    def bits(self) -> int:
        return 32 if self.version == 4 else 128

    @property
    def key(self) -> int:
        """The network integer shifted right past its host bits (the index's table key)."""
        return self.value >> (self.bits - self.prefixlen)

    def __str__(self) -> str:
        if self.version == 4:
            address = socket.inet_ntop(socket.AF_INET, self.value.to_bytes(4, "big"))
        else:
            address = str(ipaddress.IPv6Address(self.value))
        return f"{address}/{self.prefixlen}"

    def contains(self, version: int, address: int) -> bool:
        return version == self.version and address >> (self.bits - self.prefixlen) == self.key


def parse_address(text: str) -> tuple[int, int]:
    """`(version, integer)` of an IP address; IPv4-mapped IPv6 becomes IPv4.

    Raises `InvalidEntry` for anything that is not a literal address (no names, no zones
    beyond a trailing `%scope`, which is dropped).
    """
    text = text.strip()
    try:
        if ":" not in text:
            return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
        packed = socket.inet_pton(socket.AF_INET6, text.split("%", 1)[0])
    except (OSError, ValueError):
        raise InvalidEntry(f"{text!r} is not an IPv4 or IPv6 address") from None
    if packed[:12] == _V4_MAPPED:
        return 4, int.from_bytes(packed[12:], "big")
    return 6, int.from_bytes(packed, "big")


def parse_network(text: str) -> Net:
    """Parse `203.0.113.7`, `203.0.113.0/24` or `2001:db8::/48` into a `Net`.

    Raises `InvalidEntry` with a precise message: not an address, prefix out of range, or
    host bits set (with the network the operator probably meant).
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidEntry("an address or CIDR is required")
    raw = text.strip()
    address_text, slash, prefix_text = raw.partition("/")
    version, value = parse_address(address_text)
    mapped = version == 4 and ":" in address_text
    bits = 32 if version == 4 else 128
    if not slash:
        return Net(version, bits, value)
    if not prefix_text.isdigit() or len(prefix_text) > 3:
        raise InvalidEntry(f"{raw!r}: the prefix length must be a number")
    prefixlen = int(prefix_text)
    if mapped:
        # ::ffff:0:0/96 covers all of IPv4; a mapped prefix below 96 is not an IPv4 network.
        if not 96 <= prefixlen <= 128:
            raise InvalidEntry(f"{raw!r}: an IPv4-mapped prefix must be between /96 and /128")
        prefixlen -= 96
    if not 0 <= prefixlen <= bits:
        raise InvalidEntry(f"{raw!r}: the prefix length must be between 0 and {bits}")
    host_bits = bits - prefixlen
    if value & ((1 << host_bits) - 1):
        meant = Net(version, prefixlen, value >> host_bits << host_bits)
        raise InvalidEntry(f"{raw!r} has host bits set; the network is {meant}")
    return Net(version, prefixlen, value)


def normalize(text: str) -> str:
    """The canonical CIDR string of `text` (the entry's `_id`)."""
    return str(parse_network(text))


def covering_networks(ip: str) -> list[str]:
    """Every CIDR that contains `ip`, most specific first (for a store-side lookup)."""
    version, value = parse_address(ip)
    bits = 32 if version == 4 else 128
    return [
        str(Net(version, length, value >> (bits - length) << (bits - length)))
        for length in range(bits, -1, -1)
    ]


def check_reason(reason: str) -> str:
    reason = reason.strip()
    if len(reason) > MAX_REASON_LENGTH:
        raise InvalidEntry(f"the reason is {len(reason)} characters; at most {MAX_REASON_LENGTH}")
    if any(ord(c) < 32 and c not in "\t" for c in reason):
        raise InvalidEntry("the reason must not contain control characters")
    return reason


def check_ttl(ttl_seconds: float | None) -> float | None:
    if ttl_seconds is None:
        return None
    if not MIN_TTL_SECONDS <= ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidEntry(
            f"ttl_seconds must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS} "
            "(omit it for a permanent entry)"
        )
    return float(ttl_seconds)


@dataclass(frozen=True, slots=True)
class Entry:
    """One blocklist entry as stored in the `blocklist` collection (`_id` = `cidr`)."""

    cidr: str
    reason: str
    source: Source
    created_at: datetime
    created_by: str
    updated_at: datetime
    expires_at: datetime | None = None

    @classmethod
    def new(
        cls,
        cidr: str,
        *,
        reason: str = "",
        source: Source = "manual",
        ttl_seconds: float | None = None,
        actor: str = "unknown",
        now: datetime | None = None,
    ) -> Entry:
        """Validate everything an operator or the receiver supplies; raise `InvalidEntry`."""
        if source not in SOURCES:
            raise InvalidEntry(f"source must be one of {', '.join(SOURCES)}")
        now = now or datetime.now(UTC)
        ttl = check_ttl(ttl_seconds)
        return cls(
            cidr=normalize(cidr),
            reason=check_reason(reason),
            source=source,
            created_at=now,
            created_by=actor,
            updated_at=now,
            expires_at=None if ttl is None else now + timedelta(seconds=ttl),
        )

    @property
    def net(self) -> Net:
        return parse_network(self.cidr)

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC))

    def to_document(self) -> dict[str, Any]:
        return {
            "_id": self.cidr,
            "reason": self.reason,
            "source": self.source,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "updated_at": self.updated_at,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Entry:
        source = doc.get("source", "manual")
        created = aware_datetime(doc.get("created_at")) or datetime.fromtimestamp(0, UTC)
        return cls(
            cidr=str(doc["_id"]),
            reason=str(doc.get("reason", "")),
            source=source if source in SOURCES else "manual",
            created_at=created,
            created_by=str(doc.get("created_by", "unknown")),
            updated_at=aware_datetime(doc.get("updated_at")) or created,
            expires_at=aware_datetime(doc.get("expires_at")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "cidr": self.cidr,
            "reason": self.reason,
            "source": self.source,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "updated_at": self.updated_at.isoformat(),
            "expires_at": None if self.expires_at is None else self.expires_at.isoformat(),
        }


def aware_datetime(value: object) -> datetime | None:
    """A stored date as an aware datetime: BSON dates, ISO text and extended JSON
    (`{"$date": ...}`, as the embedded store's change events carry them); else None."""
    if isinstance(value, dict) and "$date" in value:  # see expiry_timestamp
        value = value["$date"]
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def expiry_timestamp(value: object) -> float:
    """A document's `expires_at` as a POSIX timestamp; `inf` when it never expires.

    Change events from the embedded store carry dates as ISO strings or extended-JSON
    `{"$date": ...}` (real MongoDB sends BSON dates); all mean the same moment in UTC.
    """
    if isinstance(value, str | dict) and aware_datetime(value) is None:
        return float("inf")
    moment = aware_datetime(value)
    return float("inf") if moment is None else moment.timestamp()
