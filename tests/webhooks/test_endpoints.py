"""What an endpoint matches: an address exactly, a domain's every address, or everything."""

from __future__ import annotations

from webhooks.endpoints import Endpoint


def endpoint(match: str) -> Endpoint:
    return Endpoint.read(
        {"_id": "wh_1", "url": "https://h.example/", "match": match, "secret": "s"}
    )


def test_an_address_matches_only_itself() -> None:
    assert endpoint("a@mx.test").matches("a@mx.test")
    assert not endpoint("a@mx.test").matches("b@mx.test")
    assert not endpoint("a@mx.test").matches("a@mx.test.example")


def test_a_domain_matches_its_addresses_and_no_lookalike() -> None:
    assert endpoint("mx.test").matches("anyone@mx.test")
    assert not endpoint("mx.test").matches("anyone@evilmx.test")
    assert not endpoint("mx.test").matches("anyone@sub.mx.test")


def test_no_match_is_every_message_and_endpoints_start_enabled() -> None:
    assert endpoint("").matches("x@other.test")
    assert not endpoint("").disabled
