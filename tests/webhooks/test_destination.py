"""Where a webhook may go: URL form, and no private, loopback or link-local address unless
allowed; the connection goes to the address that was checked."""

from __future__ import annotations

import ipaddress

import pytest

from webhooks import destination
from webhooks.destination import Refused, check_registration, forbidden, parse, resolve


def test_a_url_is_taken_apart_with_its_default_port() -> None:
    target = parse("https://hooks.example.com/in?x=1")
    assert (target.scheme, target.host, target.port, target.path) == (
        "https",
        "hooks.example.com",
        443,
        "/in?x=1",
    )
    assert target.host_header == "hooks.example.com"
    assert parse("http://h.example:8080").host_header == "h.example:8080"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://h.example/", "http:// or https://"),
        ("https://user:pw@h.example/", "user name"),
        ("https://h.example/#top", "fragment"),
        ("https:///path", "names a host"),
        ("https://h.example/a b", "spaces"),
        ("https://h.example:99999/", "not a URL"),
        ("https://h.example/" + "a" * destination.MAX_URL, "at most"),
    ],
)
def test_a_bad_url_is_refused_saying_why(url: str, words: str) -> None:
    with pytest.raises(Refused, match=words):
        parse(url)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "172.16.5.5",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "fc00::1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_inside_addresses_are_forbidden(address: str) -> None:
    assert forbidden(ipaddress.ip_address(address)) is not None


def test_public_addresses_are_not() -> None:
    assert forbidden(ipaddress.ip_address("93.184.215.14")) is None
    assert forbidden(ipaddress.ip_address("2606:4700::1111")) is None


def test_registration_refuses_an_inside_literal_unless_allowed() -> None:
    with pytest.raises(Refused, match="link-local"):
        check_registration("http://169.254.169.254/latest/meta-data", allow_private=False)
    assert check_registration("http://127.0.0.1:9/", allow_private=True).port == 9
    # A name is judged at each attempt, by the address it resolves to then.
    assert check_registration("https://localhost/", allow_private=False).host == "localhost"


async def test_a_name_that_resolves_inside_is_refused_at_the_attempt() -> None:
    # localhost resolves from /etc/hosts: no packet leaves the host.
    target = parse("http://localhost:9/")
    with pytest.raises(Refused, match="loopback"):
        await resolve(target, 1.0, allow_private=False)
    assert all(a.is_loopback for a in await resolve(target, 1.0, allow_private=True))


def test_the_connection_goes_to_the_checked_address_with_the_name_as_host() -> None:
    target = parse("https://hooks.example.com:8443/in")
    pinned = target.pinned_url(ipaddress.ip_address("2001:db8::5"))
    assert pinned == "https://[2001:db8::5]:8443/in"
    assert target.host_header == "hooks.example.com:8443"
