"""Parsing and normalizing entries: strict, with messages that say what is wrong."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from blocklist import Entry, InvalidEntry, normalize, parse_address
from blocklist.entries import MAX_REASON_LENGTH, covering_networks


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("203.0.113.7", "203.0.113.7/32"),
        (" 203.0.113.0/24 ", "203.0.113.0/24"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("2001:DB8::/48", "2001:db8::/48"),
        ("2001:db8:0:0::1", "2001:db8::1/128"),
        ("::ffff:203.0.113.7", "203.0.113.7/32"),
        ("::ffff:203.0.113.0/120", "203.0.113.0/24"),
        ("::/0", "::/0"),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("203.0.113.7/24", "host bits set; the network is 203.0.113.0/24"),
        ("2001:db8::1/48", "host bits set; the network is 2001:db8::/48"),
        ("203.0.113.0/33", "between 0 and 32"),
        ("2001:db8::/129", "between 0 and 128"),
        ("203.0.113.0/x", "must be a number"),
        ("203.0.113.0/-1", "must be a number"),
        ("example.com", "not an IPv4 or IPv6 address"),
        ("203.0.113", "not an IPv4 or IPv6 address"),
        ("1.2.3.256", "not an IPv4 or IPv6 address"),
        ("::ffff:1.2.3.0/64", "between /96 and /128"),
        ("", "required"),
    ],
)
def test_invalid_entries_say_why(text: str, message: str) -> None:
    with pytest.raises(InvalidEntry, match=message.replace("/", "/").replace(".", r"\.")):
        normalize(text)


def test_address_parsing_maps_v4_in_v6() -> None:
    assert parse_address("::ffff:10.0.0.1") == parse_address("10.0.0.1") == (4, 0x0A000001)
    assert parse_address("fe80::1%eth0") == (6, (0xFE80 << 112) | 1)


def test_covering_networks_most_specific_first() -> None:
    nets = covering_networks("203.0.113.7")
    assert nets[0] == "203.0.113.7/32" and nets[8] == "203.0.113.0/24" and nets[-1] == "0.0.0.0/0"
    assert len(nets) == 33 and len(covering_networks("2001:db8::1")) == 129


def test_entry_limits_and_expiry() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    entry = Entry.new("198.51.100.0/24", reason="spam run", ttl_seconds=3600, now=now, actor="op")
    assert entry.expires_at == now + timedelta(hours=1)
    assert not entry.expired(now) and entry.expired(now + timedelta(hours=1))
    assert Entry.from_document(entry.to_document()) == entry
    with pytest.raises(InvalidEntry, match="at most"):
        Entry.new("198.51.100.1", reason="x" * (MAX_REASON_LENGTH + 1))
    with pytest.raises(InvalidEntry, match="ttl_seconds"):
        Entry.new("198.51.100.1", ttl_seconds=0)
    with pytest.raises(InvalidEntry, match="control characters"):
        Entry.new("198.51.100.1", reason="a\nb")
