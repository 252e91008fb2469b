"""Postfix's dnsbl_sites syntax, reply filters and RFC 5782 query names."""

from __future__ import annotations

import pytest

from receiver.door.dnsbl import (
    blocked_query,
    domains,
    parse_replies,
    parse_sites,
    query_name,
    shown_name,
    usable,
)


def test_a_postscreen_line_parses_with_weights_and_filters() -> None:
    sites = parse_sites("zen.example*3, b.example*2, wl.example=127.0.[0..255].[1..3]*-2")
    assert [(s.domain, s.weight) for s in sites] == [
        ("zen.example", 3),
        ("b.example", 2),
        ("wl.example", -2),
    ]
    assert sites[0].pattern is None and sites[2].pattern is not None


def test_white_space_separates_sites_as_commas_do_and_weight_defaults_to_one() -> None:
    sites = parse_sites("  Zen.Example.\n\tb.example=127.0.0.2  ")
    assert [(s.domain, s.weight) for s in sites] == [("zen.example", 1), ("b.example", 1)]


def test_a_filter_matches_numbers_ranges_and_lists() -> None:
    [site] = parse_sites("l.example=127.0.[1..2;4].[1;3..5]")
    assert site.matches("127.0.1.1") and site.matches("127.0.4.5") and site.matches("127.0.2.3")
    assert not site.matches("127.0.3.1") and not site.matches("127.0.1.2")
    assert not site.matches("127.1.1.1")


def test_without_a_filter_any_loopback_answer_lists() -> None:
    [site] = parse_sites("l.example")
    assert site.matches("127.0.0.2") and site.matches("127.0.0.11")


@pytest.mark.parametrize(
    "text",
    [
        "nodot",
        "l.example=127.0.0",
        "l.example=127.0.0.256",
        "l.example=127.0.0.[5..2]",
        "l.example*x",
        "l.example=127.0.0.[1",
        "-bad.example",
        "l.example=127.0.0.2*3*4",
    ],
)
def test_invalid_sites_are_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match=r"l\.example|nodot|bad\.example"):
        parse_sites(text)


def test_sites_naming_one_domain_share_one_query() -> None:
    sites = parse_sites("a.example=127.0.0.2*3, a.example=127.0.0.3*1, b.example")
    assert domains(sites) == ("a.example", "b.example")


def test_ipv4_query_name_reverses_the_octets() -> None:
    assert query_name("192.0.2.99", "zen.example") == "99.2.0.192.zen.example"
    assert query_name("::ffff:192.0.2.99", "zen.example") == "99.2.0.192.zen.example"


def test_ipv6_query_name_is_32_reversed_nibbles() -> None:
    # RFC 5782 2.4's own example.
    name = query_name("2001:db8:1:2:3:4:567:89ab", "ugly.example.com")
    nibbles = "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2"
    assert name == nibbles + ".ugly.example.com"
    assert query_name("not an address", "zen.example") is None


def test_only_loopback_answers_count_and_127_255_255_is_a_refusal() -> None:
    assert usable("127.0.0.2") and not usable("10.0.0.1")
    assert blocked_query("127.255.255.254") and not blocked_query("127.0.0.2")


def test_the_reply_map_names_lists_and_refuses_unknown_ones() -> None:
    sites = parse_sites("secret-key.zen.example")
    shown = parse_replies("secret-key.zen.example=zen.example", sites)
    assert shown_name("secret-key.zen.example", shown) == "zen.example"
    assert shown_name("other.example", shown) == "other.example"
    with pytest.raises(ValueError, match="not in FLOODGATE_DNSBL_SITES"):
        parse_replies("other.example=x", sites)
    with pytest.raises(ValueError, match="list=name"):
        parse_replies("secret-key.zen.example=bad name\r\n", sites)
